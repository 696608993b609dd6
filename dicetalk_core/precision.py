"""Which dtype each module runs in, and on which device.

The official release runs whisper, the audio projection and the emotion model in fp32 and the UNet,
VAE, CLIP image encoder and pose guider in fp16, with the VAE upcast to fp32 for encoding. That is
the default "mixed" policy on a GPU; CPUs default to full fp32 (fp16 matmuls are slow or missing there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """Device and dtypes of a run.

    Attributes:
        device: where the models run.
        diffusion: dtype of the UNet, VAE (decode), CLIP image encoder and pose guider.
        conditioning: dtype of whisper, the audio projection and the emotion model.
        vae_encode: dtype of the VAE while it encodes the reference image.
    """

    device: torch.device
    diffusion: torch.dtype = torch.float32
    conditioning: torch.dtype = torch.float32
    vae_encode: torch.dtype = torch.float32

    @classmethod
    def resolve(cls, name: str = "auto", device: str | torch.device | None = None) -> Precision:
        """Policy from a user choice: ``auto`` (fp16 mixed on CUDA, fp32 elsewhere), ``fp32``, ``fp16``, ``bf16``.

        ``fp16``/``bf16`` set the diffusion modules' dtype; the conditioning modules and the VAE
        encode stay fp32 as in the official release.
        """
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if name == "auto":
            name = "fp16" if device.type == "cuda" else "fp32"
        if name not in DTYPES:
            raise InputError(f"Unknown precision '{name}'; choose one of auto, {', '.join(DTYPES)}.")
        return cls(device=device, diffusion=DTYPES[name])
