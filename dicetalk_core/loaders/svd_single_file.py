"""Key map from a single-file Stability (SGM) SVD checkpoint to the diffusers / transformers layouts.

``svd_xt.safetensors`` (what ComfyUI users keep in ``models/checkpoints``) holds, among other things:

* ``model.diffusion_model.*``: the video UNet -> diffusers ``UNetSpatioTemporalConditionModel``;
* ``first_stage_model.*``: the VAE with the temporal decoder -> diffusers ``AutoencoderKLTemporalDecoder``;
* ``conditioner.embedders.3.encoder.*``: the image-conditioning autoencoder (a plain SD kl-f8 VAE). Its
  encoder and ``quant_conv`` are what diffusers' SVD VAE encodes with (SGM's ``first_stage_model`` has no
  ``quant_conv``, and diffusers' ``convert_svd_to_diffusers.py`` leaves it out), so they replace
  ``first_stage_model.encoder`` when the file has them;
* ``conditioner.embedders.0.open_clip.model.visual.*``: the OpenCLIP ViT-H/14 image tower ->
  transformers ``CLIPVisionModelWithProjection``.

Each ``convert_*`` function takes the tensors under one prefix (prefix already stripped) and returns
them renamed, and reshaped where the layouts differ (VAE attention 1x1 convolutions become linear
weights, the CLIP ``in_proj`` is split into q/k/v, the CLIP ``proj`` is transposed). A key that no rule
knows raises :class:`CheckpointError`, so every tensor is either used or reported. The block layout is
read from the keys, so one code path serves the full-size checkpoint and tiny test models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

from ..errors import CheckpointError
from .checkpoints import StateDict, describe_state_dict

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CONDITIONING_VAE_PREFIX = "conditioner.embedders.3.encoder."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."

_SHOWN = 5

# --------------------------------------------------------------------------- detection

_SVD_MARKERS = {
    "the video UNet": UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.0.weight",
    "the temporal VAE decoder": VAE_PREFIX + "decoder.mid.block_1.mix_factor",
    "the OpenCLIP image encoder": CLIP_PREFIX + "proj",
}


def check_svd_checkpoint(keys: Iterable[str], *, source: str) -> None:
    """Raise a :class:`CheckpointError` unless the keys are those of a single-file SVD checkpoint.

    The error names the parts that are missing and what the file looks like instead.
    """
    keys = set(keys)
    missing = [part for part, marker in _SVD_MARKERS.items() if marker not in keys]
    if missing:
        raise CheckpointError(
            f"{source} is not a single-file Stable Video Diffusion checkpoint such as svd_xt.safetensors: "
            f"it lacks {', '.join(missing)}. It looks like {describe_sgm_checkpoint(keys)}. "
            "Use svd_xt.safetensors, or the stable-video-diffusion-img2vid-xt diffusers folder."
        )


def describe_sgm_checkpoint(keys: Iterable[str]) -> str:
    """Guess which Stability single-file checkpoint a key set comes from, for error messages."""
    keys = set(keys)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("cond_stage_model.transformer.text_model."):
        return "a Stable Diffusion 1.x checkpoint (CLIP ViT-L text encoder)"
    if has("cond_stage_model.model.transformer.resblocks."):
        return "a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder)"
    if has("conditioner.embedders.1.model.transformer.resblocks."):
        return "a Stable Diffusion XL base checkpoint"
    if has("conditioner.embedders.0.model.transformer.resblocks."):
        return "a Stable Diffusion XL refiner checkpoint"
    if has(UNET_PREFIX + "input_blocks.1.0.time_stack."):
        if has(VAE_PREFIX + "decoder.") and VAE_PREFIX + "decoder.mid.block_1.mix_factor" not in keys:
            return "an SVD checkpoint with the per-frame image decoder (svd_xt_image_decoder.safetensors)"
        return "an incomplete Stable Video Diffusion checkpoint"
    if has(UNET_PREFIX):
        return "a single-file checkpoint of another Stability model"
    return describe_state_dict(dict.fromkeys(keys, torch.empty(0)))


def split_checkpoint(state: Mapping[str, torch.Tensor]) -> dict[str, StateDict]:
    """The SGM tensors of the three parts ("unet", "vae", "clip"), each with its prefix stripped.

    The "vae" part is ``first_stage_model`` with, when the file has the image-conditioning autoencoder,
    that one's ``encoder.*`` and ``quant_conv.*`` in place of ``first_stage_model.encoder.*`` (see the
    module docstring). Everything else (the conditioning decoder, the leftovers of the OpenCLIP text
    tower) is not used by the diffusers pipeline and is left out.
    """
    prefixes = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "clip": CLIP_PREFIX, "conditioning": CONDITIONING_VAE_PREFIX}
    parts = {
        part: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        for part, prefix in prefixes.items()
    }
    conditioning = parts.pop("conditioning")
    if "encoder.conv_in.weight" in conditioning:
        vae = {k: v for k, v in parts["vae"].items() if not k.startswith("encoder.")}
        vae.update({k: v for k, v in conditioning.items() if k.startswith(("encoder.", "quant_conv."))})
        parts["vae"] = vae
    return parts


# --------------------------------------------------------------------------- shared helpers


class _Unmapped(KeyError):
    """A key that no rule of the map knows."""


def _rename_all(state: Mapping[str, torch.Tensor], rename: Callable[[str], str], *, what: str) -> StateDict:
    """Apply ``rename`` to every key; report every key it does not know, and any collision."""
    out: StateDict = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        try:
            new = rename(key)
        except _Unmapped:
            unknown.append(key)
            continue
        if new in out:
            raise CheckpointError(f"Two tensors of {what} map to the same key '{new}' (one is '{key}').")
        out[new] = tensor
    if unknown:
        more = f" (+{len(unknown) - _SHOWN} more)" if len(unknown) > _SHOWN else ""
        raise CheckpointError(
            f"{len(unknown)} tensors of {what} have names this converter does not know, e.g. "
            f"{', '.join(unknown[:_SHOWN])}{more}. The file is not a Stable Video Diffusion checkpoint "
            "in Stability's layout."
        )
    return out


def _split_param(key: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> ``("a.b", "weight")``."""
    module, _, param = key.rpartition(".")
    return module, param


