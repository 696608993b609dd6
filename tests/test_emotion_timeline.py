"""Emotion timelines: keyframe math, per-frame tokens, and how the sampler's windows blend them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from dicetalk_core.emotion import Emotion, Keyframe, Timeline, TimeMark
from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.errors import InputError
from dicetalk_core.models import EmotionModel
from dicetalk_core.models.layouts import SVD_XT_SCHEDULER_CONFIG
from dicetalk_core.pipeline import pad_frames
from dicetalk_core.sampler import ClipConditioning, SamplerSettings, sample
from dicetalk_core.unet_adapters import _window_mean

FPS = 12.5


def priors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(256, generator=g) for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("text", "mark"),
    [
        ("2", TimeMark(2.0)),
        (2.5, TimeMark(2.5)),
        ("2.5s", TimeMark(2.5)),
        ("2 sec", TimeMark(2.0)),
        ("1.5 seconds", TimeMark(1.5)),
        ("500ms", TimeMark(0.5)),
        ("30f", TimeMark(30, "f")),
        ("frame 30", TimeMark(30, "f")),
        ("30 frames", TimeMark(30, "f")),
        ("50%", TimeMark(50, "%")),
    ],
)
def test_time_marks(text, mark):
    assert TimeMark.parse(text) == mark


@pytest.mark.parametrize("bad", ["soon", "-1s", "120%", "2 minutes", "", True, None])
def test_bad_time_marks_say_what_is_accepted(bad):
    with pytest.raises(InputError, match=r"2s|time|percent|100%"):
        TimeMark.parse(bad)


def test_hold_linear_smooth_and_over():
    a, b, _ = priors()
    n = 50  # frames 0..49, 0.08 s apart; frame 25 is at 2.0 s
    hold = Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(2.0), "hold"))).priors(n)
    assert torch.equal(hold[24], a) and torch.equal(hold[25], b) and torch.equal(hold[49], b)

    linear = Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(2.0), "linear"))).priors(n)
    for f in (0, 5, 12, 24, 25, 40):
        w = min(f / FPS / 2.0, 1.0)
        assert torch.allclose(linear[f], (1 - w) * a + w * b, atol=1e-5), f

    smooth = Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(2.0), "smooth", TimeMark(0.5)))).priors(n)
    assert all(torch.equal(smooth[f], a) for f in range(19))  # holds until 1.5 s (frame 18.75)
    for f in (19, 21, 23, 24):
        u = (f / FPS - 1.5) / 0.5
        w = 3 * u**2 - 2 * u**3
        assert torch.allclose(smooth[f], (1 - w) * a + w * b, atol=1e-5), f
    assert torch.equal(smooth[25], b)


def test_auto_percent_and_frame_times():
    a, b, c = priors()
    n = 51  # span 4.0 s
    auto = Timeline((Keyframe(a), Keyframe(b), Keyframe(c)))
    assert auto.times(4.0) == pytest.approx([0.0, 4 / 3, 8 / 3])
    mixed_units = Timeline((Keyframe(a, TimeMark(25, "f")), Keyframe(b), Keyframe(c, TimeMark(75, "%"))))
    assert mixed_units.times(4.0) == pytest.approx([2.0, 2.5, 3.0])
    frames = Timeline((Keyframe(a), Keyframe(b, TimeMark(30, "f"), "hold"))).priors(n)
    assert torch.equal(frames[29], a) and torch.equal(frames[30], b)
    late_start = Timeline((Keyframe(a, TimeMark(1.0)), Keyframe(b, TimeMark(2.0), "linear"))).priors(n)
    assert torch.equal(late_start[0], a) and torch.equal(late_start[12], a)  # before the first keyframe: hold
    beyond = Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(8.0), "linear"))).priors(n)
    assert torch.allclose(beyond[50], 0.5 * a + 0.5 * b, atol=1e-5)  # the clip ends half way


def test_backwards_times_are_refused_and_crossing_units_are_clamped(caplog):
    a, b, c = priors()
    with pytest.raises(InputError, match=r"happy at 1s comes after sad at 3s"):
        Timeline((Keyframe(a, TimeMark(3.0), label="sad"), Keyframe(b, TimeMark(1.0), label="happy")))
    crossing = Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(3.0)), Keyframe(c, TimeMark(50, "%"))))
    assert crossing.times(8.0) == pytest.approx([0.0, 3.0, 4.0])
    with caplog.at_level("WARNING", logger="dicetalk_core.emotion.timeline"):
        assert crossing.times(4.0) == pytest.approx([0.0, 3.0, 3.0])  # 50% of 4 s is before 3 s: moved up
    assert "before the previous one" in caplog.text


def tiny_emotion_model(seed: int = 5) -> EmotionModel:
    torch.manual_seed(seed)
    return EmotionModel(256, 32, 24, 4, 8, 8, (32, 16, 8, 22)).eval()


def single_prior_tokens(model: EmotionModel, prior: torch.Tensor, retrieval: bool = False) -> torch.Tensor:
    """``(T, C)``: the model's forward on one prior shaped as the release feeds it, ``(1, 1, 1, 1, D)``."""
    with torch.no_grad():
        return model(prior.reshape(1, 1, 1, 1, -1), retrieval=retrieval).tokens[0, 0]


