"""The emotion path's training objectives as reusable functions (paper Eqs. 2-8, 11, 16).

* :func:`info_nce`: contrastive loss of the embedder. Cosine similarities over a temperature; for
  every anchor ``i`` with positives ``P(i)`` (same label, not itself)::

      L_i = -log( sum_{p in P(i)} exp(c_ip / tau) / (sum_{a != i} exp(c_ia / tau) + stability) )

  averaged over anchors that have a positive. ``stability`` is the paper's "fixed constant" for
  numerical stability; where exactly it enters is not stated, this puts it in the denominator.
* :func:`vq_objective`: the emotion bank's codebook loss ``|sg[z] - C_k|^2 + beta |z - sg[C_k]|^2``
  (beta = 0.25, MSE means), exactly what ``EmotionBank`` computes.
* :func:`emotion_discrimination_loss`: cross-entropy of the classifier head on pooled UNet features,
  averaged over the sampled timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models.emotion_bank import EmotionBank
from ..models.emotion_model import EmotionClassifier


def info_nce(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, stability: float = 1e-6
) -> torch.Tensor:
    """Supervised InfoNCE over a batch.

    Args:
        embeddings: ``(B, D)``.
        labels: ``(B,)`` ints; equal labels are positives (same emotion and identity, or same video).
        temperature: ``tau``.
        stability: constant added to the denominator.

    Returns:
        ``()`` mean loss over anchors with at least one positive.
    """
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    unit = F.normalize(embeddings, dim=-1)
    logits = unit @ unit.t() / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    has_positive = positive.any(dim=1)
    if not has_positive.any():
        raise ValueError("No anchor has a positive: put at least two clips of one label in the batch.")
    logits = logits.masked_fill(eye, float("-inf"))
    shift = logits.max(dim=1, keepdim=True).values.detach()
    exp = (logits - shift).exp()
    numerator = (exp * positive).sum(dim=1)
    denominator = exp.sum(dim=1) + stability * torch.exp(-shift[:, 0])
    loss = -(numerator.clamp_min(1e-30).log() - denominator.log())
    return loss[has_positive].mean()


def vq_objective(bank: EmotionBank, priors: torch.Tensor) -> torch.Tensor:
    """``()`` codebook + 0.25 x commitment loss of ``priors`` ``(*, in_dim)`` against ``bank``'s codes."""
    return bank(priors).vq_loss


def emotion_discrimination_loss(
    classifier: EmotionClassifier, features: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of ``classifier`` over UNet feature maps.

    Args:
        features: one ``(B, C, h, w)`` map, or one per sampled timestep.
        labels: ``(B,)`` emotion classes.
    """
    maps = [features] if isinstance(features, torch.Tensor) else list(features)
    if not maps:
        raise ValueError("No feature maps given.")
    return torch.stack([F.cross_entropy(classifier(f), labels) for f in maps]).mean()
