"""Emotions: presets, intensity and mixes, timelines, text/JSON descriptions, and estimates from clips.

Light modules are re-exported here. Import the heavier ones by name: ``conditioning`` (emotion ->
tokens, needs the models), ``expression`` and ``speech`` (transformers classifiers).
"""

from .compose import build_emotion, emotion_from_spec, parse_emotion_spec
from .mixing import MAX_INTENSITY, SUPPORTED_INTENSITY, MixComponent, apply_intensity, mix_priors
from .presets import (
    PresetLibrary,
    find_preset,
    load_emotion,
    load_emotion_prior,
    save_emotion,
    save_emotion_prior,
    saved_emotion_path,
)
from .text import parse_emotion_text, vocabulary
from .timeline import Keyframe, Timeline, TimeMark
from .value import Emotion, mix_emotions

__all__ = [
    "MAX_INTENSITY",
    "SUPPORTED_INTENSITY",
    "Emotion",
    "Keyframe",
    "MixComponent",
    "PresetLibrary",
    "TimeMark",
    "Timeline",
    "apply_intensity",
    "build_emotion",
    "emotion_from_spec",
    "find_preset",
    "load_emotion",
    "load_emotion_prior",
    "mix_emotions",
    "mix_priors",
    "parse_emotion_spec",
    "parse_emotion_text",
    "save_emotion",
    "save_emotion_prior",
    "saved_emotion_path",
    "vocabulary",
]