def test_per_frame_tokens_before_and_after_a_keyframe():
    model = tiny_emotion_model()
    a, b, _ = priors()
    emotion = Emotion.from_timeline(
        Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(2.0), "smooth", TimeMark(0.5))))
    )
    cond = emotion_conditioning(model, emotion, 50)
    assert cond.cond.shape == (50, 4, 32)
    tokens_a, tokens_b = single_prior_tokens(model, a), single_prior_tokens(model, b)
    for f in range(19):  # held: the model's tokens of prior a, bit for bit
        assert torch.equal(cond.cond[f], tokens_a)
    for f in range(25, 50):
        assert torch.equal(cond.cond[f], tokens_b)
    middle = single_prior_tokens(model, emotion.priors(50)[22])  # in the transition: the model's answer
    assert torch.equal(cond.cond[22], middle)
    assert not torch.allclose(cond.cond[22], tokens_a, atol=1e-3)
    assert not torch.allclose(cond.cond[22], tokens_b, atol=1e-3)
    assert torch.equal(cond.uncond, single_prior_tokens(model, torch.zeros(256)))


@pytest.mark.parametrize("retrieval", [False, True])
def test_prior_tokens_are_each_priors_own_forward_bit_for_bit(retrieval):
    model = tiny_emotion_model()
    many = torch.randn(10, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens = model.prior_tokens(many, retrieval=retrieval)
    assert tokens.shape == (10, 4, 32)
    for prior, prior_tokens in zip(many, tokens, strict=True):
        assert torch.equal(prior_tokens, single_prior_tokens(model, prior, retrieval))


def test_fixed_and_held_emotions_take_one_path_bit_for_bit():
    model = tiny_emotion_model()
    a, b, _ = priors()
    fixed = emotion_conditioning(model, Emotion.constant(a, "a"))
    assert fixed.cond.shape == (4, 32)
    assert torch.equal(fixed.cond, single_prior_tokens(model, a))
    held_then_moving = Emotion.from_timeline(
        Timeline((Keyframe(a, TimeMark(0)), Keyframe(a, TimeMark(1)), Keyframe(b, TimeMark(2), "hold")))
    )
    per_frame = emotion_conditioning(model, held_then_moving, 30).cond
    assert all(torch.equal(per_frame[f], fixed.cond) for f in range(25))  # 2 s at 12.5 fps hold a
    moving = Emotion.from_timeline(Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(1)))))
    with pytest.raises(InputError, match="audio features"):
        emotion_conditioning(model, moving)


