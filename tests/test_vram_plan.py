"""The offload decision of the ComfyUI nodes under ComfyUI's classic and dynamic VRAM, from faked figures.

``nodes/vram_plan.py`` is read by path: it imports nothing of ComfyUI (the ``nodes`` package does).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "nodes" / "vram_plan.py"
spec = importlib.util.spec_from_file_location("dicetalk_vram_plan", PATH)
vram_plan = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = vram_plan
spec.loader.exec_module(vram_plan)
VramFigures, plan_stage = vram_plan.VramFigures, vram_plan.plan_stage

GB = 2**30
UNET = int(3.25 * GB)  # the fp16 DICE-Talk UNet
SAMPLING = 3 * GB  # one UNet call's activations at 512 px, fp16
RESERVE = GB // 2


def test_the_room_asked_for_is_the_stage_s_working_memory_in_every_mode():
    for figures in (
        VramFigures(free=40 * GB),
        VramFigures(free=40 * GB, dynamic=True, low_vram=True),
        VramFigures(free=2 * GB, reclaimable=20 * GB, dynamic=True),
        VramFigures(free=GB, no_vram=True),
        VramFigures(free=0, on_gpu=False),
    ):
        assert plan_stage(UNET, SAMPLING, figures, RESERVE).memory_required == SAMPLING


def test_classic_lowvram_and_novram_offload_everything_else_first():
    plenty = 40 * GB
    assert plan_stage(UNET, SAMPLING, VramFigures(free=plenty, low_vram=True), RESERVE).offload_others
    assert plan_stage(UNET, SAMPLING, VramFigures(free=plenty, no_vram=True), RESERVE).offload_others
    assert not plan_stage(UNET, SAMPLING, VramFigures(free=plenty), RESERVE).offload_others


def test_lowvram_does_nothing_under_dynamic_vram_while_the_stage_fits():
    figures = VramFigures(free=4 * GB, reclaimable=10 * GB, dynamic=True, low_vram=True)
    plan = plan_stage(UNET, SAMPLING, figures, RESERVE)
    assert not plan.offload_others and "dynamic VRAM" in plan.reason


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_stage_that_cannot_fit_beside_the_others_offloads_them(dynamic):
    need = UNET + SAMPLING + RESERVE
    reclaimable = GB if dynamic else 0
    fits = VramFigures(free=need - reclaimable, reclaimable=reclaimable, dynamic=dynamic)
    short = VramFigures(free=need - reclaimable - 1, reclaimable=reclaimable, dynamic=dynamic)
    assert not plan_stage(UNET, SAMPLING, fits, RESERVE).offload_others
    plan = plan_stage(UNET, SAMPLING, short, RESERVE)
    assert plan.offload_others and "offload the rest" in plan.reason


def test_pages_dynamic_models_give_back_count_as_room():
    need = UNET + SAMPLING + RESERVE
    assert (
        plan_stage(UNET, SAMPLING, VramFigures(free=GB, reclaimable=need, dynamic=True), RESERVE).offload_others
        is False
    )
    assert plan_stage(UNET, SAMPLING, VramFigures(free=GB, dynamic=True), RESERVE).offload_others


def test_modules_already_on_the_device_need_no_room():
    figures = VramFigures(free=SAMPLING + RESERVE)
    assert not plan_stage(0, SAMPLING, figures, RESERVE).offload_others  # the UNet is loaded: only activations
    assert plan_stage(UNET, SAMPLING, figures, RESERVE).offload_others


def test_the_cpu_never_offloads():
    plan = plan_stage(UNET, SAMPLING, VramFigures(free=0, low_vram=True, no_vram=True, on_gpu=False), RESERVE)
    assert not plan.offload_others
