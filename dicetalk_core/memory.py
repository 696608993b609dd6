"""Free-memory queries and the memory-driven choices of a run (how many VAE clips to decode per call)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

logger = logging.getLogger(__name__)

UNET_CALL_ACTIVATIONS = 2
"""Live copies, at the peak of a UNet call, of its widest activation: the first level's feed-forward
projection (8 x the first width: GEGLU of 4 x) over every frame of the batch."""
DECODE_ACTIVATIONS = 6  # peak live tensors of the decoder's full-resolution stage, in (C0, H, W) units
MAX_CLIPS_PER_CALL = 8
MEMORY_SHARE = 0.5  # of the free memory a decode call may take


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA ``device`` in bytes (the driver's count); None for other devices."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def unet_call_bytes(unet_config: Mapping, latent_size: tuple[int, int], frames: int, dtype: torch.dtype) -> int:
    """Estimated peak activations (bytes) of one UNet call over ``frames`` frames (all CFG branches of a
    window) of latents of ``latent_size`` (h, w)."""
    channels = 8 * unet_config["block_out_channels"][0]
    return UNET_CALL_ACTIVATIONS * frames * latent_size[0] * latent_size[1] * channels * torch.finfo(dtype).bits // 8


def decode_frame_bytes(vae: torch.nn.Module, latent_size: tuple[int, int]) -> int:
    """Estimated peak decoder memory per frame (bytes) for latents of ``latent_size`` (h, w).

    At 512x512 in fp16 this gives ~0.4 GB per frame, i.e. ~4 GB for the official 10-frame clip
    (what the official decode is reported to take: 3-4 GB).
    """
    channels = vae.config.block_out_channels
    factor = 2 ** (len(channels) - 1)
    pixels = latent_size[0] * factor * latent_size[1] * factor
    return DECODE_ACTIVATIONS * channels[0] * pixels * torch.finfo(vae.dtype).bits // 8


def decode_clips_per_call(vae: torch.nn.Module, latent_size: tuple[int, int], chunk_size: int, device) -> int:
    """Whole temporal-decoder clips one VAE call can take within half the free GPU memory (1 to 8); 1 elsewhere.

    Batching clips pays only on a GPU (fewer, fuller kernel launches); on the CPU it is slower and
    multiplies the decode's peak memory, which the rest of the machine shares.
    """
    free = free_memory_bytes(torch.device(device))
    if free is None:
        return 1
    per_clip = decode_frame_bytes(vae, latent_size) * chunk_size
    clips = max(1, min(MAX_CLIPS_PER_CALL, int(free * MEMORY_SHARE) // max(per_clip, 1)))
    logger.debug("decoding %d clip(s) of %d frames per VAE call (%.1f GB free)", clips, chunk_size, free / 1e9)
    return clips
