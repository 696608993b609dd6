"""The pack's frontend extension (``web/``): the emotion timeline editor, node colours and the sampler's ETA.

* The pack's ``GET /dicetalk/vocabulary`` route serves the emotion grammar's tables and the engine's
  frame numbers as Python has them; the browser keeps no copy of them.
* ``web/keyframes.js`` (the value format, text -> JSON conversion, the mix at a time) runs under node
  with that vocabulary, against the Python side: converted text means the same keyframes, values are
  accepted or refused alike, and the mix at every frame equals ``Timeline.priors`` (read off one-hot presets).
* ``tests/comfy/web_timeline_check.mjs`` drives the real ComfyUI page in headless Chromium, in every
  frontend and render mode (``dicetalk_harness.COMBINATIONS``): it adds a timeline node from the node
  search, and with real mouse events converts its text, adds two keyframes, drags them, sets an emotion
  and an intensity; saves and reloads the workflow and queues it. The value must round-trip exactly, the
  server must accept it and report the timeline Python makes of it, the bars must show Python's mix,
  and the sampler the time left while it runs.

Screenshots go to ``DICETALK_SCREENSHOTS`` or the session's temporary folder. Needs ``node``, the harness,
Chromium and playwright-core (see ``test_browser.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAVED_EMOTION
from dicetalk_harness import (
    COMBINATIONS,
    EXAMPLES,
    GENERATED_FRAMES,
    REPO,
    TINY_SETTINGS,
    ui_with_settings,
    unavailable,
)

from dicetalk_core import audio, rates
from dicetalk_core.emotion import (
    PresetLibrary,
    emotion_from_spec,
    keyframes_json,
    mixing,
    parse_emotion_spec,
    timeline,
)
from dicetalk_core.emotion import text as text_grammar
from dicetalk_core.emotion.spec import KeyframeSpec
from dicetalk_core.errors import InputError
from dicetalk_core.model_files import OFFICIAL_PRESETS
from dicetalk_core.rates import GENERATION_FPS

logger = logging.getLogger(__name__)

WEB = REPO / "web"
CHECK = Path(__file__).resolve().parent / "web_timeline_check.mjs"
SAVED = SAVED_EMOTION  # a saved emotion beside the presets: the editor must offer it
NAMES = (*OFFICIAL_PRESETS, SAVED)
CHECK_TIMEOUT = 600  # a hang guard, not a performance limit

TEXTS = (
    "slightly sad, then very happy at 2s",
    "neutral, then happy at 1s, then very happy and a bit surprised at 2s",
    "70% happy and 30% sad",
    "calm -> suddenly furious at 50% -> gradually sad at 30f",
    "happy:1.2 then a little bit scared over 1s by 2.5 seconds; quickly shocked at 3 s",
    "barely smiling and kind of annoyed, then wistful at 500ms",
    "looking very very glad, and then at frame 40 emotion_1",
    "content with 0.5 disgusted then smoothly expressionless at 99%",
)
BAD_TEXTS = ("slightly hangry, then happy", "happy then", "very at 2s", "sad at noon")

VALUES = (
    '[{"emotion": "neutral"}, {"at": "2s", "emotion": {"happy": 0.7, "sad": 0.3}, "intensity": 1.2}]',
    '[{"at": "0s", "emotion": "sad"}, {"at": "1s", "emotion": "happy", "ease": "linear"},'
    ' {"at": "40%", "emotion": {"surprised": 1}, "ease": "hold"},'
    ' {"at": "30f", "emotion": "very angry", "over": "0.3s"}]',
    '{"happy": 2, "surprised": 1, "neutral": 1}',
    '{"keyframes": [{"emotion": "fear"}, {"emotion": "disgusted"}, {"emotion": "wistful", "intensity": 0.5}]}',
    '{"emotion": "very happy and slightly sad", "intensity": 0.8}',
    '[{"at": 0.4, "emotion": {"extremely happy": 1, "contempt": 0.5}, "ease": "smooth", "over": "50%"},'
    ' {"at": "100%", "emotion": "neutral"}]',
    '[{"at": "2s", "emotion": "sad"}, {"at": "10%", "emotion": "happy"}, {"at": "3s", "emotion": "angry"}]',
)
BAD_VALUES = (
    '[{"at": "2s", "emotion": "happy", "mood": 1}]',
    '[{"emotion": "happy", "ease": "bouncy"}]',
    '[{"at": "2s", "emotion": "happy"}, {"at": "1s", "emotion": "sad"}]',
    "[]",
    '[{"emotion": "hapy"}]',
    '[{"emotion": {"happy": "a lot"}}]',
    '{"keyframes": [], "x": 1}',
    '[{"at": "150%", "emotion": "sad"}]',
    '[{"emotion": "sad", "intensity": null}]',
    "[{'emotion': 'sad'}]",
)


# ------------------------------------------------------------------------------------------ node


@pytest.fixture(scope="module")
def vocabulary(frontend_servers) -> dict:
    """What the pack's route answers, as the extension fetches it (``/api`` prefix)."""
    return frontend_servers["harness"].get_json("/api/dicetalk/vocabulary")


