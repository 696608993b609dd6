"""The example workflows in the real ComfyUI frontend (headless Chromium through ``ui_check.mjs``).

For each file in ``example_workflows/``:

* loaded from the pack's template route (``--template <pack folder>/<name>``, as the template browser
  does): no missing node type, no error in the page, and the frontend's ``graphToPrompt`` gives exactly
  the API twin the server tests run, with every required input of every node connected or set;
* loaded as a file with tiny sampler settings and queued the way the Run button does: it runs to
  ``execution_success`` and SaveVideo writes the talking video.

Screenshots (one per workflow and step) go to ``DICETALK_SCREENSHOTS`` if set, else to the test's
temporary folder; the log says where. Needs ``node``, Debian ``chromium`` and ``DEST/ui`` with
playwright-core (``setup_comfyui.sh DEST --with-ui``); skips without them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dicetalk_harness import (
    EXAMPLE_NAMES,
    GENERATED_FRAMES,
    REPO,
    TINY_SETTINGS,
    api_workflow,
    harness_tools,
    nodes_of,
    ui_with_settings,
    ui_workflow,
    unavailable,
    widget_slots,
)

from dicetalk_core.video_io import read_video_info

logger = logging.getLogger(__name__)

UI_TIMEOUT_SECONDS = 900  # a hang guard for one ui_check run, not a performance limit


@pytest.fixture(scope="module")
def browser(comfy_dest: Path) -> dict:
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    modules = comfy_dest / "ui" / "node_modules"
    if node is None or not Path(chromium).exists() or not (modules / "playwright-core").is_dir():
        unavailable(
            f"browser tests skipped: need node ({node}), chromium ({chromium}) and playwright-core in {modules} "
            f"(run setup_comfyui.sh {comfy_dest} --with-ui)"
        )
    return {"node": node, "chromium": chromium, "modules": modules, "script": harness_tools() / "ui_check.mjs"}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("DICETALK_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("browser screenshots in %s", folder)
    return folder


def ui_check(browser: dict, server, shot: Path, *args: str) -> dict:
    """Run ui_check.mjs against ``server``; returns its report (asserting it passed)."""
    report_path = shot.with_suffix(".json")
    command = [browser["node"], str(browser["script"]), "--url", server.url, "--screenshot", str(shot)]
    command += ["--json", str(report_path), "--chromium", browser["chromium"]]
    command += ["--timeout", str(UI_TIMEOUT_SECONDS * 1000), *args]
    env = dict(os.environ, NODE_PATH=str(browser["modules"]), UI_CHECK_NODE_MODULES=str(browser["modules"]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=UI_TIMEOUT_SECONDS + 120)
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    assert done.returncode == 0, (
        f"ui_check failed (exit {done.returncode}, screenshot {shot}):\n"
        + "\n".join(report.get("problems", []))
        + f"\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    )
    return report


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_loads_from_the_template_route_as_its_api_twin(browser, comfy_server, shots, tmp_path, name):
    converted = tmp_path / f"{name}_frontend_api.json"
    template = f"{REPO.name}/{name}"
    report = ui_check(
        browser, comfy_server, shots / f"{name}_loaded.png", "--template", template, "--save-api", str(converted)
    )
    assert name in report["templates"][REPO.name]
    assert report["missing_node_types"] == []
    prompt = json.loads(converted.read_text())
    for node in prompt.values():
        node.pop("_meta", None)
    assert prompt == api_workflow(name), (
        f"the frontend's graphToPrompt of example_workflows/{name}.json differs from tests/comfy/workflows/"
        f"{name}_api.json: update the twin from {converted} (or fix the UI file)"
    )
    info = comfy_server.object_info()
    for node_id, node in prompt.items():
        unset = set(info[node["class_type"]]["input"].get("required", {})) - set(node["inputs"])
        assert not unset, f"node {node_id} ({node['class_type']}): required inputs not wired or set: {unset}"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_runs_when_queued_from_the_frontend(browser, comfy_server, shots, tmp_path, name):
    workflow = ui_workflow(name)
    (sampler,) = [node for node in workflow["nodes"] if node["type"] == "DICESampler"]
    slots = widget_slots(sampler)
    official = api_workflow(name)[nodes_of(api_workflow(name), "DICESampler")[0]]["inputs"]
    assert {key: sampler["widgets_values"][slots[key]] for key in TINY_SETTINGS} == {
        key: official[key] for key in TINY_SETTINGS
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(ui_with_settings(workflow, **TINY_SETTINGS)))
    report = ui_check(browser, comfy_server, shots / f"{name}_run.png", "--workflow", str(path), "--queue")
    assert report["status"] == "execution_success"
    logger.info("%s: queued from the frontend, ran in %.1f s", name, report["timings_ms"]["execute"] / 1000)
    files = [
        item
        for output in report["outputs"].values()
        for items in output.values()
        for item in items
        if isinstance(item, dict) and str(item.get("filename", "")).endswith(".mp4")
    ]
    assert len(files) == 1, report["outputs"]
    video = Path(comfy_server.output_dir) / files[0]["subfolder"] / files[0]["filename"]
    assert read_video_info(video).n_frames == 2 * GENERATED_FRAMES - 1
