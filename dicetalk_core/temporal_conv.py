"""The temporal decoder's ``(k, 1, 1)`` convolutions run in row strips on the CPU: the same frames, less memory.

SVD's temporal VAE decoder mixes frames with ``Conv3d`` layers whose kernel is ``(3, 1, 1)``: they read
neighbouring frames at the same pixel only. On the CPU PyTorch computes a ``Conv3d`` by unfolding its
input into a column matrix of ``C_in x k`` rows per output pixel (im2col) and one matrix product. For a
10-frame clip at 256x256 with 32 channels that matrix is 240 MB on top of the 80 MB output; it was the
peak of the whole decode (``bench/official.py``).

A ``(k, 1, 1)`` kernel with no spatial padding makes every output row depend on the same input row only,
so the convolution can run on strips of rows, each with its own small column matrix. Every output value
is the same dot product; the matrix-product kernel may only sum it in another order for another strip
width: float rounding, up to one unit in the last place (0 over the whole ``medium`` bench decode at
256x256, ~1e-6 at some tiny test shapes, ``tests/test_temporal_conv.py``). Tensors whose column matrix
fits the budget run whole, unchanged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn

STRIP_BUDGET_BYTES = 32 * 2**20
"""Column-matrix bytes one strip may take (CPU ``Conv3d`` unfolds ``C_in x k`` values per output pixel)."""


def is_pointwise_in_space(conv: nn.Conv3d) -> bool:
    """Whether ``conv`` reads only its own pixel in space (kernel, stride and dilation 1, no padding there).

    Grouped convolutions do not qualify: the CPU runs them with kernels whose rounding depends on the width.
    """
    return (
        conv.groups == 1
        and tuple(conv.kernel_size[1:]) == (1, 1)
        and tuple(conv.stride[1:]) == (1, 1)
        and tuple(conv.dilation[1:]) == (1, 1)
        and not isinstance(conv.padding, str)
        and tuple(conv.padding[1:]) == (0, 0)
    )


def strip_rows(conv: nn.Conv3d, video: torch.Tensor, budget_bytes: int) -> int:
    """Rows per strip so that one strip's column matrix stays within ``budget_bytes`` (at least 1).

    Args:
        video: ``(B, C_in, T, H, W)``.
    """
    batch, _, frames, _, width = video.shape
    per_row = batch * conv.in_channels * conv.kernel_size[0] * frames * width * video.element_size()
    return max(1, budget_bytes // max(per_row, 1))


def conv_in_strips(
    conv: nn.Conv3d,
    video: torch.Tensor,
    budget_bytes: int = STRIP_BUDGET_BYTES,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``conv(video)`` computed over strips of rows; ``video`` is ``(B, C_in, T, H, W)``.

    ``forward`` is the convolution's own forward (default: ``conv``'s class forward).
    """
    forward = forward or type(conv).forward.__get__(conv)
    rows = strip_rows(conv, video, budget_bytes)
    height = video.shape[-2]
    if rows >= height:
        return forward(video)
    out = None
    for top in range(0, height, rows):
        strip = forward(video[..., top : top + rows, :])
        if out is None:
            out = strip.new_empty((*strip.shape[:-2], height, strip.shape[-1]))
        out[..., top : top + rows, :] = strip
    return out


@contextlib.contextmanager
def temporal_convs_in_strips(module: nn.Module, budget_bytes: int = STRIP_BUDGET_BYTES) -> Iterator[int]:
    """Within the block, every spatially pointwise ``Conv3d`` of ``module`` on the CPU runs in row strips.

    Other devices keep their own convolution algorithms (CUDA's do not unfold the input). The modules
    are left unchanged afterwards, hooks included. Yields how many convolutions were switched.
    """
    switched = [
        conv
        for conv in module.modules()
        if isinstance(conv, nn.Conv3d) and conv.weight.device.type == "cpu" and is_pointwise_in_space(conv)
    ]
    own_forwards = {conv: vars(conv).get("forward") for conv in switched}  # an instance-level forward, if any
    for conv in switched:
        conv.forward = functools.partial(conv_in_strips, conv, budget_bytes=budget_bytes, forward=conv.forward)
    try:
        yield len(switched)
    finally:
        for conv, own in own_forwards.items():
            if own is None:
                del conv.forward
            else:
                conv.forward = own
