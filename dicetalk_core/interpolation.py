"""RIFE x2 frame interpolation: 12.5 fps generated frames -> 25 fps video.

DICE-Talk ships RIFE's IFNet "HDv3" (three coarse-to-fine flow blocks of 90 channels) as
``checkpoints/RIFE/flownet.pkl`` and inserts one frame between every consecutive pair, so N frames
become 2N-1 (``[f0, m0, f1, ..., m(N-2), f(N-1)]``). The middle frame is the flow-warped blend of the
two neighbours at time 0.5, computed in float32 with the block scales (4, 2, 1).

The weights are read by :func:`~dicetalk_core.loaders.rife.load_rife`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CancelledError, InputError
from .fast_mode import autocast_context

logger = logging.getLogger(__name__)

BLOCK_SCALES = (4.0, 2.0, 1.0)
"""Downsampling factor of each flow block, coarse to fine (the official ``scale_list`` at scale 1)."""

SIZE_MULTIPLE = 16
"""Frame sides must be multiples of this for the blocks' down/up-sampling to round-trip."""

_CHANNELS = 90
_IN_CHANNELS = 3 + 3 + 1 + 4  # both warped images, the blend mask, the 4-channel flow


class _ConvPReLU(nn.Sequential):
    """3x3 convolution with bias followed by a per-channel PReLU (keys ``0.*`` and ``1.weight``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            nn.PReLU(out_channels),
        )


def _residual_pair(channels: int) -> nn.Sequential:
    return nn.Sequential(_ConvPReLU(channels, channels), _ConvPReLU(channels, channels))


def _upsampling_head(channels: int, out_channels: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions: (B,c,h,w) -> (B,out,4h,4w)."""
    return nn.Sequential(
        nn.ConvTranspose2d(channels, channels // 2, kernel_size=4, stride=2, padding=1),
        nn.PReLU(channels // 2),
        nn.ConvTranspose2d(channels // 2, out_channels, kernel_size=4, stride=2, padding=1),
    )


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class IFBlock(nn.Module):
    """One flow block: predicts a flow update and a blend-mask update at 1/``scale`` resolution."""

    def __init__(self, in_channels: int = _IN_CHANNELS, channels: int = _CHANNELS) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(
            _ConvPReLU(in_channels, channels // 2, stride=2), _ConvPReLU(channels // 2, channels, stride=2)
        )
        self.convblock0 = _residual_pair(channels)
        self.convblock1 = _residual_pair(channels)
        self.convblock2 = _residual_pair(channels)
        self.convblock3 = _residual_pair(channels)
        self.conv1 = _upsampling_head(channels, 4)
        self.conv2 = _upsampling_head(channels, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B,7,H,W) images + mask, flow (B,4,H,W) in pixels -> flow update (B,4,H,W), mask (B,1,H,W)."""
        x = _resize(x, 1.0 / scale)
        flow = _resize(flow, 1.0 / scale) / scale
        feat = self.conv0(torch.cat((x, flow), 1))
        for residual in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            feat = residual(feat) + feat
        flow = _resize(self.conv1(feat), scale) * scale
        mask = _resize(self.conv2(feat), scale)
        return flow, mask


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` (B,C,H,W) by ``flow`` (B,2,H,W), in pixels (x then y).

    Bilinear sampling with border padding on an ``align_corners=True`` grid, as RIFE does.
    """
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(b, -1, h, -1)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(b, -1, -1, w)
    normalised = torch.cat(
        (flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)), 1
    )
    grid = (torch.cat((xs, ys), 1) + normalised).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """RIFE IFNet HDv3 at inference: two frames -> the frame halfway between them.

    Parameter names match the official ``flownet.pkl`` once ``module.`` is stripped and the
    training-only ``block_tea.*`` keys are dropped (see :func:`~dicetalk_core.loaders.rife.load_rife`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock()
        self.block1 = IFBlock()
        self.block2 = IFBlock()

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """img0, img1 (B,3,H,W) in [0,1], H and W multiples of 16 -> middle frame (B,3,H,W), unclamped.

        Each block refines a symmetric estimate: it runs once on (img0, img1) and once on the
        swapped pair, and the two updates are averaged.
        """
        b, _, h, w = img0.shape
        flow = img0.new_zeros(b, 4, h, w)
        mask = img0.new_zeros(b, 1, h, w)
        warped0, warped1 = img0, img1
        for block, scale in zip((self.block0, self.block1, self.block2), BLOCK_SCALES, strict=True):
            f0, m0 = block(torch.cat((warped0, warped1, mask), 1), flow, scale)
            f1, m1 = block(torch.cat((warped1, warped0, -mask), 1), _swap_flow(flow), scale)
            flow = flow + (f0 + _swap_flow(f1)) / 2
            mask = mask + (m0 - m1) / 2
            warped0 = warp(img0, flow[:, :2])
            warped1 = warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def _swap_flow(flow: torch.Tensor) -> torch.Tensor:
    """(B,4,H,W) flows (to img0, to img1) -> (to img1, to img0)."""
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


def interpolate_frames(
    frames: torch.Tensor,
    model: IFNet,
    *,
    batch_size: int = 1,
    autocast: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Insert the RIFE middle frame between every consecutive pair.

    Args:
        frames: (N,3,H,W) float in [0,1], N >= 1, on any device (typically the CPU).
        model: an :class:`IFNet`; each batch is moved to its device and dtype.
        batch_size: frame pairs per model call; bounds the device memory. The default 1 runs each pair
            alone, as the official loop does (larger batches differ by float reassociation, ~2e-6).
        autocast: None, or ``"fp16"``/``"bf16"``: the model runs under ``torch.autocast`` on its device
            (a fast-mode option: half-precision convolutions and warps; the middles are rounded at ~1e-2).
        progress: called as ``progress(pairs_done, pairs_total)`` after each batch.
        should_stop: polled before each batch; when it returns True, :class:`CancelledError` is raised.

    Returns:
        (2N-1,3,H,W) on ``frames``' device and dtype: ``[f0, m0, f1, ..., f(N-1)]``, middles clamped to
        [0,1]. Sides that are not multiples of 16 (the official code requires them, DICE-Talk's sizes
        are multiples of 64) are edge-padded at the right and bottom for the model, then cropped back.

    Raises:
        InputError: wrong shape or dtype, no frames, or ``batch_size < 1``.
        CancelledError: ``should_stop`` returned True.
    """
    _check_frames(frames, batch_size)
    n = frames.shape[0]
    out = frames.new_empty((2 * n - 1, *frames.shape[1:]))
    out[0::2] = frames
    pairs = n - 1
    param = next(model.parameters())
    with torch.no_grad():
        for start in range(0, pairs, batch_size):
            if should_stop is not None and should_stop():
                raise CancelledError(f"Frame interpolation cancelled after {start} of {pairs} frame pairs.")
            stop = min(start + batch_size, pairs)
            img0 = frames[start:stop].to(device=param.device, dtype=param.dtype)
            img1 = frames[start + 1 : stop + 1].to(device=param.device, dtype=param.dtype)
            with autocast_context(autocast, param.device):
                middle = _middle(model, img0, img1)
            out[2 * start + 1 : 2 * stop : 2] = middle.to(out)
            if progress is not None:
                progress(stop, pairs)
    return out


def _check_frames(frames: torch.Tensor, batch_size: int) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise InputError(f"Frame interpolation needs frames shaped (N,3,H,W); got {tuple(frames.shape)}.")
    if not frames.is_floating_point():
        raise InputError(f"Frame interpolation needs float frames in [0,1]; got {frames.dtype}.")
    if frames.shape[0] == 0:
        raise InputError("Frame interpolation got no frames.")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1; got {batch_size}.")


def _middle(model: IFNet, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) pairs -> clamped middle frames (B,3,H,W), padding to multiples of 16 if needed."""
    h, w = img0.shape[-2:]
    pad = (0, -w % SIZE_MULTIPLE, 0, -h % SIZE_MULTIPLE)
    if any(pad):
        img0 = F.pad(img0, pad, mode="replicate")
        img1 = F.pad(img1, pad, mode="replicate")
    return model(img0, img1)[..., :h, :w].clamp(0, 1)