def _lookup(table: Mapping[str, str], module: str) -> str:
    if module not in table:
        raise _Unmapped(module)
    return table[module]


# --------------------------------------------------------------------------- UNet

_UNET_TOP = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_RESNET_LAYERS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_ATTENTION_PARTS = ("norm", "proj_in", "proj_out", "transformer_blocks", "time_stack", "time_pos_embed", "time_mixer")
_BLOCK = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.+)")
_MIDDLE = re.compile(r"middle_block\.(\d+)\.(.+)")
_MIDDLE_TARGETS = {"0": "mid_block.resnets.0", "1": "mid_block.attentions.0", "2": "mid_block.resnets.1"}


def _unet_resnet(tail: str) -> str:
    """Inside an SGM ``VideoResBlock``: spatial layers, ``time_stack.*`` (temporal) and ``time_mixer``."""
    if tail == "time_mixer.mix_factor":
        return tail
    block = "spatial_res_block"
    if tail.startswith("time_stack."):
        block, tail = "temporal_res_block", tail[len("time_stack.") :]
    module, param = _split_param(tail)
    return f"{block}.{_lookup(_RESNET_LAYERS, module)}.{param}"


def _unet_attention(tail: str) -> str:
    """Inside an SGM ``SpatialVideoTransformer``: only the temporal parts are renamed."""
    if tail.split(".", 1)[0] not in _ATTENTION_PARTS:
        raise _Unmapped(tail)
    if tail.startswith("time_stack."):
        return "temporal_transformer_blocks." + tail[len("time_stack.") :]
    for index, linear in (("0", "linear_1"), ("2", "linear_2")):
        if tail.startswith(f"time_pos_embed.{index}."):
            return f"time_pos_embed.{linear}." + tail[len(f"time_pos_embed.{index}.") :]
    return tail


def _unet_key(key: str, layers_per_block: int) -> str:
    module, param = _split_param(key)
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    middle = _MIDDLE.fullmatch(key)
    if middle is not None:
        index, tail = middle.groups()
        inner = _unet_attention(tail) if index == "1" else _unet_resnet(tail)
        return f"{_lookup(_MIDDLE_TARGETS, index)}.{inner}"
    match = _BLOCK.fullmatch(key)
    if match is None:
        raise _Unmapped(key)
    kind, index, sub, tail = match[1], int(match[2]), int(match[3]), match[4]
    if kind == "input_blocks":
        return _unet_down_key(key, index, sub, tail, layers_per_block)
    return _unet_up_key(key, index, sub, tail, layers_per_block)


