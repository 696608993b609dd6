"""Paste generated face-crop frames back into the full original image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import InputError


def feather_mask(height: int, width: int, feather: int) -> torch.Tensor:
    """``(height, width)`` weights: 1 inside, falling linearly to 0 over ``feather`` pixels at each edge."""
    if feather <= 0:
        return torch.ones(height, width)

    def ramp(n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)
        return ((torch.minimum(pos, n - 1 - pos) + 1) / feather).clamp(max=1.0)

    return ramp(height)[:, None] * ramp(width)[None, :]


def paste_back_bytes(num_frames: int, height: int, width: int, box: Sequence[int]) -> int:
    """Memory :func:`paste_back` needs at its peak: the full-size float frames plus four crop-size stacks
    (the resized frames, their clamped copy and the two blend terms)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return num_frames * 3 * 4 * (height * width + 4 * (x2 - x1) * (y2 - y1))


def paste_back(frames: torch.Tensor, original: torch.Tensor, box: Sequence[int], feather: int = 16) -> torch.Tensor:
    """Resize ``frames`` to the crop ``box`` and blend them into ``original``.

    Args:
        frames: ``(T, h, w, 3)`` float in [0, 1], the generated video of the crop.
        original: ``(H, W, 3)`` float in [0, 1], the image the crop was taken from.
        box: ``(x1, y1, x2, y2)`` integer crop box in ``original``'s pixels.
        feather: width in pixels of the soft edge (0 = hard paste).

    Returns:
        ``(T, H, W, 3)`` full-size frames, on ``frames``' device.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    height, width = original.shape[:2]
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise InputError(
            f"The crop box {tuple(box)} does not fit the {width}x{height} original image: connect the same "
            "image that went into DICE-Talk Face Crop."
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"Expected frames of shape (T, H, W, 3); got {tuple(frames.shape)}.")
    resized = (
        F.interpolate(
            frames.permute(0, 3, 1, 2).float(),
            size=(y2 - y1, x2 - x1),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        .clamp(0, 1)
        .permute(0, 2, 3, 1)
    )
    weight = feather_mask(y2 - y1, x2 - x1, feather).to(resized)[None, :, :, None]
    out = original.to(resized).expand(frames.shape[0], -1, -1, -1).clone()
    region = out[:, y1:y2, x1:x2]
    out[:, y1:y2, x1:x2] = weight * resized + (1 - weight) * region
    return out
