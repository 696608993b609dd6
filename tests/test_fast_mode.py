"""Fast mode: off by default, each option changes only what it says (checked with a stub UNet)."""

from __future__ import annotations

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from test_sampler import tiny_unet, unet_inputs

from dicetalk_core.errors import InputError
from dicetalk_core.fast_mode import FULL, REUSE, UNGUIDED, FastMode
from dicetalk_core.models.layouts import SVD_XT_SCHEDULER_CONFIG
from dicetalk_core.pipeline import GenerationSettings
from dicetalk_core.sampler import ClipConditioning, SamplerSettings, sample

SCHEDULER = SVD_XT_SCHEDULER_CONFIG
BRANCH_VALUES = (1.0, 2.0, 4.0)  # what the stub predicts for [uncond, reference, full]


class StubUNet(torch.nn.Module):
    """Predicts a constant per CFG branch and records the batch of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def forward(self, sample, timestep, **kwargs):
        batch = sample.shape[0]
        self.batches.append(batch)
        values = torch.tensor(BRANCH_VALUES[-batch:]).reshape(batch, 1, 1, 1, 1)
        return type("Out", (), {"sample": torch.zeros_like(sample[:, :, :4]) + values})()


def conditioning(frames: int, window: int) -> ClipConditioning:
    total = frames + window
    tokens = torch.zeros(total, 2, 8)
    return ClipConditioning(
        image_latents=torch.zeros(1, 4, 2, 2),
        image_embeds=torch.zeros(1, 1, 8),
        audio=tokens,
        audio_uncond=tokens,
        emotion=tokens,
        emotion_uncond=tokens,
        pose_features=torch.zeros(1, 32, 2, 2),
        face_mask=None,
    )


def run_stub(fast: FastMode, steps: int = 4, frames: int = 6, window: int = 4):
    unet, guided = StubUNet(), []
    cond = conditioning(frames, window)
    noise = torch.randn(1, frames + window, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    latents = sample(
        unet,
        EulerDiscreteScheduler(**SCHEDULER),
        cond,
        torch.zeros(1, 4, 2, 2),
        noise,
        SamplerSettings(steps=steps, window=window, shift_offset=1),
        fast=fast,
        on_window=lambda r: guided.append((r.step, r.guided.unique().tolist())),
    )
    return latents, unet.batches, guided


def test_fast_mode_is_off_by_default():
    assert not FastMode().enabled
    assert GenerationSettings().fast == FastMode()
    assert FastMode().step_kinds(5) == [FULL] * 5


def test_step_kinds():
    assert FastMode(guidance_reuse=2).step_kinds(5) == [FULL, REUSE, FULL, REUSE, FULL]
    assert FastMode(guidance_reuse=3).step_kinds(4) == [FULL, REUSE, REUSE, FULL]
    assert FastMode(guidance_interval=(0.0, 0.5)).step_kinds(4) == [FULL, FULL, UNGUIDED, UNGUIDED]
    interval_reuse = FastMode(guidance_interval=(0.25, 1.0), guidance_reuse=2).step_kinds(5)
    assert interval_reuse == [UNGUIDED, UNGUIDED, FULL, REUSE, FULL]  # the first guided step is full


@pytest.mark.parametrize(
    "fast, message",
    [
        (FastMode(autocast="int8"), "autocast"),
        (FastMode(guidance_interval=(0.8, 0.2)), "guidance_interval"),
        (FastMode(guidance_reuse=0), "guidance_reuse"),
    ],
)
def test_bad_fast_settings_are_refused(fast, message):
    with pytest.raises(InputError, match=message):
        fast.validate()


def test_guidance_reuse_runs_one_branch_and_reuses_the_terms():
    exact, exact_batches, _ = run_stub(FastMode())
    reused, batches, guided = run_stub(FastMode(guidance_reuse=2))
    windows = len(exact_batches) // 4
    assert exact_batches == [3] * (4 * windows)
    assert batches == ([3] * windows + [1] * windows) * 2
    # the stub's branch differences never change, so reusing them is exact: 1 + 3 (2 - 1) + 6 (4 - 2)
    assert all(values == [16.0] for _, values in guided)
    assert torch.equal(reused, exact)


def test_guidance_interval_leaves_the_other_steps_unguided():
    _, batches, guided = run_stub(FastMode(guidance_interval=(0.0, 0.5)))
    windows = len(batches) // 4
    assert batches == [3] * (2 * windows) + [1] * (2 * windows)
    assert {step: values for step, values in guided} == {0: [16.0], 1: [16.0], 2: [4.0], 3: [4.0]}


def test_autocast_keeps_the_working_dtype_and_stays_close():
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    with torch.no_grad():
        exact = unet(*args, **kwargs).sample
        with FastMode(autocast="bf16").autocast_context(torch.device("cpu")):
            fast = unet(*args, **kwargs).sample.float()
    assert torch.isfinite(fast).all()
    assert (fast - exact).abs().max() < 0.1 * exact.abs().max()
