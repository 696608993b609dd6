"""The pack inside a real ComfyUI server: registration, both example workflows, cancel, missing weights.

Runs the API twins of ``example_workflows/`` (``tests/comfy/workflows/*_api.json``; the browser test
checks they are what the frontend makes of the UI files) with tiny random weights and tiny sampler
settings, and reads the mp4 files back. Skips without ``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from dicetalk_harness import (
    DICE_NODES,
    EXAMPLE_NAMES,
    GENERATED_FRAMES,
    REPO,
    WIDE_SIZE,
    api_workflow,
    nodes_of,
    tiny,
    video_size,
)
from PIL import Image

from dicetalk_core.video_io import read_video_info

logger = logging.getLogger(__name__)

RUN_TIMEOUT = 600.0
AAC_FRAME = 1024


def mp4_of(result) -> Path:
    files = [Path(f) for f in result.output_files if f.endswith(".mp4")]
    assert len(files) == 1, f"expected one mp4 from SaveVideo, got {result.output_files}"
    assert files[0].is_file(), f"{files[0]} reported but not written"
    return files[0]


def run_ok(server, prompt: dict):
    result = server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    assert result.status == "success", f"{result.status}: {result.error}"
    return result


def check_talking_video(path: Path) -> None:
    """2N-1 frames at 25 fps for N generated frames, with the speech trimmed to the video."""
    info = read_video_info(path)
    assert info.n_frames == 2 * GENERATED_FRAMES - 1
    assert info.fps == pytest.approx(25.0)
    assert info.channels > 0 and info.audio_rate, "the video has no sound"
    video_seconds = info.n_frames / 25.0
    assert info.duration == pytest.approx(video_seconds, abs=1e-6)
    assert info.audio_duration == pytest.approx(video_seconds, abs=AAC_FRAME / info.audio_rate + 1e-6)


def test_pack_registers_its_nodes_without_import_errors_each_input_with_a_tooltip(comfy_server):
    info = comfy_server.assert_nodes(DICE_NODES)  # raises on a pack import error or a missing node
    pack_errors, _ = comfy_server.import_errors()
    assert pack_errors == []
    module = f"custom_nodes.{REPO.name}"
    ours = {name: node for name, node in info.items() if node["python_module"] == module}
    assert set(DICE_NODES) <= set(ours)
    for name, node in ours.items():
        assert node["display_name"].startswith("DICE-Talk"), node["display_name"]
        assert node["category"].startswith("DICE-Talk"), node["category"]
        inputs = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        untold = [key for key, spec in inputs.items() if len(spec) < 2 or not spec[1].get("tooltip")]
        assert not untold, f"{name}: inputs without a tooltip: {untold}"


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_workflow_makes_a_talking_video(comfy_server, name):
    result = run_ok(comfy_server, tiny(api_workflow(name)))
    logger.info("%s: prompt ran in %.1f s", name, result.seconds)
    path = mp4_of(result)
    check_talking_video(path)
    if name == "crop_paste_back":
        assert video_size(path) == WIDE_SIZE  # the generated face crop went back into the wide photo
    else:
        assert video_size(path) == (64, 64)  # the square portrait at the tiny resolution


def test_cancel_stops_sampling_within_one_step_and_the_next_run_succeeds(comfy_server):
    prompt = tiny(api_workflow("basic"), steps=100, seed=1)
    (sampler,) = nodes_of(prompt, "DICESampler")
    before: list[int] = []  # sampler progress values received before the interrupt was accepted
    after: list[int] = []  # ... and after
    steps_total: list[int] = []

    def on_event(kind: str, data: dict) -> None:
        if kind != "progress" or data.get("node") != sampler:
            return
        interrupted = bool(steps_total)
        (after if interrupted else before).append(data["value"])
        if not interrupted and data["value"] == 2:
            status, _ = comfy_server.post_json("/interrupt", {"prompt_id": data["prompt_id"]})
            assert status == 200
            steps_total.append(data["max"])

    result = comfy_server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=on_event)
    assert result.status == "interrupted", f"{result.status}: {result.error}"
    assert result.error["node_id"] == sampler
    assert before == [1, 2]
    assert len(after) <= 1, f"sampling went on for {len(after)} more steps after the interrupt"
    assert max(before + after) < steps_total[0]  # stopped mid-sampling
    assert not [f for f in result.output_files if f.endswith(".mp4")]

    again = run_ok(comfy_server, tiny(api_workflow("basic"), seed=2))
    assert any(kind == "progress" and data["node"] == sampler for _, kind, data in again.events), "sampler not rerun"
    check_talking_video(mp4_of(again))


def test_missing_unet_is_reported_with_the_file_and_its_folder(comfy_server, models_root):
    folder = models_root / "dice_talk"
    unet = folder / "unet.pth"
    hidden = unet.with_name("unet.pth.hidden")
    # precision differs from the other tests' runs so ComfyUI cannot reuse a cached loader output
    prompt = tiny(api_workflow("basic"))
    (loader,) = nodes_of(prompt, "DICEModelLoader")
    prompt[loader]["inputs"]["precision"] = "fp32"
    unet.rename(hidden)
    try:
        result = comfy_server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    finally:
        hidden.rename(unet)
    assert result.status == "error"
    error = result.error
    assert error["node_type"] == "DICEModelLoader"
    assert error["exception_type"].endswith("CheckpointError")
    assert "unet.pth" in error["exception_message"]
    assert str(folder.resolve()) in error["exception_message"]


def sampled_frames(server, prompt: dict, prefix: str) -> np.ndarray:
    """Run ``prompt`` with the sampler's frames saved as lossless PNGs instead of the video; ``(N, H, W, 3)`` uint8."""
    (sampler,) = nodes_of(prompt, "DICESampler")
    for node_id in (
        nodes_of(prompt, "DICEFrameInterpolation") + nodes_of(prompt, "CreateVideo") + nodes_of(prompt, "SaveVideo")
    ):
        del prompt[node_id]
    prompt["frames_out"] = {"class_type": "SaveImage", "inputs": {"images": [sampler, 0], "filename_prefix": prefix}}
    result = run_ok(server, prompt)
    files = sorted(f for f in result.output_files if f.endswith(".png"))
    assert len(files) == GENERATED_FRAMES, result.output_files
    return np.stack([np.asarray(Image.open(f)) for f in files])