@pytest.fixture(scope="module")
def node_js(tmp_path_factory, vocabulary) -> Path:
    """A folder where ``keyframes.mjs`` is web/keyframes.js (node reads ``.js`` without a package.json as CommonJS)
    and ``vocabulary.json`` the route's answer."""
    if shutil.which("node") is None:
        unavailable("web extension tests skipped: node is not installed")
    folder = tmp_path_factory.mktemp("web_js")
    shutil.copy(WEB / "keyframes.js", folder / "keyframes.mjs")
    (folder / "vocabulary.json").write_text(json.dumps(vocabulary))
    return folder


def run_js(folder: Path, body: str, data: object) -> object:
    """Runs ``body`` (an async function body with ``k`` = keyframes.js, given the served vocabulary, and
    ``data``) under node; returns its result."""
    script = folder / "run.mjs"
    script.write_text(
        'import * as k from "./keyframes.mjs";\nimport fs from "node:fs";\n'
        'k.setVocabulary(JSON.parse(fs.readFileSync(new URL("./vocabulary.json", import.meta.url), "utf8")));\n'
        'const data = JSON.parse(fs.readFileSync(0, "utf8"));\n'
        f"const result = await (async () => {{\n{body}\n}})();\n"
        "process.stdout.write(JSON.stringify(result));\n"
    )
    done = subprocess.run(["node", str(script)], input=json.dumps(data), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def spec_tuple(spec: KeyframeSpec) -> tuple:
    terms = tuple((t.name, round(t.weight, 6), round(t.intensity, 6)) for t in spec.terms)
    return terms, spec.at, spec.ease, spec.over, round(spec.intensity, 6)


def one_hot_library(folder: Path) -> PresetLibrary:
    """Presets whose priors are unit vectors (neutral = axis 0), so a prior's coordinates are the mix."""
    folder.mkdir(parents=True, exist_ok=True)
    for axis, name in enumerate(("neutral", *[n for n in NAMES if n != "neutral"])):
        prior = np.zeros((1, 256), np.float32)
        prior[0, axis] = 1.0
        np.save(folder / f"{name}.npy", prior)
    return PresetLibrary([folder])


def python_mix(library: PresetLibrary, value: str, n_frames: int) -> list[dict[str, float]]:
    """The mix of every frame as Python makes it: each name's coordinate (neutral's: its share)."""
    priors = emotion_from_spec(value, library).priors(n_frames)
    axes = {name: int(torch.argmax(library.prior(name))) for name in library.names()}
    return [{name: float(p[axis]) for name, axis in axes.items()} for p in priors]


def test_text_converts_to_keyframes_that_mean_the_same(node_js):
    results = run_js(
        node_js,
        "return data.texts.map((t) => { try { return { ok: k.textToKeyframes(t, data.names) }; }"
        " catch (e) { return { error: e.message }; } });",
        {"texts": [*TEXTS, *BAD_TEXTS], "names": [SAVED]},
    )
    for text, result in zip(TEXTS, results[: len(TEXTS)], strict=True):
        assert "ok" in result, f"{text!r}: {result}"
        converted = json.dumps(result["ok"])
        expected, kind = parse_emotion_spec(text, [SAVED])
        assert kind == "text"
        got, kind = parse_emotion_spec(converted, [SAVED])
        assert kind == "json"
        assert [spec_tuple(s) for s in got] == [spec_tuple(s) for s in expected], f"{text!r} -> {converted}"
    for text, result in zip(BAD_TEXTS, results[len(TEXTS) :], strict=True):
        assert "error" in result, f"{text!r} converted to {result}"
        with pytest.raises(InputError):
            parse_emotion_spec(text, [SAVED])


def test_values_are_read_and_written_as_python_reads_them(node_js, tmp_path):
    library = one_hot_library(tmp_path / "emotions")
    results = run_js(
        node_js,
        "return data.values.map((v) => { const r = k.readValue(v, data.names);"
        " return r.kind === 'json' ? { ...r, written: k.formatKeyframes(r.keyframes) } : r; });",
        {"values": [*VALUES, *BAD_VALUES, "slightly sad, then happy"], "names": [SAVED]},
    )
    for value, result in zip(VALUES, results[: len(VALUES)], strict=True):
        assert result["kind"] == "json", f"{value}: {result}"
        expected, _ = parse_emotion_spec(value, [SAVED])
        written, _ = parse_emotion_spec(result["written"], [SAVED])  # what the editor writes after an edit
        assert [spec_tuple(s) for s in written] == [spec_tuple(s) for s in expected], result["written"]
        assert result["written"].count("\n") == len(expected) + 1  # one keyframe per line
    for value, result in zip(BAD_VALUES, results[len(VALUES) : -1], strict=True):
        assert result["kind"] == "invalid", f"{value} was read as {result}"
        with pytest.raises(InputError):
            emotion_from_spec(value, library).priors(GENERATED_FRAMES)
    assert results[-1] == {"kind": "text"}


def converted_texts(node_js: Path) -> list[str]:
    """The texts without connected inputs (``emotion_1``), converted to JSON by keyframes.js."""
    script = "return data.texts.map((t) => JSON.stringify(k.textToKeyframes(t, data.names)));"
    return run_js(node_js, script, {"texts": [t for t in TEXTS if "emotion_" not in t], "names": [SAVED]})


def test_the_vocabulary_route_serves_the_python_grammar_and_frame_numbers(vocabulary):
    assert {w: tuple(v) for w, v in vocabulary["emotion_words"].items()} == text_grammar.EMOTION_WORDS
    assert vocabulary["adverbs"] == text_grammar.ADVERBS

    def served(transition):
        ease, over = transition
        return ease, over and (over["value"], over["unit"])

    def python(transition):
        ease, over = transition
        return ease, over and (over.value, over.unit)

    assert {w: served(t) for w, t in vocabulary["transitions"].items()} == {
        w: python(t) for w, t in text_grammar.TRANSITIONS.items()
    }
    assert served(vocabulary["default_transition"]) == python(text_grammar.DEFAULT_TRANSITION)
    assert vocabulary["then_words"] == list(text_grammar.THEN_WORDS)
    assert vocabulary["and_words"] == list(text_grammar.AND_WORDS)
    assert vocabulary["time_words"] == list(text_grammar.TIME_WORDS)
    assert vocabulary["over_words"] == list(text_grammar.OVER_WORDS)
    assert set(vocabulary["fillers"]) == text_grammar.FILLERS
    assert vocabulary["ignored_punctuation"] == list(text_grammar.IGNORED_PUNCTUATION)
    assert vocabulary["slot_pattern"] == text_grammar.SLOT_PATTERN.pattern
    assert vocabulary["presets"] == list(OFFICIAL_PRESETS)
    assert vocabulary["easings"] == list(timeline.EASINGS)
    assert vocabulary["keyframe_keys"] == list(keyframes_json.KEYFRAME_KEYS)
    assert vocabulary["max_intensity"] == mixing.MAX_INTENSITY
    assert vocabulary["generation_fps"] == GENERATION_FPS
    assert vocabulary["sample_rate"] == rates.SAMPLE_RATE
    assert vocabulary["samples_per_audio_frame"] == rates.SAMPLES_PER_FRAME
    assert vocabulary["audio_frames_per_generated_frame"] == rates.FRAME_STEP
    assert vocabulary["max_audio_frames"] == rates.MAX_AUDIO_FRAMES


def test_the_web_extension_keeps_no_copy_of_the_vocabulary():
    """Words of the grammar (other than the preset names the editor colours) and the frame numbers appear in
    no web file: they come from the route."""
    words = {*text_grammar.EMOTION_WORDS, *text_grammar.ADVERBS, *text_grammar.TRANSITIONS} - set(OFFICIAL_PRESETS)
    numbers = {str(GENERATION_FPS), str(rates.SAMPLE_RATE), str(rates.SAMPLES_PER_FRAME)}
    for path in WEB.glob("*.js"):
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(), flags=re.S)  # comments may name them
        quoted = set(re.findall(r"[\"'`]([a-z][a-z ]*)[\"'`]", code))
        assert not quoted & words, f"{path.name} spells out words of the grammar: {sorted(quoted & words)}"
        found = {n for n in numbers if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", code)}
        assert not found, f"{path.name} holds the numbers {found}"


@pytest.mark.parametrize("n_frames", [GENERATED_FRAMES, 61])
def test_mix_at_every_frame_equals_the_python_timeline(node_js, tmp_path, n_frames):
    library = one_hot_library(tmp_path / "emotions")
    values = [*VALUES, *converted_texts(node_js)]
    got = run_js(
        node_js,
        "const span = k.spanOfFrames(data.frames);"
        "return data.values.map((v) => Array.from({ length: data.frames },"
        " (_, f) => k.mixAt(k.readValue(v, data.names).keyframes, f / k.GENERATION_FPS, span, data.names)));",
        {"values": values, "frames": n_frames, "names": [SAVED]},
    )
    for value, frames in zip(values, got, strict=True):
        expected = python_mix(library, value, n_frames)
        for f, (mine, theirs) in enumerate(zip(frames, expected, strict=True)):
            for name, coordinate in theirs.items():
                assert mine.get(name, 0.0) == pytest.approx(coordinate, abs=2e-6), (value, f, name, mine, theirs)


def test_frame_count_of_a_clip_matches_the_audio_front_end(node_js):
    lengths = [36_800, 0, 639, 1279, 1280, 16_000 * 399, 16_000 * 400 + 1, 16_000 * 500]
    got = run_js(node_js, "return data.map((n) => k.framesFromSamples(n));", lengths)
    assert got == [audio.audio_frame_count(n) // rates.FRAME_STEP for n in lengths]
    assert got[0] == GENERATED_FRAMES  # the harness speech (2.3 s)


# ------------------------------------------------------------------------------------------ browser


def timeline_workflow(seed: int) -> dict:
    """The emotion_timeline example with tiny sampler settings, one step, and ``seed``."""
    settings = {**TINY_SETTINGS, "steps": 1, "seed": seed}
    return ui_with_settings(json.loads((EXAMPLES / "emotion_timeline.json").read_text()), **settings)


def keyframes_of(value: str) -> list[dict]:
    data = json.loads(value)
    assert isinstance(data, list)
    return data


def seconds(mark: str) -> float:
    assert mark.endswith("s"), mark
    return float(mark[:-1])


def python_mix_at(library: PresetLibrary, value: str, t: float) -> dict[str, float]:
    """Python's mix at ``t`` seconds of the harness clip: frames every 0.01 s over the same span, so one is at ``t``."""
    scale = 100
    n_frames = round((GENERATED_FRAMES - 1) / GENERATION_FPS * scale) + 1
    keyframes = json.loads(value)
    for keyframe in keyframes:  # frame marks would mean other times at another frame rate
        for key in ("at", "over"):
            mark = keyframe.get(key)
            if isinstance(mark, str) and mark.endswith("f"):
                keyframe[key] = f"{int(mark[:-1]) / GENERATION_FPS}s"
    prior = emotion_from_spec(json.dumps(keyframes), library).priors(n_frames, fps=scale)[round(t * scale)]
    axes = {name: int(torch.argmax(library.prior(name))) for name in library.names()}
    return {name: float(prior[axis]) for name, axis in axes.items()}


@pytest.fixture(scope="module", params=COMBINATIONS, ids=lambda c: c.id)
def session(request, browser, frontend_servers, shots, tmp_path_factory) -> dict:
    """One run of web_timeline_check.mjs (see its header) in one combination: its report, plus the texts it
    started from."""
    combination = request.param
    server = frontend_servers[combination.frontend]
    start = time.monotonic()
    folder = tmp_path_factory.mktemp("web_timeline")
    workflow = folder / "timeline.json"
    workflow.write_text(json.dumps(timeline_workflow(combination.seed)))
    out = shots / combination.id / "timeline"
    command = [browser["node"], str(CHECK), "--url", server.url, "--workflow", str(workflow), "--out", str(out)]
    command += ["--chromium", browser["chromium"], *combination.check_args()]
    env = dict(os.environ, UI_CHECK_NODE_MODULES=str(browser["modules"]))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    logger.info("%s: web_timeline_check %.1f s, screenshots in %s", combination.id, time.monotonic() - start, out)
    assert done.returncode == 0 and report.get("ok"), (
        "\n".join(report.get("problems", [])) + f"\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    )
    assert report["dom_nodes"] == combination.nodes_2, "the page did not render in the requested mode"
    (example,) = [n for n in timeline_workflow(combination.seed)["nodes"] if n["type"] == "DICEEmotionTimeline"]
    default = server.object_info()["DICEEmotionTimeline"]["input"]["required"]["keyframes"][1]["default"]
    return {**report, "example_text": example["widgets_values"][0], "default_text": default, "combination": combination}


def test_the_pack_nodes_are_grouped_by_colour_and_badge(session):
    assert "dicetalk.emotion_timeline" in session["extensions"]
    looks = {node["type"]: node for node in session["node_looks"]}
    assert len({node["bgcolor"] for node in looks.values()}) == 1
    timeline, bank, sampler = looks["DICEEmotionTimeline"], looks["DICEEmotionBank"], looks["DICESampler"]
    assert timeline["expected_title"] == bank["expected_title"] != sampler["expected_title"]
    for look in looks.values():  # the colour is the one drawn behind the title
        assert all(abs(a - b) <= 3 for a, b in zip(look["title"], look["expected_title"], strict=True)), look
    assert "DICE emotion" in timeline["shown_badges"]
    assert "DICE audio" in looks["DICEAudioEncoder"]["shown_badges"]
    for shot in session["shots"]:
        assert Path(shot).stat().st_size > 10_000, shot


def test_loading_keeps_the_text_and_a_new_node_previews_it(session):
    # the example's text is untouched by loading, in the widget and in the prompt
    (loaded,) = [n for n in session["prompt_loaded"].values() if n["class_type"] == "DICEEmotionTimeline"]
    assert session["value_loaded"] == session["example_text"]
    assert loaded["inputs"] == {"keyframes": session["example_text"]}
    # a node added from the search box: the default text, room for the editor, the clip's length from the speech
    text = session["default_text"]
    assert session["fresh_node"]["value"] == text
    assert session["fresh_node"]["size"][0] >= 480 and session["fresh_node"]["size"][1] >= 460
    assert f"{GENERATED_FRAMES} frames" in session["clip_text"] and "dicetalk_speech.wav" in session["clip_text"]
    assert text in session["text_panel"] and "Convert to keyframes" in session["text_panel"]


def test_editing_with_the_mouse_writes_the_documented_json(session):
    text = session["default_text"]
    # "Convert to keyframes": the same meaning, the text kept on the node for "Back to text"
    converted, _ = parse_emotion_spec(session["value_converted"], NAMES)
    assert [spec_tuple(s) for s in converted] == [spec_tuple(s) for s in parse_emotion_spec(text, NAMES)[0]]
    assert session["properties_after_convert"]["dicetalk replaced value"] == text
    # double-clicks at 25% and 75% of the strip, then drags to 40% and 90%
    span = (GENERATED_FRAMES - 1) / GENERATION_FPS
    added = keyframes_of(session["value_added"])
    dragged = keyframes_of(session["value_dragged"])
    assert len(added) == len(converted) + 2 and len(session["markers_added"]) == len(added)
    new_added = sorted(seconds(k["at"]) for k in added if seconds(k["at"]) not in (0.0, 2.0))
    new_dragged = sorted(seconds(k["at"]) for k in dragged if seconds(k["at"]) not in (0.0, 2.0))
    assert new_added == pytest.approx([0.25 * span, 0.75 * span], abs=0.04)
    assert new_dragged == pytest.approx([0.4 * span, 0.9 * span], abs=0.04)
    # the keyframe at 40% set to surprised at intensity 1.3; nothing else changed
    edited = keyframes_of(session["value_edited"])
    index = min(range(len(edited)), key=lambda i: abs(seconds(edited[i]["at"]) - 0.4 * span))
    assert edited[index]["emotion"] == {"surprised": 1.0} and edited[index]["intensity"] == 1.3
    assert [k for i, k in enumerate(edited) if i != index] == [k for i, k in enumerate(dragged) if i != index]
    assert SAVED in session["emotion_options"] and set(OFFICIAL_PRESETS) <= set(session["emotion_options"])


def test_the_bars_show_the_python_mix_at_the_playhead(session, tmp_path):
    playhead = float(re.search(r"Mix at ([\d.]+)s", session["playhead_label"]).group(1))
    mix = python_mix_at(one_hot_library(tmp_path / "emotions"), session["value_edited"], playhead)
    assert mix["surprised"] > 1.0  # the playhead is on the edited keyframe
    for name, coordinate in mix.items():
        assert session["bars"].get(name, 0.0) == pytest.approx(max(coordinate, 0.0), abs=2e-3), (name, session["bars"])


def test_the_saved_workflow_reloads_exactly_and_the_server_runs_it(session, tmp_path):
    value = session["value_edited"]
    assert session["value_reloaded"] == value
    assert session["saved_widgets_values"] == [value]  # the editor adds nothing to the workflow
    assert len(session["markers_reloaded"]) == len(keyframes_of(value))
    # the text a conversion replaced stays on the node: back to it, and back to the keyframes
    assert session["restore_labels"] == ["Back to text", "Back to keyframes"]
    assert session["value_restored"] == session["default_text"]
    assert session["value_restored_back"] == value
    (timeline,) = [n for n in session["prompt"].values() if n["class_type"] == "DICEEmotionTimeline"]
    assert timeline["inputs"] == {"keyframes": value}
    assert session["status"] == "execution_success", session.get("error")
    summaries = [t for output in session["history"]["outputs"].values() for t in output.get("text", [])]
    expected = emotion_from_spec(value, one_hot_library(tmp_path / "emotions"))
    assert f"{expected.describe()} [changes over time]" in summaries


def test_the_sampler_badge_shows_the_time_left(session):
    sampler = [e for e in session["events"] if e["type"] == "progress" and e["badges"] is not None]
    assert sampler, "no progress event of DICE-Talk Sampler reached the page"
    etas = [e["badges"][-1] for e in sampler]
    pattern = r"\d+/\d+ · (~\d+( min \d\d)? s left|estimating|decoding)"
    assert all(re.fullmatch(pattern, eta) for eta in etas), etas
    assert any(eta.endswith("left") for eta in etas) and etas[-1].endswith("decoding")
    assert session["badges_after"][-1] == ""  # cleared when the run ends
    if session["combination"].nodes_2:  # drawn by the page itself: every text it showed while the sampler ran
        shown = session["shown_badges"]
        assert all(re.fullmatch(pattern, text) for text in shown), shown
        assert any(text.endswith("left") for text in shown) and shown[-1].endswith("decoding"), shown
    assert session["previews"] == len(sampler), "one live preview image per sampler window expected"
