"""Bringing any supported still image to one layout: an (H, W, 3) uint8 RGB numpy array.

Accepted: numpy arrays and torch tensors laid out HWC (or a batch of exactly one, 1HWC, as ComfyUI's
IMAGE type is), and PIL images of any mode. Pixel types: uint8 as is, uint16 (16-bit) mapped to the
nearest 8-bit level, float taken as [0, 1] and mapped with ``round(x * 255)`` (the exact inverse of
ComfyUI's ``x / 255``). Channels: gray (1) is repeated to RGB, gray+alpha (2) and RGBA (4) lose their
alpha channel without compositing, as PIL's ``convert("RGB")`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import InputError

MIN_IMAGE_SIDE = 64
ROWS_PER_BLOCK = 256
"""Float images are converted this many rows at a time, so an 8K image needs no full-size float64 copies."""
_PIL_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_UINT16_TO_UINT8 = 257.0


def as_rgb_u8(image: Any, *, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 RGB array.

    Raises:
        InputError: a batch of several images, an unsupported layout or pixel type, values that are
            not finite, or an image whose shorter side is under ``min_side`` pixels.
    """
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu")
        array = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise InputError(
            f"Unsupported image object {type(image).__name__}: pass a PIL image, a numpy array or a "
            "torch tensor laid out (height, width, channels)."
        )
    rgb = _to_three_channels(_to_u8(_single_image(array)))
    _check_size(rgb, min_side)
    return np.ascontiguousarray(rgb)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """PIL image -> array; 16/32-bit integer modes keep their depth, everything else becomes RGB."""
    if image.mode not in _PIL_INTEGER_MODES:
        return np.asarray(image.convert("RGB"))
    values = np.asarray(image)
    if values.min() < 0 or values.max() > np.iinfo(np.uint16).max:
        raise InputError(
            f"PIL image of mode {image.mode} has values outside 0..65535: save it as an 8-bit or 16-bit image."
        )
    return values.astype(np.uint16)


def _single_image(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, C) or (1, H, W, C) -> (H, W) or (H, W, C)."""
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise InputError(
                f"Got a batch of {array.shape[0]} images where one portrait is expected: pick a single "
                "image (in ComfyUI, for example with an 'ImageFromBatch' node)."
            )
        array = array[0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2, 3, 4)):
        return array
    raise InputError(
        f"Image of shape {tuple(array.shape)} is not laid out (height, width, channels) with 1 to 4 "
        "channels: convert it to an RGB image first."
    )


def _to_u8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 -> round(x / 257); float in [0, 1] -> round(x * 255), clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.rint(array / _UINT16_TO_UINT8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_u8(array)
    raise InputError(f"Unsupported pixel type {array.dtype}: use uint8, uint16 (16-bit) or float values in [0, 1].")


def _float_to_u8(array: np.ndarray) -> np.ndarray:
    """round(x * 255) clipped to 0..255, computed in float64 one block of rows at a time."""
    out = np.empty(array.shape, np.uint8)
    for start in range(0, array.shape[0], ROWS_PER_BLOCK):
        block = array[start : start + ROWS_PER_BLOCK].astype(np.float64)
        if not np.isfinite(block).all():
            raise InputError("The image holds NaN or infinite values: fix the node that produced it.")
        block *= 255.0
        out[start : start + ROWS_PER_BLOCK] = np.clip(np.rint(block, out=block), 0, 255, out=block)
    return out


def _to_three_channels(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1..4) uint8 -> (H, W, 3): gray is repeated, alpha is dropped."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    return array[:, :, :3]


def _check_size(rgb: np.ndarray, min_side: int) -> None:
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        raise InputError(
            f"The image is {width}x{height} pixels; at least {min_side} pixels are needed on the shorter "
            "side to find and animate a face: use a larger portrait."
        )
