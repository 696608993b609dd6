"""Pose guider (``pose_guider.pth``): face-mask video -> features added after the UNet's ``conv_in``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


class PoseGuider(nn.Module):
    """Small per-frame CNN with three stride-2 stages (x1/8 resolution).

    ``conv_in`` 3x3 + SiLU, then per stage a 3x3 conv and a stride-2 3x3 conv, each + SiLU, then
    ``conv_out`` 3x3 (no activation). Parameter names match ``pose_guider.pth``.

    Args:
        out_channels: feature width, equal to the UNet's first block width (320).
        block_out_channels: stage widths (16, 32, 96, 256 in the release).
        in_channels: input channels (3).
    """

    def __init__(self, out_channels: int, block_out_channels: Sequence[int], in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in pairwise(block_out_channels):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> PoseGuider:
        """Build with every size inferred from the tensor shapes."""
        n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        widths = [state["conv_in.weight"].shape[0]]
        widths += [state[f"blocks.{i}.weight"].shape[0] for i in range(1, n_blocks, 2)]
        out_channels, _, _, _ = state["conv_out.weight"].shape
        return cls(out_channels, widths, in_channels=state["conv_in.weight"].shape[1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Args:
            frames: ``(n, in_channels, H, W)`` independent frames (fold batch and time into ``n``).

        Returns:
            ``(n, out_channels, H/8, W/8)``.
        """
        x = F.silu(self.conv_in(frames))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)

    def forward_video(self, video: torch.Tensor) -> torch.Tensor:
        """Official layout: ``(b, c, f, H, W)`` -> ``(b, out_channels, f, H/8, W/8)``, frame by frame."""
        b, c, f, h, w = video.shape
        out = self(video.transpose(1, 2).reshape(b * f, c, h, w))
        return out.reshape(b, f, *out.shape[1:]).transpose(1, 2)
