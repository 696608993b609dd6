"""The emotion bank: a learned codebook of emotion prototypes with nearest-code (VQ) retrieval."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

COMMITMENT_COST = 0.25


class BankLookup(NamedTuple):
    """Result of :meth:`EmotionBank.forward`.

    Attributes:
        quantized: ``(*batch, dim)`` nearest codes with the straight-through estimator
            (value of the code, gradient of the projected prior).
        vq_loss: ``()`` codebook loss ``mse(code, sg[z]) + 0.25 * mse(sg[code], z)``.
        indices: ``(n, 1)`` index of the nearest code per prior, ``n = prod(batch)``.
        distances: ``(n, num_codes)`` squared distances used for the choice.
    """

    quantized: torch.Tensor
    vq_loss: torch.Tensor
    indices: torch.Tensor
    distances: torch.Tensor


class EmotionBank(nn.Module):
    """Projects an emotion prior to the model width and retrieves its nearest emotion prototype.

    Parameter names ``fc`` and ``codebook`` match ``emo_model.pth`` (under ``codebook.``).

    Args:
        in_dim: width of the emotion prior (256 in the release).
        dim: width of the codes (1024).
        num_codes: number of prototypes (64).
    """

    def __init__(self, in_dim: int, dim: int, num_codes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, dim)
        self.codebook = nn.Embedding(num_codes, dim)

    @property
    def codes(self) -> torch.Tensor:
        """``(num_codes, dim)`` the prototype table."""
        return self.codebook.weight

    def forward(self, prior: torch.Tensor) -> BankLookup:
        """Args:
        prior: ``(*batch, in_dim)`` emotion priors.
        """
        z = self.fc(prior)
        flat = z.reshape(-1, z.shape[-1])
        codes = self.codes
        distances = flat.pow(2).sum(dim=1, keepdim=True) + codes.pow(2).sum(dim=1) - 2 * flat @ codes.t()
        indices = distances.argmin(dim=1, keepdim=True)
        nearest = codes[indices[:, 0]].view_as(z)
        vq_loss = F.mse_loss(nearest, z.detach()) + COMMITMENT_COST * F.mse_loss(nearest.detach(), z)
        quantized = z + (nearest - z).detach()
        return BankLookup(quantized, vq_loss, indices, distances)