def _unet_down_key(key: str, index: int, sub: int, tail: str, layers_per_block: int) -> str:
    """``input_blocks.{i}``: ``layers_per_block`` (resnet, attention) pairs then a downsampler per level."""
    if index == 0:
        raise _Unmapped(key)
    level, layer = divmod(index - 1, layers_per_block + 1)
    if layer == layers_per_block:
        if sub != 0 or not tail.startswith("op."):
            raise _Unmapped(key)
        return f"down_blocks.{level}.downsamplers.0.conv.{tail[len('op.') :]}"
    if sub == 0:
        return f"down_blocks.{level}.resnets.{layer}.{_unet_resnet(tail)}"
    if sub == 1:
        return f"down_blocks.{level}.attentions.{layer}.{_unet_attention(tail)}"
    raise _Unmapped(key)


def _unet_up_key(key: str, index: int, sub: int, tail: str, layers_per_block: int) -> str:
    """``output_blocks.{i}``: ``layers_per_block + 1`` (resnet, attention) per level, the last + upsampler."""
    level, layer = divmod(index, layers_per_block + 1)
    if sub == 0:
        return f"up_blocks.{level}.resnets.{layer}.{_unet_resnet(tail)}"
    if tail.startswith("conv.") and sub in (1, 2):
        return f"up_blocks.{level}.upsamplers.0.conv.{tail[len('conv.') :]}"
    if sub == 1:
        return f"up_blocks.{level}.attentions.{layer}.{_unet_attention(tail)}"
    raise _Unmapped(key)


