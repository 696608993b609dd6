"""The example workflows in the real ComfyUI frontend (headless Chromium), on every frontend and render mode.

``web_examples_check.mjs`` opens one page per combination (see ``dicetalk_harness.COMBINATIONS``: the
harness's own frontend, and the pinned newer one with "Nodes 2.0" off and on; one server per frontend)
and, for each file in ``example_workflows/``:

* loads it from the pack's template route (as the template browser does): no missing node type, no
  error in the page, and the frontend's ``graphToPrompt`` gives the API twin the server tests run,
  with every required input of every node connected or set;
* measures every node's box as drawn (a DOM element in Nodes 2.0, the canvas rectangle and badge row
  otherwise): no two overlap; every DICE-Talk node shows its family's title colour and badge;
* queues it with tiny sampler settings the way the Run button does: it runs to ``execution_success``,
  SaveVideo writes the talking video, and the page receives one live preview per sampler window.

Screenshots (each example loaded and run, per combination) go to ``DICETALK_SCREENSHOTS`` if set, else to
the session's temporary folder; the log says where. Needs ``node``, Debian ``chromium`` and ``DEST/ui``
with playwright-core (``setup_comfyui.sh DEST --with-ui``); skips without them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from dicetalk_harness import (
    COMBINATIONS,
    EXAMPLE_NAMES,
    FRONTEND_ONLY_INPUTS,
    GENERATED_FRAMES,
    REPO,
    TINY_SETTINGS,
    api_workflow,
    nodes_of,
    server_inputs,
    ui_workflow,
    widget_slots,
)

from dicetalk_core.video_io import read_video_info

logger = logging.getLogger(__name__)

CHECK = Path(__file__).resolve().parent / "web_examples_check.mjs"
CHECK_TIMEOUT = 1500  # a hang guard for one combination (every example loaded and run), not a performance limit
COLOUR_TOLERANCE = 3  # per channel: the canvas draws the title colour through its own colour conversion


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda c: c.id)
def examples(request, browser, frontend_servers, shots) -> dict:
    """One run of web_examples_check.mjs over every example in one combination: its report, per example."""
    combination = request.param
    server = frontend_servers[combination.frontend]
    out = shots / combination.id / "examples"
    # one step: these runs check what the frontend queues and shows; the server tests run the twins with two
    widgets = {"DICESampler": {**TINY_SETTINGS, "steps": 1, "seed": combination.seed}}
    command = [browser["node"], str(CHECK), "--url", server.url, "--out", str(out), "--pack", REPO.name]
    command += ["--chromium", browser["chromium"], "--widgets", json.dumps(widgets)]
    command += [arg for name in EXAMPLE_NAMES for arg in ("--example", name)] + combination.check_args()
    start = time.monotonic()
    env = dict(os.environ, UI_CHECK_NODE_MODULES=str(browser["modules"]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    logger.info("%s: web_examples_check %.1f s, screenshots in %s", combination.id, time.monotonic() - start, out)
    assert done.returncode == 0 and report.get("ok"), (
        "\n".join(report.get("problems", [])) + f"\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    )
    return {"report": report, "combination": combination, "server": server}


def entry(examples: dict, name: str) -> dict:
    found = examples["report"]["examples"][name]
    assert found["dom_nodes"] == examples["combination"].nodes_2, "the page did not render in the requested mode"
    return found


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_loads_from_the_template_route_as_its_api_twin(examples, name):
    found = entry(examples, name)
    assert name in examples["report"]["templates"][REPO.name]
    assert found["missing_node_types"] == []
    info = examples["server"].object_info()
    prompt, left_out = server_inputs(found["prompt"], info)
    assert left_out <= FRONTEND_ONLY_INPUTS, f"inputs no node declares: {left_out - FRONTEND_ONLY_INPUTS}"
    assert prompt == api_workflow(name), (
        f"the frontend's graphToPrompt of example_workflows/{name}.json differs from tests/comfy/workflows/"
        f"{name}_api.json: update the twin from the report's prompt (or fix the UI file):\n{json.dumps(prompt)}"
    )
    for node_id, node in prompt.items():
        unset = set(info[node["class_type"]]["input"].get("required", {})) - set(node["inputs"])
        assert not unset, f"node {node_id} ({node['class_type']}): required inputs not wired or set: {unset}"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_runs_when_queued_from_the_frontend(examples, name):
    workflow = ui_workflow(name)
    (sampler,) = [node for node in workflow["nodes"] if node["type"] == "DICESampler"]
    slots = widget_slots(sampler)
    official = api_workflow(name)[nodes_of(api_workflow(name), "DICESampler")[0]]["inputs"]
    assert {key: sampler["widgets_values"][slots[key]] for key in TINY_SETTINGS} == {
        key: official[key] for key in TINY_SETTINGS
    }
    found = entry(examples, name)
    assert found["status"] == "execution_success", found.get("error")
    outputs = found["history"]["outputs"]
    items = [item for output in outputs.values() for items in output.values() for item in items]
    videos = [i for i in items if isinstance(i, dict) and str(i.get("filename", "")).endswith(".mp4")]
    assert len(videos) == 1, outputs
    video = Path(examples["server"].output_dir) / videos[0]["subfolder"] / videos[0]["filename"]
    assert read_video_info(video).n_frames == 2 * GENERATED_FRAMES - 1
    texts = [i for i in items if isinstance(i, str)]
    if name == "emotion_timeline":
        assert "neutral, then happy at 1s, then very happy and a bit surprised at 2s [changes over time]" in texts
    if name == "emotion_from_face":
        assert any(text.startswith("face (tiny_vit): 1 frames") for text in texts), texts
    if name == "emotion_mix_save":
        (saved,) = [text for text in texts if text.endswith("happy_surprise.safetensors")]
        assert Path(saved).is_file()


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_no_node_overlaps_another(examples, name):
    found = entry(examples, name)
    assert len(found["boxes"]) == len(ui_workflow(name)["nodes"])
    assert found["overlaps"] == [], f"overlapping nodes in {name} (boxes in graph units): {found['overlaps']}"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_pack_node_shows_its_family_colour_and_badge(examples, name):
    looks = entry(examples, name)["looks"]
    assert looks and {look["type"] for look in looks} == {
        node["type"] for node in ui_workflow(name)["nodes"] if node["type"].startswith("DICE")
    }
    for look in looks:
        assert look["expected_title"] is not None, f"{look['type']} has no colour of its own"
        drawn = zip(look["title"], look["expected_title"], strict=True)
        assert all(abs(a - b) <= COLOUR_TOLERANCE for a, b in drawn), (
            f"{look['type']}: title drawn in {look['title']}, its colour is {look['expected_title']}"
        )
        family = [badge for badge in look["badges"] if badge.startswith("DICE ")]
        assert len(family) == 1 and family[0] in look["shown_badges"], look
    by_family: dict[str, set] = {}  # family badge -> title colours of its nodes
    for look in looks:
        family = next(b for b in look["badges"] if b.startswith("DICE "))
        by_family.setdefault(family, set()).add(tuple(look["expected_title"]))
    assert all(len(colours) == 1 for colours in by_family.values()), by_family
    if len(by_family) > 1:
        assert len({next(iter(colours)) for colours in by_family.values()}) == len(by_family), by_family


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_one_live_preview_per_sampler_window(examples, name):
    found = entry(examples, name)
    assert found["sampler_progress"] > 0 and found["previews"] == found["sampler_progress"]
