"""``--check --deep``: every file loaded and compared with the expected layout, a smoke run, a memory plan.

Folders are tiny official-layout folders (``random_models.write_models_folder``), checked against the
``tiny`` layout (the default, ``official``, is what users' files are checked against).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from dicetalk_core.__main__ import main
from dicetalk_core.deep_check import (
    call_cost_ratio,
    expected_module,
    parameter_count,
    plan_memory,
    run_deep_check,
    unet_calls,
)
from dicetalk_core.models.layouts import OFFICIAL, TINY
from dicetalk_core.precision import Precision

CPU = Precision.resolve("fp32", "cpu")
MANIFESTS = Path(os.environ.get("DICETALK_SPEC_DIR", Path(__file__).resolve().parents[2] / "shared" / "spec")) / (
    "manifests"
)
GB = 2**30


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    from dicetalk_core.random_models import write_models_folder

    return write_models_folder(tmp_path_factory.mktemp("deep") / "dice_talk")


@pytest.fixture
def copy_of(good, tmp_path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "dice_talk", symlinks=True))


def deep(folder: Path) -> tuple[int, str]:
    lines: list[str] = []
    code = run_deep_check(folder, precision=CPU, layout=TINY, report=lines.append)
    return code, "\n".join(lines)


def test_a_good_folder_passes_with_a_smoke_run_and_a_memory_plan(good):
    code, out = deep(good)
    assert code == 0, out
    assert "all files fit the tiny layout" in out
    for name in ("unet.pth", "pose_guider.pth", "audio_linear.pth", "emo_model.safetensors", "RIFE/flownet.pkl"):
        assert f"ok    {good / name}" in out
    assert f"{parameter_count(expected_module('unet', TINY)):,} parameters" in out
    assert "smoke run: 2 frames, 1 step, 256 px" in out and "finite" in out
    assert "device: cpu" in out and "precision: fp32 (UNet, VAE, CLIP, pose guider)" in out
    assert "s of sampling per second of video" in out
    assert "512x512:" in out and "-> fits with every model loaded" in out


def test_a_truncated_file_gets_the_loaders_message(copy_of):
    unet = copy_of / "unet.pth"
    unet.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    code, out = deep(copy_of)
    assert code == 1
    assert f"FAIL  {unet}" in out
    assert "could not be read as a PyTorch weight file" in out and "truncated" in out
    assert "smoke run" not in out  # nothing runs on a broken folder
    assert "1 problem(s) above" in out


def test_a_file_of_another_model_is_named_with_what_it_looks_like(copy_of):
    shutil.copy(copy_of / "audio_linear.pth", copy_of / "pose_guider.pth")
    code, out = deep(copy_of)
    assert code == 1
    assert f"FAIL  {copy_of / 'pose_guider.pth'}" in out
    assert "is not the DICE-Talk pose guider" in out and "looks like an audio projection" in out
    assert f"ok    {copy_of / 'unet.pth'}" in out  # the other files are still checked


def test_files_of_another_size_do_not_fit_the_official_layout(good, capsys):
    assert main(["--models", str(good), "--check", "--deep", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "all required files found" in out  # the plain check runs first
    assert "does not fit the DICE-Talk UNet of the official layout" in out
    assert "conv_in.weight: file (32, 8, 3, 3) vs model (320, 8, 3, 3)" in out
    assert "does not fit the SVD-xt CLIP image encoder of the official layout" in out
    assert f"ok    {good / 'RIFE' / 'flownet.pkl'}" in out  # RIFE has one size


def test_deep_needs_check(good, capsys):
    assert main(["--models", str(good), "--deep"]) == 2
    assert "--deep goes with --check" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "manifest"),
    [
        ("unet", "unet.pth"),
        ("audio_projection", "audio_linear.pth"),
        ("emotion_model", "emo_model.pth"),
        ("pose_guider", "pose_guider.pth"),
    ],
)
def test_the_meta_built_official_modules_match_the_release_manifests(name, manifest):
    path = MANIFESTS / f"{manifest}.json"
    if not path.is_file():
        pytest.skip(f"no manifest at {path} (set DICETALK_SPEC_DIR to the spec folder)")
    wanted = json.loads(path.read_text())
    module = expected_module(name, OFFICIAL)
    assert all(t.is_meta for t in module.parameters())
    shapes = {key: list(tensor.shape) for key, tensor in module.state_dict().items()}
    assert shapes == {key: entry["shape"] for key, entry in wanted["keys"].items()}
    assert parameter_count(module) == wanted["total_parameters"]


def test_plan_memory_picks_one_pass_stage_by_stage_or_nothing():
    weights = {"unet": 3 * GB, "vae": GB // 4, "image_encoder": GB, "whisper": GB // 8, "rife": GB // 16}
    working = {"sampling": 4 * GB, "decode": 4 * GB}
    stages = {"audio": ("whisper",), "sampling": ("unet",), "decode": ("vae",), "interpolation": ("rife",)}
    one_pass = sum(weights.values()) + 4 * GB
    assert plan_memory(weights, working, 24 * GB, stages).verdict == "one pass"
    roomy = plan_memory(weights, working, int(one_pass / 0.9) + 1, stages)
    assert (roomy.verdict, roomy.one_pass, roomy.by_stage) == ("one pass", one_pass, 7 * GB)
    assert plan_memory(weights, working, int(one_pass / 0.9) - GB, stages).verdict == "stage by stage"
    assert plan_memory(weights, working, 9 * GB, stages).verdict == "stage by stage"  # 8.1 GB usable
    assert plan_memory(weights, working, 7 * GB, stages).verdict == "does not fit"  # 7 GB x 0.9 < the UNet stage


def test_call_costs_and_counts():
    assert call_cost_ratio(256, 6, 256, 6) == pytest.approx(1.0)
    ratio = call_cost_ratio(256, 6, 512, 75)
    assert 50 < ratio < 200  # 50 x the frames x pixels; the quadratic attention adds a little
    assert unet_calls(10.0) == 150  # 125 frames + 25 padding = 6 windows x 25 steps
    assert unet_calls(60.0, steps=1) == 31


def test_deep_check_imports_torch_only_when_asked(good):
    import subprocess
    import sys

    code = (
        "import sys; from dicetalk_core.__main__ import main; "
        f"main(['--models', {str(good)!r}, '--check']); "
        "assert 'dicetalk_core.deep_check' not in sys.modules and 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr


def test_expected_modules_hold_no_memory():
    module = expected_module("image_encoder", OFFICIAL)
    assert all(t.device == torch.device("meta") for t in module.state_dict().values())
    assert parameter_count(module) > 600_000_000  # ViT-H/14
