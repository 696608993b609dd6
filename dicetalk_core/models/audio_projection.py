"""Audio projection: a whisper window per video frame -> audio context tokens (``audio_linear.pth``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class TokenProjection(nn.Module):
    """Three-layer MLP that turns one flat feature vector into ``num_tokens`` LayerNormed tokens.

    ``Linear -> ReLU -> Linear -> ReLU -> Linear``, reshaped to ``(num_tokens, token_dim)``, then
    ``LayerNorm(token_dim)``. Parameter names (``proj1``, ``proj2``, ``proj3``, ``norm``) match the
    official checkpoints. Used for the audio tokens and, inside the emotion model, for its query and
    key/value tokens.

    Args:
        input_dim: length of the flattened input vector.
        intermediate_dim: width of the two hidden layers.
        token_dim: width of every output token.
        num_tokens: number of output tokens.
    """

    def __init__(self, input_dim: int, intermediate_dim: int, token_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.token_dim = token_dim
        self.num_tokens = num_tokens
        self.proj1 = nn.Linear(input_dim, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, num_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], prefix: str = "") -> TokenProjection:
        """Build with every size inferred from the tensor shapes under ``prefix``."""
        intermediate_dim, input_dim = state[f"{prefix}proj1.weight"].shape
        token_dim = state[f"{prefix}norm.weight"].shape[0]
        num_tokens = state[f"{prefix}proj3.weight"].shape[0] // token_dim
        return cls(input_dim, intermediate_dim, token_dim, num_tokens)

    def forward(self, features: torch.Tensor, flat_dims: int) -> torch.Tensor:
        """Project features.

        Args:
            features: ``(*batch, *feature)`` where the last ``flat_dims`` dims hold ``input_dim`` values
                (flattened row-major: first feature dim slowest).
            flat_dims: how many trailing dims form one input vector.

        Returns:
            ``(*batch, num_tokens, token_dim)``.
        """
        batch_shape = features.shape[: features.ndim - flat_dims]
        x = features.reshape(-1, self.input_dim)
        x = torch.relu(self.proj1(x))
        x = torch.relu(self.proj2(x))
        tokens = self.proj3(x).reshape(-1, self.num_tokens, self.token_dim)
        return self.norm(tokens).reshape(*batch_shape, self.num_tokens, self.token_dim)


class AudioProjection(TokenProjection):
    """Whisper hidden-state window of one video frame -> audio context tokens.

    Official size: window 10 x 5 whisper states x 384 channels = 19200 inputs, hidden 1024,
    32 tokens x 1024.
    """

    def forward(self, windows: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Args:
            windows: ``(*batch, window, layers, channels)`` with ``window*layers*channels == input_dim``,
                flattened window-major, then layer, then channel.

        Returns:
            ``(*batch, num_tokens, token_dim)`` audio tokens.
        """
        return super().forward(windows, flat_dims=3)