class RecordingUNet(torch.nn.Module):
    """Stands in for the UNet: records the emotion tokens of every call, predicts zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.emotion_tokens: list[torch.Tensor] = []

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, sample, timestep, *, adapter_tokens, **_):
        self.emotion_tokens.append(adapter_tokens[1].clone())
        return SimpleNamespace(sample=torch.zeros_like(sample[:, :, :4]))


def test_sampler_windows_blend_a_keyframe_over_time():
    """A hold keyframe at frame 50: every frame's own tokens switch there, but the temporal attention
    sees each window's mean, and the window grid shifts by 7 frames per step, so frames near the
    keyframe get a mixture that changes from step to step: a ramp, not a seam at a window boundary."""
    model = tiny_emotion_model()
    a, b, _ = priors()
    n, window, steps = 100, 25, 4
    emotion = Emotion.from_timeline(Timeline((Keyframe(a, TimeMark(0)), Keyframe(b, TimeMark(50, "f"), "hold"))))
    tokens = emotion_conditioning(model, emotion, n)
    tok_a, tok_b = single_prior_tokens(model, a), single_prior_tokens(model, b)
    assert all(torch.allclose(tokens.cond[f], tok_a, atol=1e-6) for f in range(50))
    assert all(torch.allclose(tokens.cond[f], tok_b, atol=1e-6) for f in range(50, n))

    total = n + window
    cond = ClipConditioning(
        image_latents=torch.zeros(1, 4, 2, 2),
        image_embeds=torch.zeros(1, 1, 32),
        audio=torch.zeros(total, 4, 32),
        audio_uncond=torch.zeros(total, 4, 32),
        emotion=pad_frames(tokens.cond, tokens.uncond, window),
        emotion_uncond=tokens.uncond[None].expand(total, -1, -1),
        pose_features=torch.zeros(1, 8, 2, 2),
        face_mask=None,
    )
    unet = RecordingUNet()
    windows: list[tuple[int, list[int]]] = []
    settings = SamplerSettings(steps=steps, window=window)
    sample(
        unet,
        EulerDiscreteScheduler(**SVD_XT_SCHEDULER_CONFIG),
        cond,
        torch.zeros(1, 4, 2, 2),
        torch.zeros(1, total, 4, 2, 2),
        settings,
        on_window=lambda r: windows.append((r.step, r.frames)),
    )
    assert len(windows) == len(unet.emotion_tokens) == steps * total // window

    direction = tok_b - tok_a
    share_of_b = torch.zeros(steps, n)  # how much of b each frame's temporal context holds, per step
    for (step, frames), call in zip(windows, unet.emotion_tokens, strict=True):
        full = call[-window:]  # the batch is [uncond, reference, full]; spatial tokens are per frame
        assert torch.equal(full, cond.emotion[frames])
        context = _window_mean(full, 1, window, 1)[0]  # what the temporal attention attends to
        share = ((context - tok_a) * direction).sum() / direction.pow(2).sum()
        for f in frames:
            if f < n:
                share_of_b[step, f] = share
    centre = slice(25, 75)  # windows around the keyframe never reach the padding frames here
    for step, frames in windows:
        in_b = sum(1 for f in frames if 50 <= f < n)
        if all(f < n for f in frames) and min(frames) >= 25 and max(frames) < 100:
            assert share_of_b[step, frames[0]].item() == pytest.approx(in_b / window, abs=1e-4)
    assert share_of_b[0, 49].item() == pytest.approx(0.0, abs=1e-5)  # step 0: windows meet at the keyframe
    assert share_of_b[1, 49].item() == pytest.approx(18 / 25, abs=1e-4)  # step 1 (shift 7): window 43..67
    mean_share = share_of_b[:, centre].mean(dim=0)
    assert (mean_share[1:] - mean_share[:-1] >= -1e-5).all()  # a monotone ramp over the steps
    assert 0.0 < mean_share[49 - 25].item() < 0.5 < mean_share[50 - 25].item() < 1.0
    assert len({round(v, 3) for v in mean_share.tolist()}) >= 6
    print("mean share of b, frames 40..60:", [round(v, 2) for v in mean_share[15:36].tolist()])