def with_fast_mode(prompt: dict, **options) -> dict:
    """``prompt`` with a DICE-Talk Fast Mode node (all off unless ``options``) wired into the sampler."""
    (sampler,) = nodes_of(prompt, "DICESampler")
    defaults = {"guidance_reuse": 1, "guidance_until": 1.0, "autocast": "off", "compile": False}
    prompt["fast"] = {"class_type": "DICEFastMode", "inputs": {**defaults, **options}}
    prompt[sampler]["inputs"]["fast_mode"] = ["fast", 0]
    return prompt


def test_fast_mode_node_all_off_is_exact_and_guidance_reuse_changes_the_frames(comfy_server):
    prompt = tiny(api_workflow("basic"), steps=4, seed=11)
    exact = sampled_frames(comfy_server, prompt, "exact")
    all_off = sampled_frames(comfy_server, with_fast_mode(tiny(api_workflow("basic"), steps=4, seed=11)), "off")
    reuse = sampled_frames(
        comfy_server, with_fast_mode(tiny(api_workflow("basic"), steps=4, seed=11), guidance_reuse=2), "reuse"
    )
    np.testing.assert_array_equal(all_off, exact)
    deviation = np.abs(reuse.astype(np.int16) - exact.astype(np.int16))
    assert deviation.max() > 0, "guidance_reuse=2 did not reach the sampler"
    logger.info("guidance_reuse=2 vs exact: mean abs %.3f / 255", deviation.mean())
