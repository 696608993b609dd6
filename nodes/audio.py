"""DICE-Talk Audio Encoder: ComfyUI AUDIO -> per-frame whisper features."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dicetalk_core import audio as audio_frontend
from ..dicetalk_core.errors import InputError
from ..dicetalk_core.rates import GENERATION_FPS
from .common import progress_bar, stop_requested
from .model_management import DiceTalkBundle


@dataclass(frozen=True)
class AudioFeatures:
    """``windows`` ``(N, 10, layers, channels)`` (one per generated frame) and the speech they came from."""

    windows: torch.Tensor
    waveform: torch.Tensor  # (C, samples)
    sample_rate: int

    @property
    def num_frames(self) -> int:
        return self.windows.shape[0]


def fit_duration(waveform: torch.Tensor, sample_rate: int, seconds: float) -> torch.Tensor:
    """Trim ``(C, n)`` to ``seconds`` or pad it with silence; 0 keeps it as is."""
    if seconds <= 0:
        return waveform
    target = round(seconds * sample_rate)
    if waveform.shape[-1] >= target:
        return waveform[..., :target]
    return torch.nn.functional.pad(waveform, (0, target - waveform.shape[-1]))


class DICEAudioEncoder:
    """Encodes speech with whisper-tiny into one audio window per generated video frame (12.5 per second)."""

    DESCRIPTION = __doc__
    CATEGORY = "DICE-Talk"
    RETURN_TYPES = ("DICE_AUDIO_FEATURES", "FLOAT")
    RETURN_NAMES = ("audio_features", "duration")
    OUTPUT_TOOLTIPS = ("Whisper features per video frame.", "Seconds of video these features will make.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("DICE_TALK_MODEL", {"tooltip": "From DICE-Talk Model Loader."}),
                "audio": ("AUDIO", {"tooltip": "The speech (any sample rate, mono or stereo), e.g. from Load Audio."}),
                "duration": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 400.0,
                        "step": 0.1,
                        "tooltip": "Seconds to use: 0 = the whole clip; shorter trims, longer pads with silence. "
                        "The official release caps clips at 400 s.",
                    },
                ),
            }
        }

    def encode(self, model: DiceTalkBundle, audio: dict, duration: float):
        waveform = audio["waveform"]
        if waveform.ndim == 3:
            if waveform.shape[0] != 1:
                raise InputError(f"Got a batch of {waveform.shape[0]} audio clips; connect a single clip.")
            waveform = waveform[0]
        waveform = fit_duration(waveform.float().cpu(), int(audio["sample_rate"]), duration)
        model.load("whisper")
        features = audio_frontend.audio_windows(
            model.whisper,
            waveform,
            int(audio["sample_rate"]),
            progress=progress_bar(1),
            should_stop=stop_requested,
        )
        result = AudioFeatures(features.windows.contiguous(), waveform, int(audio["sample_rate"]))
        return (result, result.num_frames / GENERATION_FPS)