def _unet_layers_per_block(keys: Iterable[str]) -> int:
    """Resnets per down level: the first downsampler is ``input_blocks.{layers_per_block + 1}.0.op``."""
    found = [int(m[1]) for k in keys if (m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op\.weight", k))]
    if not found:
        raise CheckpointError("The UNet tensors have no downsampler (input_blocks.*.0.op); not an SVD UNet.")
    return min(found) - 1


def convert_unet(state: Mapping[str, torch.Tensor]) -> StateDict:
    """SGM ``VideoUNet`` tensors (prefix stripped) -> diffusers ``UNetSpatioTemporalConditionModel``.

    Pure renaming: every tensor keeps its shape and values.
    """
    layers_per_block = _unet_layers_per_block(list(state))
    return _rename_all(state, lambda k: _unet_key(k, layers_per_block), what="the SVD UNet")


# --------------------------------------------------------------------------- VAE

_VAE_RESNET_LAYERS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_VAE_TEMPORAL_LAYERS = {
    "time_stack.in_layers.0": "norm1",
    "time_stack.in_layers.2": "conv1",
    "time_stack.out_layers.0": "norm2",
    "time_stack.out_layers.3": "conv2",
}
_VAE_ATTENTION_LAYERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_VAE_TOP = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.norm_out": "encoder.conv_norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.conv_out.time_mix_conv": "decoder.time_conv_out",
    "decoder.norm_out": "decoder.conv_norm_out",
    "quant_conv": "quant_conv",
}
_VAE_SAMPLERS = {"downsample": "downsamplers", "upsample": "upsamplers"}
_VAE_BLOCK = re.compile(r"(encoder|decoder)\.(?:(down|up)\.(\d+)\.(block\.\d+|downsample|upsample)|mid\.(\w+))\.(.+)")


def _vae_resnet(module: str, param: str, *, video: bool) -> str:
    """An SGM ``ResnetBlock`` (encoder) or ``VideoResBlock`` (decoder: spatial + ``time_stack`` + mixer)."""
    if not video:
        return f"{_lookup(_VAE_RESNET_LAYERS, module)}.{param}"
    if module == "" and param == "mix_factor":
        return "time_mixer.mix_factor"
    if module in _VAE_TEMPORAL_LAYERS:
        return f"temporal_res_block.{_VAE_TEMPORAL_LAYERS[module]}.{param}"
    return f"spatial_res_block.{_lookup(_VAE_RESNET_LAYERS, module)}.{param}"


def _vae_key(key: str, num_levels: int) -> str:
    module, param = _split_param(key)
    if module in _VAE_TOP:
        return f"{_VAE_TOP[module]}.{param}"
    match = _VAE_BLOCK.fullmatch(key)
    if match is None:
        raise _Unmapped(key)
    coder, direction, level, unit, mid, tail = match.groups()
    inner, param = _split_param(tail) if "." in tail else ("", tail)
    video = coder == "decoder"
    if mid in ("block_1", "block_2"):
        return f"{coder}.mid_block.resnets.{int(mid[-1]) - 1}.{_vae_resnet(inner, param, video=video)}"
    if mid == "attn_1":
        return f"{coder}.mid_block.attentions.0.{_lookup(_VAE_ATTENTION_LAYERS, inner)}.{param}"
    if mid is not None:
        raise _Unmapped(key)
    if (coder, direction) == ("encoder", "down"):
        prefix = f"encoder.down_blocks.{level}"
    elif (coder, direction) == ("decoder", "up"):
        prefix = f"decoder.up_blocks.{num_levels - 1 - int(level)}"  # SGM counts up-levels from the output
    else:
        raise _Unmapped(key)
    if unit in _VAE_SAMPLERS:
        if inner != "conv":
            raise _Unmapped(key)
        return f"{prefix}.{_VAE_SAMPLERS[unit]}.0.conv.{param}"
    return f"{prefix}.resnets.{unit.split('.')[1]}.{_vae_resnet(inner, param, video=video)}"


def _vae_levels(keys: Iterable[str]) -> int:
    levels = {int(m[1]) for k in keys if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    if not levels:
        raise CheckpointError("The VAE tensors have no decoder up blocks (decoder.up.*); not an SVD VAE.")
    return max(levels) + 1


def convert_vae(state: Mapping[str, torch.Tensor]) -> StateDict:
    """SGM video VAE tensors (as :func:`split_checkpoint` gives them) -> ``AutoencoderKLTemporalDecoder``.

    The mid-block attention ``q/k/v/proj_out`` are 1x1 convolutions in SGM and linear layers in
    diffusers. Without a ``quant_conv`` (``first_stage_model`` alone: SGM's ``AutoencodingEngine`` feeds
    the encoder output straight to the latent distribution, as ComfyUI does) diffusers' ``quant_conv``
    gets the identity.
    """
    num_levels = _vae_levels(state)
    out = _rename_all(state, lambda k: _vae_key(k, num_levels), what="the SVD VAE")
    for key, tensor in out.items():
        if ".attentions.0.to_" in key and key.endswith(".weight") and tensor.ndim == 4:
            out[key] = tensor[:, :, 0, 0]
    if "quant_conv.weight" not in out:
        if "encoder.conv_out.weight" not in out:
            raise CheckpointError("The VAE tensors have no encoder (encoder.conv_out); not an SVD VAE.")
        out.update(_identity_quant_conv(out["encoder.conv_out.weight"]))
    return out


def _identity_quant_conv(encoder_conv_out: torch.Tensor) -> StateDict:
    """A 1x1 ``quant_conv`` that passes the encoder's moments through unchanged."""
    channels = encoder_conv_out.shape[0]
    like = {"dtype": encoder_conv_out.dtype, "device": encoder_conv_out.device}
    return {
        "quant_conv.weight": torch.eye(channels, **like).reshape(channels, channels, 1, 1),
        "quant_conv.bias": torch.zeros(channels, **like),
    }


# --------------------------------------------------------------------------- CLIP image tower

_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_CLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
_CLIP_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")


def convert_clip_vision(state: Mapping[str, torch.Tensor]) -> StateDict:
    """OpenCLIP ``VisionTransformer`` tensors (``...open_clip.model.visual.`` stripped) -> HF CLIP vision.

    ``attn.in_proj_{weight,bias}`` (q, k, v stacked along dim 0) are split into ``q/k/v_proj``, and
    ``proj`` (``x @ proj``) becomes ``visual_projection.weight`` (``x @ W.T``), i.e. transposed.
    """
    out: StateDict = {}
    rest: StateDict = {}
    for key, tensor in state.items():
        if key == "proj":
            out["visual_projection.weight"] = tensor.t().contiguous()
            continue
        match = _CLIP_RESBLOCK.fullmatch(key)
        if match and match[2] in ("attn.in_proj_weight", "attn.in_proj_bias"):
            param = match[2].rsplit("_", 1)[1]
            layer = f"vision_model.encoder.layers.{match[1]}.self_attn"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                out[f"{layer}.{name}.{param}"] = chunk.contiguous()
            continue
        rest[key] = tensor
    return {**out, **_rename_all(rest, _clip_key, what="the OpenCLIP image encoder")}


def _clip_key(key: str) -> str:
    if key in _CLIP_TOP:
        return _CLIP_TOP[key]
    match = _CLIP_RESBLOCK.fullmatch(key)
    if match is None:
        raise _Unmapped(key)
    module, param = _split_param(match[2])
    return f"vision_model.encoder.layers.{match[1]}.{_lookup(_CLIP_LAYER, module)}.{param}"
