"""The DICE-Talk emotion model (``emo_model.pth``): emotion prior -> emotion context tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .audio_projection import TokenProjection
from .emotion_bank import EmotionBank

OFFICIAL_NUM_HEADS = 8


class BankAttention(nn.Module):
    """Multi-head attention of prior tokens (queries) over bank tokens (keys/values).

    Separate ``fc_q``/``fc_k``/``fc_v`` linears, heads split on the channel axis,
    ``softmax(Q K^T / sqrt(head_dim)) V``; no output projection and no norm.

    Args:
        dim: token width.
        num_heads: number of heads (8 in the release; not recoverable from the weights).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"token width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.fc_q = nn.Linear(dim, dim)
        self.fc_k = nn.Linear(dim, dim)
        self.fc_v = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, -1).transpose(-3, -2)

    def keys_values(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``bank (b, f, tk, dim)`` -> per-head keys and values ``(b, f, heads, tk, dim / heads)``."""
        return self._split(self.fc_k(bank)), self._split(self.fc_v(bank))

    def attend(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``queries (b, f, tq, dim)`` over :meth:`keys_values` -> ``(b, f, tq, dim)``."""
        q = self._split(self.fc_q(queries))
        weights = torch.softmax(q @ keys.transpose(-2, -1) / (keys.shape[-1] ** 0.5), dim=-1)
        out = (weights @ values).transpose(-3, -2)
        return out.reshape(*out.shape[:-2], -1)

    def forward(self, queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        """Args:
            queries: ``(b, f, tq, dim)``.
            bank: ``(b or 1, f, tk, dim)``.

        Returns:
            ``(b, f, tq, dim)``.
        """
        return self.attend(queries, *self.keys_values(bank))


class EmotionClassifier(nn.Module):
    """Training-only emotion discrimination head (paper Eq. 16): pooled UNet features -> class logits.

    ``AdaptiveAvgPool2d(1) -> fc1 -> ReLU -> Dropout -> fc2 -> ReLU -> Dropout -> fc3``.
    Release sizes: 1280 -> 512 -> 256 -> 22 classes.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, int], num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args:
            features: ``(b, in_dim, h, w)`` feature maps.

        Returns:
            ``(b, num_classes)`` logits.
        """
        x = F.adaptive_avg_pool2d(features, 1).flatten(1)
        x = self.dropout(torch.relu(self.fc1(x)))
        x = self.dropout(torch.relu(self.fc2(x)))
        return self.fc3(x)


class EmotionTokens(NamedTuple):
    """Result of :meth:`EmotionModel.forward`: ``tokens`` ``(b, f, num_tokens, dim)`` and ``vq_loss`` ``()``."""

    tokens: torch.Tensor
    vq_loss: torch.Tensor


class EmotionModel(nn.Module):
    """Emotion prior -> emotion tokens through the emotion bank.

    The prior is projected to query tokens (``emo_linear``); keys and values come from the bank
    (``kv_tokens_linear`` applied to the retrieved code, or to every code in full-bank mode) and
    :class:`BankAttention` mixes them. Parameter names match ``emo_model.pth``.

    Args:
        in_dim: prior width (256). dim: token width (1024). intermediate_dim: MLP width (1024).
        num_tokens: tokens per frame (32). num_codes: bank size (64). num_heads: attention heads (8).
        classifier: ``(in_dim, hidden1, hidden2, num_classes)`` of the training head (1280, 512, 256, 22).
    """

    def __init__(
        self,
        in_dim: int = 256,
        dim: int = 1024,
        intermediate_dim: int = 1024,
        num_tokens: int = 32,
        num_codes: int = 64,
        num_heads: int = OFFICIAL_NUM_HEADS,
        classifier: tuple[int, int, int, int] = (1280, 512, 256, 22),
    ) -> None:
        super().__init__()
        self.emo_linear = TokenProjection(in_dim, intermediate_dim, dim, num_tokens)
        self.kv_tokens_linear = TokenProjection(dim, intermediate_dim, dim, num_tokens)
        self.codebook = EmotionBank(in_dim, dim, num_codes)
        self.attention = BankAttention(dim, num_heads)
        self.classifier = EmotionClassifier(classifier[0], (classifier[1], classifier[2]), classifier[3])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], num_heads: int = OFFICIAL_NUM_HEADS) -> EmotionModel:
        """Build with every size inferred from ``emo_model.pth`` shapes (the head count is not in the weights)."""
        dim, in_dim = state["codebook.fc.weight"].shape
        return cls(
            in_dim=in_dim,
            dim=dim,
            intermediate_dim=state["emo_linear.proj1.weight"].shape[0],
            num_tokens=state["emo_linear.proj3.weight"].shape[0] // dim,
            num_codes=state["codebook.codebook.weight"].shape[0],
            num_heads=num_heads,
            classifier=(
                state["classifier.fc1.weight"].shape[1],
                state["classifier.fc1.weight"].shape[0],
                state["classifier.fc2.weight"].shape[0],
                state["classifier.fc3.weight"].shape[0],
            ),
        )

    def bank_tokens(self) -> torch.Tensor:
        """``(1, 1, num_codes * num_tokens, dim)`` key/value tokens of the whole bank, code-major."""
        codes = self.codebook.codes
        tokens = self.kv_tokens_linear(codes, flat_dims=1)
        return tokens.reshape(1, 1, -1, tokens.shape[-1])

    def forward(self, prior: torch.Tensor, mask: torch.Tensor | None = None, retrieval: bool = False) -> EmotionTokens:
        """Emotion tokens for a batch of priors.

        Args:
            prior: ``(b, f, *, in_dim)`` emotion priors (the release feeds ``(1, 1, 1, 1, 256)``).
            mask: optional bool ``(b, f, *, 1)``; True drops that prior (and its retrieved code) to zeros.
                The VQ loss is computed before masking.
            retrieval: True attends to the nearest code only (training mode); False (the release's
                inference default) attends to the whole bank and returns a zero VQ loss.

        Returns:
            :class:`EmotionTokens` with tokens ``(b, f, num_tokens, dim)``.
        """
        lookup = self.codebook(prior)
        retrieved, vq_loss = lookup.quantized, lookup.vq_loss
        if mask is not None:
            prior = torch.where(mask, torch.zeros_like(prior), prior)
            retrieved = torch.where(mask, torch.zeros_like(retrieved), retrieved)
        flat_dims = prior.ndim - 2
        queries = self.emo_linear(prior, flat_dims=flat_dims)
        if retrieval:
            bank = self.kv_tokens_linear(retrieved, flat_dims=flat_dims)
        else:
            bank = self.bank_tokens().expand(1, prior.shape[1], -1, -1)
            vq_loss = torch.zeros_like(vq_loss)
        return EmotionTokens(self.attention(queries, bank), vq_loss)

    def prior_tokens(self, priors: torch.Tensor, retrieval: bool = False) -> torch.Tensor:
        """Tokens of each prior ``(K, in_dim)`` -> ``(K, num_tokens, dim)``, each one bit for bit what
        :meth:`forward` gives for that prior alone (the release's ``(1, 1, 1, 1, in_dim)`` input).

        Priors go one at a time so every matrix product has the shapes of the single-prior forward (a
        batched product may round differently); in full-bank mode the bank's keys and values, the same
        for every prior and most of the work, are computed once.
        """
        single = priors.reshape(-1, 1, 1, 1, 1, priors.shape[-1])
        if retrieval:
            return torch.cat([self(prior, retrieval=True).tokens[0] for prior in single])
        keys, values = self.attention.keys_values(self.bank_tokens())
        return torch.cat([self.attention.attend(self.emo_linear(p, flat_dims=3), keys, values)[0] for p in single])
