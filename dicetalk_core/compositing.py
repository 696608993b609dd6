"""Paste generated face-crop frames back into the full original image.

Video encoders need even sides (H.264 in yuv420p stores colour per 2x2 pixels), while photos come in
any size. :func:`paste_back` can therefore return frames of an even size (:data:`EVEN_SIZES`): a photo
with an odd side loses (``"crop"``) or repeats (``"pad"``) its last row or column. ``"crop"`` is what
:func:`dicetalk_core.video_io.write_video` does to odd frames; ``"pad"`` keeps every pixel of the photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import InputError

EVEN_SIZES = ("crop", "pad")
"""How :func:`even_size` makes an odd side even: drop its last row/column, or repeat it."""


def even_size(height: int, width: int, even: str | None) -> tuple[int, int]:
    """``(height, width)`` made even as ``even`` says (one of :data:`EVEN_SIZES`); ``None`` keeps it."""
    if even is None:
        return height, width
    if even == "crop":
        size = (height - height % 2, width - width % 2)
        if min(size) == 0:
            raise InputError(
                f"A {width}x{height} picture cannot be cropped to an even size (a side would be 0 pixels): "
                "use a larger photo or pad it instead."
            )
        return size
    if even == "pad":
        return height + height % 2, width + width % 2
    raise InputError(f"The even-size rule must be one of {', '.join(EVEN_SIZES)}; got {even!r}.")


def feather_mask(height: int, width: int, feather: int) -> torch.Tensor:
    """``(height, width)`` weights: 1 inside, falling linearly to 0 over ``feather`` pixels at each edge."""
    if feather <= 0:
        return torch.ones(height, width)

    def ramp(n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)
        return ((torch.minimum(pos, n - 1 - pos) + 1) / feather).clamp(max=1.0)

    return ramp(height)[:, None] * ramp(width)[None, :]


def paste_back_bytes(num_frames: int, height: int, width: int, box: Sequence[int], even: str | None = None) -> int:
    """Memory :func:`paste_back` needs at its peak: the full-size float frames plus four crop-size stacks
    (the resized frames, their clamped copy and the two blend terms)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    out_height, out_width = even_size(height, width, even)
    return num_frames * 3 * 4 * (out_height * out_width + 4 * (x2 - x1) * (y2 - y1))


def paste_back(
    frames: torch.Tensor, original: torch.Tensor, box: Sequence[int], feather: int = 16, even: str | None = None
) -> torch.Tensor:
    """Resize ``frames`` to the crop ``box`` and blend them into ``original``.

    Args:
        frames: ``(T, h, w, 3)`` float in [0, 1], the generated video of the crop.
        original: ``(H, W, 3)`` float in [0, 1], the image the crop was taken from.
        box: ``(x1, y1, x2, y2)`` integer crop box in ``original``'s pixels.
        feather: width in pixels of the soft edge (0 = hard paste).
        even: ``None`` keeps the photo's size; ``"crop"``/``"pad"`` (:data:`EVEN_SIZES`) give frames of
            even sides, the same as cropping or edge-padding the full-size result, without a second copy.

    Returns:
        ``(T, H', W', 3)`` frames, on ``frames``' device: ``(H', W') = even_size(H, W, even)``.
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
    out_height, out_width = even_size(height, width, even)
    kept_height, kept_width = min(height, out_height), min(width, out_width)
    out = resized.new_empty((frames.shape[0], out_height, out_width, 3))
    out[:, :kept_height, :kept_width] = original[:kept_height, :kept_width].to(resized)
    # the part of the box inside the output (a cropped last row/column is simply not written)
    rows, cols = min(y2, out_height) - y1, min(x2, out_width) - x1
    region = out[:, y1 : y1 + rows, x1 : x1 + cols]
    weight, resized = weight[:, :rows, :cols], resized[:, :rows, :cols]
    out[:, y1 : y1 + rows, x1 : x1 + cols] = weight * resized + (1 - weight) * region
    if out_height > height:
        out[:, height] = out[:, height - 1]
    if out_width > width:
        out[:, :, width] = out[:, :, width - 1]
    return out
