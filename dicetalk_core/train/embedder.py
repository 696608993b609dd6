"""The disentangled emotion embedder (paper section 3.1): audio + expression features -> emotion prior.

Two streams of per-frame features are projected to the prior width ``dim`` (256 for the released
presets): an audio stream ``a`` (whisper-tiny states in the paper; any ``(B, N, audio_dim)`` here) and a
visual stream ``v`` (expression coefficients; ``(B, N, visual_dim)``). Each layer runs a transformer
encoder layer over ``a`` and then lets it read the visual stream::

    a <- a + cross_scale * CrossAttention(query=LN(a), key=value=v)

Attention pooling turns the frames into a Gaussian: ``w = softmax_N(W_s a)``, ``mu = sum_n w_n a_n``,
``sigma^2 = sum_n w_n (a_n - mu)^2``; training samples ``s = mu + sigma * eps``. Either modality may be
missing (per clip): a missing audio stream is replaced by a learned null token (so the query stream
carries only positions), a missing visual stream skips the cross-attention. Layer count, heads and
``cross_scale`` are not given by the paper; the defaults here are choices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn


@dataclass(frozen=True)
class EmbedderConfig:
    """Sizes of :class:`EmotionEmbedder` (``dim`` = prior width; 256 matches the presets)."""

    audio_dim: int = 384
    visual_dim: int = 64
    dim: int = 256
    layers: int = 2
    heads: int = 4
    max_frames: int = 128
    cross_scale: float = 1.0
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class EmbedderOutput(NamedTuple):
    """``mu``, ``sigma`` and ``sample`` (``mu + sigma * eps``, or ``mu`` when not sampling), each ``(B, dim)``."""

    mu: torch.Tensor
    sigma: torch.Tensor
    sample: torch.Tensor


class CrossModalLayer(nn.Module):
    """Self-attention over the audio stream, then a residual read of the visual stream."""

    def __init__(self, config: EmbedderConfig) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            config.dim, config.heads, 2 * config.dim, config.dropout, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(config.dim)
        self.cross = nn.MultiheadAttention(config.dim, config.heads, dropout=config.dropout, batch_first=True)
        self.cross_scale = config.cross_scale

    def forward(self, audio: torch.Tensor, visual: torch.Tensor | None, visual_keep: torch.Tensor) -> torch.Tensor:
        """``audio`` ``(B, N, D)``, ``visual`` ``(B, N, D)`` or None, ``visual_keep`` ``(B,)`` -> ``(B, N, D)``."""
        audio = self.encoder(audio)
        if visual is None:
            return audio
        update, _ = self.cross(self.norm(audio), visual, visual, need_weights=False)
        return audio + self.cross_scale * update * visual_keep[:, None, None].to(update.dtype)


class EmotionEmbedder(nn.Module):
    """Audio and/or expression features of a clip -> emotion prior (see the module docstring)."""

    def __init__(self, config: EmbedderConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_in = nn.Linear(config.audio_dim, config.dim)
        self.visual_in = nn.Linear(config.visual_dim, config.dim)
        self.audio_null = nn.Parameter(torch.zeros(config.dim))
        self.position = nn.Parameter(torch.randn(config.max_frames, config.dim) * 0.02)
        self.layers = nn.ModuleList(CrossModalLayer(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.pool = nn.Linear(config.dim, 1)

    def forward(
        self,
        audio: torch.Tensor | None,
        visual: torch.Tensor | None,
        *,
        audio_keep: torch.Tensor | None = None,
        visual_keep: torch.Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> EmbedderOutput:
        """Embed clips.

        Args:
            audio: ``(B, N, audio_dim)`` or None (no audio for any clip).
            visual: ``(B, N, visual_dim)`` or None.
            audio_keep / visual_keep: ``(B,)`` bool, False drops that modality for that clip
                (modality dropout); default all True.
            sample: draw ``mu + sigma * eps`` (training) instead of returning ``mu``.
            generator: for ``eps``.
        """
        if audio is None and visual is None:
            raise ValueError("The emotion embedder needs audio or visual features.")
        ref = audio if audio is not None else visual
        batch, frames = ref.shape[:2]
        if frames > self.config.max_frames:
            raise ValueError(f"{frames} frames; this embedder takes at most {self.config.max_frames}.")
        ones = torch.ones(batch, dtype=torch.bool, device=ref.device)
        audio_keep = ones if audio_keep is None else audio_keep
        visual_keep = ones if visual_keep is None else visual_keep
        null = self.audio_null.expand(batch, frames, -1)
        stream = null if audio is None else torch.where(audio_keep[:, None, None], self.audio_in(audio), null)
        stream = stream + self.position[:frames]
        vis = None if visual is None else self.visual_in(visual) + self.position[:frames]
        for layer in self.layers:
            stream = layer(stream, vis, visual_keep)
        stream = self.norm(stream)
        weights = torch.softmax(self.pool(stream), dim=1)  # (B, N, 1)
        mu = (weights * stream).sum(dim=1)
        var = (weights * (stream - mu[:, None]) ** 2).sum(dim=1)
        sigma = var.clamp_min(1e-12).sqrt()
        if not sample:
            return EmbedderOutput(mu, sigma, mu)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return EmbedderOutput(mu, sigma, mu + sigma * eps)
