"""Emotion priors: the official presets and where they come from."""

from .presets import OFFICIAL_PRESETS, find_preset, load_emotion_prior, save_emotion_prior

__all__ = ["OFFICIAL_PRESETS", "find_preset", "load_emotion_prior", "save_emotion_prior"]
