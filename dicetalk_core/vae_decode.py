"""The VAE decode: latents -> frames in temporal-decoder clips (:func:`decode_latents`), each clip decoded
with stock modules holding about half the memory of ``vae.decode`` (:func:`decode_clip`).

SVD's temporal decoder (``TemporalDecoder`` in diffusers) runs every frame of a clip through each block
at once. At the full-resolution blocks each ``(F, C0, H, W)`` tensor is large (80 MB for 10 frames at
256x256 with 32 channels; 670 MB at 512x512 with 128 in fp16), and ``vae.decode`` keeps up to eight
of them alive: a block's input stays referenced by its caller until the block returns, the
non-linearities and the spatial/temporal mix make new tensors, and the ``(3, 1, 1)`` temporal
convolutions unfold their input three times over on the CPU. That decode is where long clips run out
of memory in the official code.

:func:`decode_clip` walks the same modules in the same order with the same operations, but calls only
the leaf layers (norms, convolutions, up-samplers, the mid-block attention) itself, so that it can

* drop each block's input as soon as the block no longer needs it;
* apply SiLU, the residual sums and the spatial/temporal mix in place (the same element-wise
  operations on the same values; ``a + b`` and ``b + a`` round alike);
* run the temporal convolutions in row strips (``temporal_conv``).

Each block hands on its frames in the memory order the stock one does (often channels last: the stock
mix of a permuted view returns that order, and the convolution kernels that follow depend on it;
replayed on the ``meta`` device), so the result is ``vae.decode(z, num_frames).sample`` bit for bit
(``tests/test_vae_decode.py``; 0 over a 10-frame ``medium`` bench clip, 822 -> 400 MB of working
memory), except where the temporal convolutions run in strips, whose products may round differently (see
``temporal_conv``). A decoder built differently from SVD's (time embeddings, up- or down-sampling
resnets, another mix strategy, another diffusers layout) is decoded by ``vae.decode`` itself, with its
temporal convolutions in strips.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.models.resnet import AlphaBlender, ResnetBlock2D, SpatioTemporalResBlock, TemporalResnetBlock
from diffusers.models.unets.unet_3d_blocks import UpBlockTemporalDecoder
from torch import nn

from .errors import CancelledError, InputError
from .memory import decode_clips_per_call
from .temporal_conv import conv_in_strips, temporal_convs_in_strips


@torch.no_grad()
def decode_clip(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``vae.decode(latents, num_frames=num_frames).sample`` with less working memory (see the module docstring).

    Args:
        latents: ``(B * num_frames, 4, h, w)`` already divided by the scaling factor, in the VAE's dtype.

    Returns:
        ``(B * num_frames, 3, H, W)``.
    """
    decoder = vae.decoder
    if not is_lean_decodable(vae):
        with temporal_convs_in_strips(decoder):
            return vae.decode(latents, num_frames=num_frames).sample
    indicator = torch.zeros(latents.shape[0] // num_frames, num_frames, dtype=latents.dtype, device=latents.device)
    sample = decoder.mid_block(decoder.conv_in(latents), image_only_indicator=indicator)
    upscale_dtype = next(itertools.chain(decoder.up_blocks.parameters(), decoder.up_blocks.buffers())).dtype
    sample = sample.to(upscale_dtype)
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            holder = [sample]
            del sample
            sample = _spatio_temporal_block(resnet, holder, num_frames, indicator)
        for upsampler in block.upsamplers or ():
            sample = upsampler(sample)
    sample = decoder.conv_norm_out(sample)
    sample = decoder.conv_out(F.silu(sample, inplace=True))
    frames, channels, height, width = sample.shape
    video = sample[None].reshape(-1, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
    video = conv_in_strips(decoder.time_conv_out, video)
    return video.permute(0, 2, 1, 3, 4).reshape(frames, channels, height, width)


def is_lean_decodable(vae: nn.Module) -> bool:
    """Whether :func:`decode_clip` knows every block of ``vae``'s decoder (else it uses ``vae.decode``)."""
    decoder = getattr(vae, "decoder", None)
    if decoder is None or getattr(decoder, "gradient_checkpointing", False):
        return False
    needed = ("conv_in", "mid_block", "up_blocks", "conv_norm_out", "conv_act", "conv_out", "time_conv_out")
    if not all(hasattr(decoder, name) for name in needed) or not isinstance(decoder.conv_act, nn.SiLU):
        return False
    for block in decoder.up_blocks:
        if type(block) is not UpBlockTemporalDecoder:
            return False
        for resnet in block.resnets:
            if type(resnet) is not SpatioTemporalResBlock:
                return False
            spatial, temporal, mixer = resnet.spatial_res_block, resnet.temporal_res_block, resnet.time_mixer
            if not (
                type(spatial) is ResnetBlock2D
                and spatial.upsample is None
                and spatial.downsample is None
                and spatial.time_emb_proj is None
                and spatial.time_embedding_norm == "default"
                and isinstance(spatial.nonlinearity, nn.SiLU)
                and type(temporal) is TemporalResnetBlock
                and temporal.time_emb_proj is None
                and temporal.conv_shortcut is None
                and isinstance(temporal.nonlinearity, nn.SiLU)
                and type(mixer) is AlphaBlender
                and mixer.merge_strategy in ("fixed", "learned")
            ):
                return False
    return True


def _spatio_temporal_block(
    block: SpatioTemporalResBlock, holder: list[torch.Tensor], num_frames: int, indicator: torch.Tensor
) -> torch.Tensor:
    """``block(x)`` for ``holder == [x]`` ``(B * F, C, H, W)``; ``x`` is released once read."""
    spatial = _resnet_2d(block.spatial_res_block, holder)
    channels, height, width = spatial.shape[1:]
    spatial_video = spatial[None].reshape(-1, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
    temporal = _temporal_resnet(block.temporal_res_block, spatial_video)
    alpha = block.time_mixer.get_alpha(indicator, spatial_video.ndim).to(spatial_video.dtype)
    if block.time_mixer.switch_spatial_to_temporal_mix:
        alpha = 1.0 - alpha
    layout = _stock_output_layout(spatial_video, temporal, alpha)
    # alpha * x_spatial + (1 - alpha) * x_temporal, the products and the sum each rounded as there
    spatial_video.mul_(alpha)
    temporal.mul_(1.0 - alpha).add_(spatial_video)
    del spatial, spatial_video
    out = torch.empty_strided(*layout, dtype=temporal.dtype, device=temporal.device)
    out.unflatten(0, (-1, num_frames)).permute(0, 2, 1, 3, 4).copy_(temporal)
    return out


def _stock_output_layout(
    spatial_video: torch.Tensor, hidden: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Size, tuple[int, ...]]:
    """Size and strides of the stock block's output, replayed on the ``meta`` device (no memory).

    The stock block adds the temporal branch to a permuted view, mixes, and un-permutes; element-wise
    results take the memory order their inputs suggest, so its frames come out in an order (often
    channels last) that the next convolutions' kernels, and so their rounding, depend on.
    """

    def meta(tensor: torch.Tensor) -> torch.Tensor:
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="meta")

    x_spatial, alpha = meta(spatial_video), alpha.to("meta")
    x_temporal = x_spatial + meta(hidden)
    mixed = alpha * x_spatial + (1.0 - alpha) * x_temporal
    batch, channels, frames, height, width = mixed.shape
    out = mixed.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    return out.shape, out.stride()


def _resnet_2d(resnet: ResnetBlock2D, holder: list[torch.Tensor]) -> torch.Tensor:
    """``resnet(x)`` (the plain path: no time embedding, no resampling) for ``holder == [x]``."""
    hidden = resnet.conv1(F.silu(resnet.norm1(holder[0]), inplace=True))
    hidden = resnet.conv2(resnet.dropout(F.silu(resnet.norm2(hidden), inplace=True)))
    shortcut = holder.pop()
    if resnet.conv_shortcut is not None:
        shortcut = resnet.conv_shortcut(shortcut)
    return hidden.add_(shortcut).div_(resnet.output_scale_factor)


def _temporal_resnet(resnet: TemporalResnetBlock, video: torch.Tensor) -> torch.Tensor:
    """``resnet(video, None)`` (no shortcut convolution) for ``(B, C, F, H, W)``; ``video`` is left unchanged.

    The result keeps the memory order of the last convolution's output (the stock sum takes another).
    """
    hidden = conv_in_strips(resnet.conv1, F.silu(resnet.norm1(video), inplace=True))
    hidden = conv_in_strips(resnet.conv2, resnet.dropout(F.silu(resnet.norm2(hidden), inplace=True)))
    return hidden.add_(video)


@torch.no_grad()
def decode_latents(
    vae: AutoencoderKLTemporalDecoder,
    latents: torch.Tensor,
    num_frames: int,
    chunk_size: int,
    should_stop: Callable[[], bool] | None = None,
    clips_per_call: int | str = 1,
) -> torch.Tensor:
    """Decode ``(1, L, 4, h, w)`` latents in temporal-decoder clips of ``chunk_size`` frames.

    Each clip is decoded as its own clip (boundaries at multiples of ``chunk_size`` from frame 0, as
    in the official code); clips past the first ``num_frames`` frames (the padding) are skipped. Several
    whole clips may share one VAE call (``clips_per_call``, or ``"auto"``: as many as free memory
    allows): the clips stay independent, so the frames are the same. Each call's frames go at once
    into the CPU output. Each call goes through :func:`decode_clip`: the same frames
    (up to float rounding) with about half the working memory of ``vae.decode``.

    Returns:
        ``(num_frames, 3, H, W)`` float32 in [0, 1].
    """
    if num_frames < 1:
        raise InputError(f"Nothing to decode: num_frames is {num_frames}; it must be at least 1.")
    flat = latents.flatten(0, 1).to(vae.dtype) / vae.config.scaling_factor
    end = min(flat.shape[0], -(-num_frames // chunk_size) * chunk_size)
    if clips_per_call == "auto":
        clips_per_call = decode_clips_per_call(vae, flat.shape[-2:], chunk_size, flat.device)
    step = chunk_size * max(1, int(clips_per_call))
    frames: torch.Tensor | None = None
    for begin in range(0, end, step):
        if should_stop is not None and should_stop():
            raise CancelledError("Generation cancelled.")
        stop = min(begin + step, end)
        whole = begin + (stop - begin) // chunk_size * chunk_size  # whole clips go in one call
        for lo, hi, clip in ((begin, whole, chunk_size), (whole, stop, stop - whole)):
            if hi > lo:
                decoded = (decode_clip(vae, flat[lo:hi], clip).float() * 0.5 + 0.5).clamp(0, 1)
                if frames is None:
                    frames = torch.empty((num_frames, *decoded.shape[1:]), dtype=torch.float32)
                kept = min(hi, num_frames) - lo
                frames[lo : lo + kept] = decoded[:kept]
                del decoded
    return frames
