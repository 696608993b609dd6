"""``bench/gpu_check.py`` runs its every part end to end: on the CPU at the tiny layout (what CI can run),
so that the GPU run it is made for does not rot between GPU sessions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
STAGES = {"audio", "conditioning", "sampling", "decode", "interpolation"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--config", "tiny", "--seconds", "1"]
    command += ["--long-seconds", "2", "--steps", "1", "--threads", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    result["stdout"] = done.stdout
    return result


def test_every_part_runs_and_is_timed_against_its_budget(report):
    timing = {row["part"]: row for row in report["timing"]}
    assert list(timing) == ["setup", "clip", "decode60", "lowvram", "routing", "precision"]
    assert all(row["status"] == "ok" and row["elapsed_s"] > 0 for row in timing.values())
    for name, row in timing.items():
        assert f"[{name}: {row['elapsed_s']:.1f} s of a {row['budget_s']:.0f} s budget]" in report["stdout"]
    assert report["layout"] == "tiny" and report["dtype"] == "float32"


def test_the_clip_is_measured_per_stage(report):
    clip = report["parts"]["clip"]
    assert set(clip["stages"]) == STAGES
    assert clip["frames"] == 12 and clip["latent_frames"] == 37  # 1 s of speech at 12.5 fps + 25 padding
    assert clip["unet_calls"] == clip["windows_per_step"] * clip["steps"] == 2
    assert clip["video_frames"] == 2 * clip["frames"] - 1 and clip["frames_finite"]
    total = sum(stage["seconds"] for stage in clip["stages"].values())
    assert clip["total_seconds"] == pytest.approx(total)
    assert clip["seconds_per_video_second"] == pytest.approx(total / (clip["frames"] / 12.5))
    assert clip["seconds_per_unet_call"] == pytest.approx(clip["stages"]["sampling"]["seconds"] / 2)
    assert all(stage["peak_mb"] > 0 for stage in clip["stages"].values())
    assert "s per s video" in report["stdout"] and "per UNet call" in report["stdout"]


def test_the_other_parts_report_their_numbers(report):
    parts = report["parts"]
    long = parts["decode60"]
    assert long["frames"] == 25 and long["clips_per_call"] == 1  # 2 s; one clip per call on the CPU
    low = parts["lowvram"]
    assert set(low["stages"]) == STAGES and low["fits"] and low["out_of_memory"] is None and not low["capped"]
    routing = parts["routing"]
    assert routing["max_abs_difference"] == 0  # the exact routing computes the reference's numbers
    assert routing["speedup"] > 0
    precision = parts["precision"]
    assert precision["finite"] and 0 < precision["latents_max_abs"] < precision["latents_scale"]
    assert 20 < precision["frames_psnr_db"] < math.inf


def test_parts_are_chosen_by_value_within_the_budget():
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import PARTS, SETUP_BUDGET, plan

    chosen, left = plan(None, 8 * 60, official=False)
    assert [p.name for p in chosen] == [p.name for p in PARTS if p.name != "official"]
    assert SETUP_BUDGET + sum(p.budget for p in chosen) <= 8 * 60
    chosen, left = plan(None, 8 * 60, official=True)
    assert SETUP_BUDGET + sum(p.budget for p in chosen) <= 8 * 60
    assert [p.name for p in chosen + left] == [p.name for p in PARTS]  # value order kept, the tail left out
    assert left and left[-1].name == "precision"
    chosen, left = plan(["precision", "clip"], 60, official=False)
    assert [p.name for p in chosen] == ["precision", "clip"] and not left
