"""Emotion from the voice: a transformers audio-classification model per time segment -> a timeline.

The speech is mixed to mono, resampled to the classifier's rate, cut into segments of
``segment_seconds`` (the last one kept if at least half as long), and each segment with speech
(RMS above ``silence_rms``) is classified. Each segment's class probabilities become a prior
(``labels``: probability-weighted preset mix), placed as a keyframe at the segment's centre; the
keyframes are joined linearly, so the clip follows its own speech's emotion without jumps. Silent
segments get no keyframe (the neighbours are interpolated across them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
import torch

from ..audio import as_channels_first
from ..errors import InputError
from .classifiers import (
    SPEECH_EMOTION_FOLDER,
    ClassEstimate,
    PretrainedClassifier,
    estimate_from_probabilities,
)
from .presets import PresetLibrary
from .timeline import Keyframe, Timeline, TimeMark
from .value import Emotion

DEFAULT_SEGMENT_SECONDS = 2.0
SILENCE_RMS = 1e-3


class SpeechEmotionClassifier(PretrainedClassifier):
    """A transformers audio-classification model (speech emotion) and its feature extractor."""

    KIND = SPEECH_EMOTION_FOLDER
    MODEL_CLASS = "AutoModelForAudioClassification"
    PREPROCESSOR_CLASS = "AutoFeatureExtractor"

    @property
    def sampling_rate(self) -> int:
        """The rate the feature extractor reads."""
        return int(getattr(self.preprocessor, "sampling_rate", 16_000))

    def probabilities(self, segment: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Mono float32 samples at :attr:`sampling_rate` -> softmax ``(C,)`` float32 on the CPU."""
        inputs = self.preprocessor(segment, sampling_rate=self.sampling_rate, return_tensors="pt")
        return self.softmax(inputs, device)[0]


def mono_at(samples: np.ndarray | torch.Tensor, sample_rate: int, target_rate: int) -> np.ndarray:
    """``(n,)``, ``(C, n)`` or ``(1, C, n)`` -> mono float32 ``(m,)`` at ``target_rate``."""
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise InputError(f"The audio sample rate must be a positive whole number of Hz; got {sample_rate!r}.")
    mono = as_channels_first(samples).mean(axis=0)
    if mono.size == 0 or not np.isfinite(mono).all():
        raise InputError("The audio is empty or holds NaN/Inf samples; connect a clip with speech.")
    if sample_rate != target_rate:
        mono = soxr.resample(mono, sample_rate, target_rate, quality="HQ").astype(np.float32)
    return mono


def segments(n_samples: int, rate: int, segment_seconds: float) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges of ``segment_seconds``; a short tail is kept when >= half a segment."""
    if not segment_seconds > 0:
        raise InputError(f"segment_seconds must be positive, got {segment_seconds}.")
    size = max(1, round(segment_seconds * rate))
    ranges = [(s, min(s + size, n_samples)) for s in range(0, n_samples, size)]
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < size / 2:
        ranges[-2] = (ranges[-2][0], ranges[-1][1])
        ranges.pop()
    return ranges


@dataclass(frozen=True)
class VoiceEmotion:
    """The timeline (or fixed emotion for one segment), per-segment estimates and a report."""

    emotion: Emotion
    times: list[float]
    estimates: list[ClassEstimate]
    report: str


def emotion_from_speech(
    classifier: SpeechEmotionClassifier,
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    library: PresetLibrary,
    *,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    silence_rms: float = SILENCE_RMS,
    device: torch.device | str = "cpu",
) -> VoiceEmotion:
    """Speech -> an emotion timeline following the voice (see the module docstring)."""
    rate = classifier.sampling_rate
    mono = mono_at(samples, sample_rate, rate)
    keyframes: list[Keyframe] = []
    times: list[float] = []
    estimates: list[ClassEstimate] = []
    lines = []
    for start, end in segments(mono.shape[0], rate, segment_seconds):
        chunk = mono[start:end]
        if float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) < silence_rms:
            continue
        estimate = estimate_from_probabilities(classifier.probabilities(chunk, device), classifier.labels, library)
        centre = (start + end) / 2 / rate
        top = max(estimate.mapping.weights.items(), key=lambda x: x[1])
        label = f"voice {top[0]} {top[1]:.2f}"
        keyframes.append(Keyframe(estimate.prior, TimeMark(round(centre, 4)), "linear", None, label))
        times.append(centre)
        estimates.append(estimate)
        lines.append(f"{start / rate:.1f}-{end / rate:.1f}s: {estimate.mapping.report()}")
    if not keyframes:
        raise InputError(
            f"No speech found for the voice emotion: every {segment_seconds:g} s segment is silent (RMS below "
            f"{silence_rms:g}). Connect the speech clip, or check its volume."
        )
    provenance = {
        "source": "voice",
        "classifier": classifier.folder.name,
        "segment_seconds": segment_seconds,
        "segments": [{"time": t, "probabilities": e.probabilities} for t, e in zip(times, estimates, strict=True)],
        "presets": {p: library.record(p) for e in estimates for p in e.mapping.weights},
    }
    description = f"voice ({len(keyframes)} segments)"
    timeline = Timeline(tuple(keyframes))
    emotion = Emotion.from_timeline(timeline, description, provenance)
    report = f"voice ({classifier.folder.name}), {len(keyframes)} segments: " + " | ".join(lines)
    return VoiceEmotion(emotion, times, estimates, report)
