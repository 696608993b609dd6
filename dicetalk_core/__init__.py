"""DICE-Talk emotional talking-portrait generation on stock diffusers and transformers.

Importable without ComfyUI. The rooms, in data-flow order: ``audio`` and ``face`` (front ends),
``emotion`` (presets), ``models`` (audio projection, emotion model, pose guider),
``unet_adapters`` (DICE-Talk cross-attention on the stock SVD UNet), ``sampler`` (windowed EDM
sampling with three-way guidance), ``pipeline`` (composition), ``interpolation`` and ``video_io``.
"""

from .errors import CancelledError, CheckpointError, DiceTalkError, InputError

__all__ = ["CancelledError", "CheckpointError", "DiceTalkError", "InputError"]
