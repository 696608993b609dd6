"""Intensity and mixing in the prior space, checked on the official presets (skipped when absent)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from dicetalk_core.emotion import (
    Emotion,
    Keyframe,
    MixComponent,
    PresetLibrary,
    Timeline,
    TimeMark,
    apply_intensity,
    mix_emotions,
    mix_priors,
)
from dicetalk_core.errors import InputError
from dicetalk_core.model_files import OFFICIAL_PRESETS

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "presets"


def official_library() -> PresetLibrary:
    """The eight official presets, or skip."""
    if not all((OFFICIAL / f"{n}.npy").is_file() for n in OFFICIAL_PRESETS):
        pytest.skip(f"official presets not found in {OFFICIAL}")
    return PresetLibrary([OFFICIAL])


def random_library(folder: Path, names: tuple[str, ...] = OFFICIAL_PRESETS, seed: int = 0) -> PresetLibrary:
    """Plain-npy presets with the official statistics' shape: a shared part plus a per-emotion offset."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.83, 256)
    for name in names:
        offset = np.zeros(256) if name == "neutral" else rng.normal(0, 0.28, 256)
        np.save(folder / f"{name}.npy", (shared + offset)[None].astype(np.float32))
    return PresetLibrary([folder])


def test_intensity_moves_along_the_line_from_neutral():
    lib = official_library()
    n = lib.prior("neutral")
    for name in ("happy", "sad", "angry", "surprised"):
        p = lib.prior(name)
        assert torch.equal(apply_intensity(p, n, 1.0), p)  # 1 = the preset, bit for bit
        assert torch.allclose(apply_intensity(p, n, 0.0), n, atol=1e-6)
        for a in (0.25, 0.5, 1.3, 1.5):
            q = apply_intensity(p, n, a)
            # on the line: the offset is a times the preset's offset
            assert torch.allclose(q - n, a * (p - n), atol=1e-5)
            assert abs((q - n).norm().item() - a * (p - n).norm().item()) < 1e-4


def test_intensity_range_and_warning(caplog):
    lib = official_library()
    n, p = lib.prior("neutral"), lib.prior("happy")
    with caplog.at_level(logging.WARNING, logger="dicetalk_core.emotion.mixing"):
        apply_intensity(p, n, 1.5)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="dicetalk_core.emotion.mixing"):
        apply_intensity(p, n, 1.6)
    assert any("beyond the range" in r.getMessage() for r in caplog.records)
    for bad in (-0.1, 2.5, float("nan"), "lots"):
        with pytest.raises(InputError, match="intensity"):
            apply_intensity(p, n, bad)
    with pytest.raises(InputError, match="neutral"):
        apply_intensity(p, None, 0.5)


def test_mix_is_the_normalised_weighted_combination():
    lib = official_library()
    n, h, s = lib.prior("neutral"), lib.prior("happy"), lib.prior("sad")
    half = mix_priors([MixComponent(h, 2.0), MixComponent(s, 2.0)])
    assert torch.allclose(half, (h + s) / 2, atol=1e-6)
    assert torch.allclose(mix_priors([MixComponent(h, 1), MixComponent(s, 1)]), half)  # weights are normalised
    assert torch.equal(mix_priors([MixComponent(h, 0.3)]), h)  # one component: itself
    assert torch.equal(mix_priors([MixComponent(h, 1.0), MixComponent(s, 0.0)]), h)
    # with intensities: n + sum v_i a_i (p_i - n)
    mixed = mix_priors([MixComponent(h, 3.0, 1.2), MixComponent(s, 1.0, 0.5)], n)
    assert torch.allclose(mixed, n + 0.75 * 1.2 * (h - n) + 0.25 * 0.5 * (s - n), atol=1e-5)
    with pytest.raises(InputError, match="zero"):
        mix_priors([MixComponent(h, 0.0)])
    with pytest.raises(InputError, match="negative"):
        mix_priors([MixComponent(h, -1.0), MixComponent(s, 2.0)])


def test_even_mix_of_dissimilar_emotions_is_closer_to_neutral():
    """The documented caveat, with the official numbers: offsets point different ways, so they partly cancel."""
    lib = official_library()
    n, a, s = lib.prior("neutral"), lib.prior("angry"), lib.prior("surprised")
    mix = mix_priors([MixComponent(a), MixComponent(s)])
    offsets = [(a - n).norm().item(), (s - n).norm().item(), (mix - n).norm().item()]
    print(f"|angry-n|={offsets[0]:.2f} |surprised-n|={offsets[1]:.2f} |mix-n|={offsets[2]:.2f}")
    assert offsets[2] < min(offsets[:2])  # closer to neutral than either
    assert offsets[2] < 0.8 * sum(offsets[:2]) / 2  # parallel offsets would give the mean


def test_mixing_commutes_with_timelines_and_intensity(tmp_path):
    lib = random_library(tmp_path)
    n = lib.prior("neutral")
    timeline = Timeline(
        (
            Keyframe(lib.prior("sad"), TimeMark(0.0)),
            Keyframe(lib.prior("happy"), TimeMark(1.0), "linear"),
        )
    )
    moving = Emotion.from_timeline(timeline, "sad to happy")
    fixed = Emotion.constant(lib.prior("angry"), "angry")
    mixed = mix_emotions([(fixed, 1.0), (moving, 3.0)])
    frames = 20
    expected = 0.25 * lib.prior("angry")[None] + 0.75 * moving.priors(frames)
    assert torch.allclose(mixed.priors(frames), expected, atol=1e-6)
    assert not mixed.is_static
    stronger = mixed.with_intensity(1.4, n)
    assert torch.allclose(stronger.priors(frames), n + 1.4 * (mixed.priors(frames) - n), atol=1e-5)
    both_fixed = mix_emotions([(fixed, 1.0), (Emotion.constant(lib.prior("sad")), 1.0)])
    assert both_fixed.is_static
    assert torch.allclose(both_fixed.prior(), (lib.prior("angry") + lib.prior("sad")) / 2, atol=1e-6)
