"""Synthetic clips with known emotions, for tests and smoke runs of the embedder training.

Each clip has an identity and an emotion. Its visual features are the emotion's prototype (scaled by
an intensity that drifts over the frames) plus the identity's own offset plus noise; its audio
features are mostly identity (a speaker's voice) with a weaker emotion component. An embedder that
clusters these by emotion has to ignore who is speaking, which is the point of the real objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticClips:
    """A fixed random world of emotions and identities (``seed``); :meth:`batch` draws clips from it."""

    num_emotions: int = 8
    num_identities: int = 16
    audio_dim: int = 32
    visual_dim: int = 16
    frames: int = 16
    noise: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.visual_emotion = torch.randn(self.num_emotions, self.visual_dim, generator=g)
        self.audio_emotion = 0.5 * torch.randn(self.num_emotions, self.audio_dim, generator=g)
        self.visual_identity = torch.randn(self.num_identities, self.visual_dim, generator=g)
        self.audio_identity = 1.5 * torch.randn(self.num_identities, self.audio_dim, generator=g)

    def clips(
        self, emotions: torch.Tensor, identities: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(audio (B, N, audio_dim), visual (B, N, visual_dim))`` for the given labels ``(B,)``."""
        b, n = emotions.shape[0], self.frames
        intensity = 0.6 + 0.4 * torch.rand(b, 1, 1, generator=generator)
        drift = 1.0 + 0.2 * torch.sin(torch.linspace(0, 3.14, n))[None, :, None]
        visual = self.visual_emotion[emotions][:, None] * intensity * drift + self.visual_identity[identities][:, None]
        audio = self.audio_emotion[emotions][:, None] * intensity + self.audio_identity[identities][:, None]
        visual = visual + self.noise * torch.randn(b, n, self.visual_dim, generator=generator)
        audio = audio + self.noise * torch.randn(b, n, self.audio_dim, generator=generator)
        return audio, visual

    def batch(
        self,
        emotions_per_batch: int,
        clips_per_emotion: int,
        generator: torch.Generator,
        identities: range | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(audio, visual, emotion labels (B,))``: ``clips_per_emotion`` clips of each of some random emotions."""
        pool = torch.tensor(list(identities if identities is not None else range(self.num_identities)))
        chosen = torch.randperm(self.num_emotions, generator=generator)[:emotions_per_batch]
        emotions = chosen.repeat_interleave(clips_per_emotion)
        ids = pool[torch.randint(len(pool), (emotions.shape[0],), generator=generator)]
        audio, visual = self.clips(emotions, ids, generator)
        return audio, visual, emotions
