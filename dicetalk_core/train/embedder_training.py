"""Training loop of the emotion embedder (InfoNCE with modality dropout) and its cluster metrics.

Each step draws ``emotions_per_batch`` emotions with ``clips_per_emotion`` clips each, drops one
modality for a random share of the clips (never both; paper section 3.1), embeds them with sampling
(``s = mu + sigma * eps``) and minimises :func:`~.losses.info_nce` over the emotion labels.

Cluster quality on held-out clips (identities not seen in training), on ``mu / |mu|`` (InfoNCE
compares directions, so lengths are left out):

* ``d_intra``: mean distance between two clips of the same emotion;
* ``d_inter``: mean distance between the centroids of two different emotions.
  Their ratio grows as the embedder separates emotions regardless of identity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import save_embedder
from .embedder import EmbedderConfig, EmotionEmbedder
from .losses import info_nce
from .synthetic import SyntheticClips

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 300
    lr: float = 1e-3
    emotions_per_batch: int = 6
    clips_per_emotion: int = 4
    temperature: float = 0.1
    modality_dropout: float = 0.3
    seed: int = 0
    save_every: int = 0
    train_identities: range = field(default_factory=lambda: range(0, 12))
    eval_identities: range = field(default_factory=lambda: range(12, 16))


@dataclass(frozen=True)
class ClusterMetrics:
    d_intra: float
    d_inter: float

    @property
    def ratio(self) -> float:
        return self.d_inter / self.d_intra


def modality_masks(batch: int, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(audio_keep, visual_keep)`` ``(B,)``: a ``rate`` share of clips lose one modality (half each), never both."""
    drop = torch.rand(batch, generator=generator) < rate
    which = torch.rand(batch, generator=generator) < 0.5
    return ~(drop & which), ~(drop & ~which)


@torch.no_grad()
def cluster_metrics(model: EmotionEmbedder, data: SyntheticClips, identities: range, clips: int = 8, seed: int = 1):
    """:class:`ClusterMetrics` of ``mu`` over ``clips`` held-out clips of every emotion."""
    g = torch.Generator().manual_seed(seed)
    emotions = torch.arange(data.num_emotions).repeat_interleave(clips)
    pool = torch.tensor(list(identities))
    ids = pool[torch.randint(len(pool), (emotions.shape[0],), generator=g)]
    audio, visual = data.clips(emotions, ids, g)
    was_training = model.training
    model.eval()
    mu = torch.nn.functional.normalize(model(audio, visual).mu, dim=-1)
    model.train(was_training)
    intra = []
    for e in range(data.num_emotions):
        group = mu[emotions == e]
        dist = torch.cdist(group, group)
        intra.append(dist.sum() / (len(group) * (len(group) - 1)))
    centroids = torch.stack([mu[emotions == e].mean(0) for e in range(data.num_emotions)])
    dist = torch.cdist(centroids, centroids)
    inter = dist.sum() / (data.num_emotions * (data.num_emotions - 1))
    return ClusterMetrics(torch.stack(intra).mean().item(), inter.item())


def train_embedder(
    config: EmbedderConfig,
    data: SyntheticClips,
    settings: TrainSettings,
    out_dir: Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[EmotionEmbedder, list[float]]:
    """Train on synthetic clips; returns the model and the loss of every step.

    Checkpoints go to ``out_dir/embedder_step<k>.safetensors`` every ``save_every`` steps (0: only the
    final ``out_dir/embedder.safetensors``).
    """
    torch.manual_seed(settings.seed)
    model = EmotionEmbedder(config).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    losses = []
    for step in range(1, settings.steps + 1):
        audio, visual, labels = data.batch(
            settings.emotions_per_batch, settings.clips_per_emotion, g, settings.train_identities
        )
        audio_keep, visual_keep = modality_masks(labels.shape[0], settings.modality_dropout, g)
        out = model(audio, visual, audio_keep=audio_keep, visual_keep=visual_keep, sample=True, generator=g)
        loss = info_nce(out.sample, labels, settings.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        if out_dir is not None and settings.save_every and step % settings.save_every == 0:
            save_embedder(out_dir / f"embedder_step{step}", model, step)
    if out_dir is not None:
        save_embedder(out_dir / "embedder", model, settings.steps, {"final_loss": losses[-1]})
    return model.eval(), losses
