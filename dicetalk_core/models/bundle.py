"""Every module of a DICE-Talk run in one bundle, and which of them each generation stage runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from transformers import CLIPVisionModelWithProjection

from ..precision import Precision
from ..unet_adapters import DiceUNet
from .audio_projection import AudioProjection
from .emotion_model import EmotionModel
from .pose_guider import PoseGuider

STAGE_MODULES = {
    "conditioning": ("vae", "image_encoder", "pose_guider", "audio_projection"),
    "sampling": ("unet",),
    "decode": ("vae",),
}
"""The stages of a generation, in order, and the modules each one runs."""


@dataclass
class DiceTalkModels:
    """Every module of a DICE-Talk generation (whisper, which makes the audio features, is separate)."""

    unet: DiceUNet
    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    pose_guider: PoseGuider
    audio_projection: AudioProjection
    emotion_model: EmotionModel
    scheduler: EulerDiscreteScheduler

    MODULES: ClassVar[tuple[str, ...]] = (
        "unet",
        "vae",
        "image_encoder",
        "pose_guider",
        "audio_projection",
        "emotion_model",
    )
    """The module fields (the scheduler holds no weights)."""
    CONDITIONING_MODULES: ClassVar[tuple[str, ...]] = ("audio_projection", "emotion_model")
    """The modules that run in ``Precision.conditioning``; the others run in ``Precision.diffusion``."""

    @classmethod
    def module_dtype(cls, name: str, precision: Precision) -> torch.dtype:
        """The dtype the module field ``name`` runs in."""
        return precision.conditioning if name in cls.CONDITIONING_MODULES else precision.diffusion

    def to_precision(self, precision: Precision) -> DiceTalkModels:
        """Move and cast every module according to ``precision`` (in place); returns self."""
        for name in self.MODULES:
            getattr(self, name).to(device=precision.device, dtype=self.module_dtype(name, precision)).eval()
        return self
