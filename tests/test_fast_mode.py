"""Fast mode: off by default, each option changes only what it says (a stub UNet, then the tiny real one)."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from test_sampler import CROSS, TOKENS, tiny_unet, unet_inputs

from dicetalk_core.errors import CancelledError, InputError
from dicetalk_core.fast_mode import FULL, REUSE, UNGUIDED, FastMode
from dicetalk_core.models.layouts import SVD_XT_SCHEDULER_CONFIG
from dicetalk_core.pipeline import GenerationSettings
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.sampler import ClipConditioning, SamplerSettings, sample
from dicetalk_core.session import DiceTalkSession

SCHEDULER = SVD_XT_SCHEDULER_CONFIG
RATE = 16000
BRANCH_VALUES = (1.0, 2.0, 4.0)  # what the stub predicts for [uncond, reference, full]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on one thread: OpenMP's spin-waiting makes 2 threads many times slower on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.mark.parametrize(
    "fast, message",
    [
        (FastMode(cache_interval=0), "cache_interval"),
        (FastMode(cache_depth=-1), "cache_depth"),
        (FastMode(cache_threshold=1.5), "cache_threshold"),
        (FastMode(cache_interval=2, cache_threshold=0.1), "one kind of feature caching"),
        (FastMode(cache_interval=2, compile=True), "compile"),
        (FastMode(decode_autocast="int8"), "decode_autocast"),
        (FastMode(decode_chunk_size=0), "decode_chunk_size"),
        (FastMode(interpolation_autocast="fp8"), "interpolation_autocast"),
        (FastMode(interpolation_batch=0), "interpolation_batch"),
    ],
)
def test_bad_new_fast_settings_are_refused(fast, message):
    with pytest.raises(InputError, match=message):
        fast.validate()


def run_tiny(fast: FastMode | None, steps: int = 4, frames: int = 6, window: int = 4, **callbacks):
    """The real tiny UNet over a clip of ``frames`` (+ ``window`` padding): 3 windows per step."""
    unet = tiny_unet(window)
    g = torch.Generator().manual_seed(3)
    total = frames + window
    tokens = [torch.randn(total, TOKENS, CROSS, generator=g) for _ in range(4)]
    cond = ClipConditioning(
        image_latents=torch.randn(1, 4, 8, 8, generator=g),
        image_embeds=torch.randn(1, 1, CROSS, generator=g),
        audio=tokens[0],
        audio_uncond=tokens[1],
        emotion=tokens[2],
        emotion_uncond=tokens[3],
        pose_features=torch.randn(1, 32, 8, 8, generator=g),
        face_mask=None,
    )
    noise = torch.randn(1, total, 4, 8, 8, generator=g)
    settings = SamplerSettings(steps=steps, window=window, shift_offset=1)
    with torch.no_grad():
        scheduler = EulerDiscreteScheduler(**SCHEDULER)
        return sample(unet, scheduler, cond, torch.zeros(1, 4, 8, 8), noise, settings, fast=fast, **callbacks)


def test_all_off_is_the_exact_path_bit_for_bit():
    exact = run_tiny(None)
    for off in (FastMode(), FastMode(cache_depth=2), FastMode(cache_interval=1, cache_threshold=0.0)):
        assert not off.caches_features
        assert torch.equal(run_tiny(off), exact), off
    # adaptive caching that never finds a small enough change runs every call in full: the exact result
    assert torch.equal(run_tiny(FastMode(cache_threshold=1e-9)), exact)


@pytest.mark.parametrize(
    "fast",
    [
        FastMode(cache_interval=2),
        FastMode(cache_interval=2, cache_depth=2),
        FastMode(cache_threshold=0.9),
        FastMode(cache_interval=2, guidance_reuse=2),
    ],
    ids=["uniform", "uniform-depth-2", "adaptive", "uniform+guidance-reuse"],
)
def test_feature_caching_changes_the_latents_a_little(fast):
    exact = run_tiny(None)
    cached = run_tiny(fast)
    assert torch.isfinite(cached).all()
    assert not torch.equal(cached, exact)
    assert (cached - exact).abs().max() < 0.5 * exact.abs().max()


def test_progress_and_cancel_work_with_feature_caching():
    fast = FastMode(cache_interval=2, guidance_reuse=2)
    seen: list[tuple[int, int]] = []
    run_tiny(fast, on_window=lambda r: seen.append((r.step, r.start)))
    windows = len(SamplerSettings(window=4).windows(10, 0))
    assert [step for step, _ in seen] == [s for s in range(4) for _ in range(windows)]

    polls = []

    def stop_after_five() -> bool:
        polls.append(1)
        return len(polls) > 5

    with pytest.raises(CancelledError):
        run_tiny(fast, on_window=lambda r: seen.append((r.step, r.start)), should_stop=stop_after_five)
    assert len(polls) == 6


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    """A tiny-model session with RIFE, and a portrait and half a second of speech for it."""
    folder = write_models_folder(tmp_path_factory.mktemp("fast") / "dice_talk")
    session = DiceTalkSession.from_folder(folder, precision=Precision.resolve("fp32", "cpu"), interpolate=True)
    speech = folder.parent / "speech.wav"
    samples = 0.3 * np.sin(2 * np.pi * 180 * np.arange(RATE // 2) / RATE)
    with wave.open(str(speech), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.round(samples * 32767).astype(np.int16).tobytes())
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return session, image, speech, folder / "emotions" / "happy.npy"


def video_of(tiny_session, fast: FastMode | None) -> torch.Tensor:
    session, image, speech, emotion = tiny_session
    settings = GenerationSettings(sampler=SamplerSettings(steps=2), fast=fast or FastMode())
    return session.run(image, speech, emotion, settings, seed=1, face_box=(16, 16, 32, 32), min_resolution=64).frames


@pytest.mark.parametrize(
    "fast",
    [
        FastMode(cache_interval=2),
        FastMode(cache_threshold=0.9),
        FastMode(decode_autocast="bf16"),
        FastMode(decode_chunk_size=4),
        FastMode(interpolation_autocast="bf16"),
        FastMode(interpolation_batch=4),
    ],
    ids=["cache-interval", "cache-threshold", "decode-autocast", "decode-chunk-size", "rife-autocast", "rife-batch"],
)
def test_every_new_option_changes_the_video_and_only_a_little(tiny_session, fast):
    exact = video_of(tiny_session, None)
    video = video_of(tiny_session, fast)
    assert video.shape == exact.shape
    assert not torch.equal(video, exact)
    assert (video - exact).abs().mean() < 0.1


def test_the_video_with_every_option_off_is_the_exact_video(tiny_session):
    assert torch.equal(video_of(tiny_session, FastMode()), video_of(tiny_session, None))
