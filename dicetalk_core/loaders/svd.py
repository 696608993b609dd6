"""The SVD-xt parts DICE-Talk runs on: VAE, CLIP image encoder, scheduler and UNet config (+ weights).

Two sources are accepted, both read offline (no hub access, no ``from_pretrained``):

* the diffusers folder ``stable-video-diffusion-img2vid-xt/`` with ``vae/``, ``image_encoder/`` and
  ``unet/`` weight files (the fp16 ``variant`` files are preferred, as the official pipeline loads them);
* the single file ``svd_xt.safetensors`` (Stability's SGM naming, what ComfyUI users keep in
  ``models/checkpoints``), mapped by :mod:`.svd_single_file`.

The architectures are the SVD-xt configs below unless the caller passes others (:func:`folder_configs`
reads those a diffusers folder declares in its ``config.json`` files); a checkpoint of another shape fails
the strict load with a message saying what it looks like. Modules are built on the ``meta`` device and
take the checkpoint's tensors as their parameters (no random initialisation).

Precision: the official pipeline loads the fp16 variant files, so its VAE, even when upcast
to fp32 for encoding, computes with fp16-rounded weights. With ``fp16_weights=True`` (default) fp32 and
fp64 sources (the single file, or a folder without the fp16 files) are rounded through fp16 the same way
before they are cast to ``dtype``; bf16 sources are left as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..errors import CheckpointError
from ..model_files import SVD_FOLDER, SVD_WEIGHT_FILES
from ..models.layouts import (
    SVD_XT_IMAGE_ENCODER_CONFIG,
    SVD_XT_SCHEDULER_CONFIG,
    SVD_XT_UNET_CONFIG,
    SVD_XT_VAE_CONFIG,
)
from .checkpoints import StateDict, check_state_dict, load_strict, read_state_dict, state_dict_keys
from .svd_single_file import (
    CLIP_PREFIX,
    CONDITIONING_VAE_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    check_svd_checkpoint,
    convert_clip_vision,
    convert_unet,
    convert_vae,
    split_checkpoint,
)


@dataclass(frozen=True)
class SVDConfigs:
    """Architectures of the SVD parts: kwargs of the diffusers / transformers classes."""

    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    image_encoder: Mapping[str, Any]
    scheduler: Mapping[str, Any]


SVD_XT = SVDConfigs(
    unet=SVD_XT_UNET_CONFIG,
    vae=SVD_XT_VAE_CONFIG,
    image_encoder=SVD_XT_IMAGE_ENCODER_CONFIG,
    scheduler=SVD_XT_SCHEDULER_CONFIG,
)


ModuleT = TypeVar("ModuleT", bound=nn.Module)

_VAE = "the SVD-xt VAE (AutoencoderKLTemporalDecoder)"
_IMAGE_ENCODER = "the SVD-xt CLIP image encoder (ViT-H/14)"
_UNET = "the stock SVD-xt UNet"
# Saved by transformers < 4.31 as a persistent buffer; newer versions rebuild it, as this module does.
_STALE_CLIP_KEYS = ("vision_model.embeddings.position_ids",)


@dataclass
class SVDComponents:
    """What :func:`load_svd_components` returns.

    Attributes:
        vae: eval mode, on the requested device and dtype.
        image_encoder: eval mode, on the requested device and dtype.
        scheduler: a fresh scheduler with the scheduler config (SVD-xt's by default).
        unet_config: a copy of the UNet config (:data:`SVD_XT_UNET_CONFIG` by default).
        unet_state: the stock UNet tensors in diffusers naming (on the CPU, in the file's dtype), already
            checked key for key and shape for shape against ``unet_config``; ``None`` unless requested.
        source: the folder or file they came from.
    """

    vae: AutoencoderKLTemporalDecoder
    image_encoder: CLIPVisionModelWithProjection
    scheduler: EulerDiscreteScheduler
    unet_config: dict[str, Any]
    unet_state: StateDict | None
    source: Path


VAE_PART, IMAGE_ENCODER_PART, UNET_PART = "vae", "image_encoder", "unet"
"""The parts of an SVD checkpoint (the diffusers subfolder names)."""

RawPart = tuple[StateDict, str]
"""A part's tensors in diffusers / transformers naming, and where they came from (for messages)."""


def load_svd_components(
    path: str | Path,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    load_unet: bool = False,
    fp16_weights: bool = True,
    configs: SVDConfigs = SVD_XT,
) -> SVDComponents:
    """The SVD-xt VAE, CLIP image encoder and scheduler from a diffusers folder or ``svd_xt.safetensors``.

    Args:
        path: the ``stable-video-diffusion-img2vid-xt`` folder or the single ``.safetensors`` file.
        device: where the VAE and image encoder go.
        dtype: their dtype.
        load_unet: also return the stock UNet tensors (DICE-Talk's ``unet.pth`` normally replaces them
            all; they are only a fallback for keys it lacks). Skipping them saves 1.5 B parameters of memory.
        fp16_weights: round fp32 VAE and image-encoder weights through fp16, as the official fp16
            variant files are (see the module docstring).
        configs: the architectures (tests pass tiny ones).

    Raises:
        CheckpointError: a file or subfolder is missing, or the weights are not SVD-xt's.
    """
    parts = (VAE_PART, IMAGE_ENCODER_PART, *((UNET_PART,) if load_unet else ()))
    raw = read_svd_parts(path, parts)
    unet_state = None
    if load_unet:
        unet_state, unet_source = raw[UNET_PART]
        check_unet_state(unet_state, source=unet_source, config=configs.unet)
    return SVDComponents(
        vae=_build_part(VAE_PART, raw[VAE_PART], device, dtype, fp16_weights, configs),
        image_encoder=_build_part(IMAGE_ENCODER_PART, raw[IMAGE_ENCODER_PART], device, dtype, fp16_weights, configs),
        scheduler=build_scheduler(configs.scheduler),
        unet_config=dict(configs.unet),
        unet_state=unet_state,
        source=Path(path),
    )


def load_svd_part(
    path: str | Path,
    part: str,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    fp16_weights: bool = True,
    configs: SVDConfigs = SVD_XT,
) -> nn.Module:
    """The VAE (``VAE_PART``) or the CLIP image encoder (``IMAGE_ENCODER_PART``) alone; the other parts are
    not read. The other arguments are those of :func:`load_svd_components`."""
    return _build_part(part, read_svd_parts(path, (part,))[part], device, dtype, fp16_weights, configs)


def _build_part(
    part: str, raw: RawPart, device: str | torch.device, dtype: torch.dtype, fp16_weights: bool, configs: SVDConfigs
) -> nn.Module:
    builders = {VAE_PART: (build_vae, configs.vae), IMAGE_ENCODER_PART: (build_image_encoder, configs.image_encoder)}
    if part not in builders:
        raise KeyError(f"{part!r} is not a module part of SVD; one of {', '.join(builders)}")
    build, config = builders[part]
    state, source = raw
    return build(_cast(state, device, dtype, torch.float16 if fp16_weights else None), source=source, config=config)


def read_svd_parts(path: str | Path, parts: tuple[str, ...]) -> dict[str, RawPart]:
    """The tensors of ``parts`` (of ``VAE_PART``, ``IMAGE_ENCODER_PART``, ``UNET_PART``) from either source.

    Raises:
        CheckpointError: the path does not exist, or a part's file or subfolder is missing.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, parts)
    if path.is_file():
        return _read_single_file(path, parts)
    raise CheckpointError(
        f"SVD-xt weights not found at {path}: give the {SVD_FOLDER} diffusers folder "
        "or the single file svd_xt.safetensors."
    )


def build_scheduler(config: Mapping[str, Any] = SVD_XT_SCHEDULER_CONFIG) -> EulerDiscreteScheduler:
    """A new ``EulerDiscreteScheduler`` (SVD-xt config by default)."""
    return EulerDiscreteScheduler.from_config(dict(config))


def build_vae(
    state: Mapping[str, torch.Tensor], *, source: str, config: Mapping[str, Any] = SVD_XT_VAE_CONFIG
) -> AutoencoderKLTemporalDecoder:
    """``AutoencoderKLTemporalDecoder(**config)`` whose parameters are the tensors of ``state`` (strict)."""
    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder.from_config(dict(config))
    load_strict(vae, state, source=source, what=_VAE, assign=True)
    return _finish(vae)


def build_image_encoder(
    state: Mapping[str, torch.Tensor], *, source: str, config: Mapping[str, Any] = SVD_XT_IMAGE_ENCODER_CONFIG
) -> CLIPVisionModelWithProjection:
    """``CLIPVisionModelWithProjection`` whose parameters are the tensors of ``state`` (strict)."""
    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    state = {k: v for k, v in state.items() if k not in _STALE_CLIP_KEYS}
    load_strict(encoder, state, source=source, what=_IMAGE_ENCODER, assign=True)
    embeddings = encoder.vision_model.embeddings
    device = embeddings.patch_embedding.weight.device
    position_ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
    embeddings.register_buffer("position_ids", position_ids, persistent=False)
    return _finish(encoder)


def check_unet_state(
    state: Mapping[str, torch.Tensor], *, source: str, config: Mapping[str, Any] = SVD_XT_UNET_CONFIG
) -> None:
    """Raise a :class:`CheckpointError` unless ``state`` fits the stock SVD UNet built from ``config``."""
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(dict(config))
    check_state_dict(unet, state, source=source, what=_UNET)


def _finish(module: ModuleT) -> ModuleT:
    """Eval mode, no gradients, and a guard that nothing was left on the meta device."""
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(module).__name__} has tensors that were never loaded: {left[:5]}")
    return module.eval().requires_grad_(False)


def _cast(
    state: Mapping[str, torch.Tensor], device: str | torch.device, dtype: torch.dtype, via: torch.dtype | None
) -> StateDict:
    """Floating tensors to ``dtype`` on ``device``; fp32/fp64 ones first rounded to ``via`` when it is given."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor.to(device)
        if via is not None and tensor.element_size() > via.itemsize:
            tensor = tensor.to(via)
        return tensor.to(device=device, dtype=dtype)

    return {k: cast(v) for k, v in state.items()}


# --------------------------------------------------------------------------- the two sources


def _read_folder(folder: Path, parts: tuple[str, ...]) -> dict[str, RawPart]:
    files = {part: find_folder_weights(folder, part) for part in parts}  # all found before any is read
    return {part: (read_state_dict(file), str(file)) for part, file in files.items()}


def find_folder_weights(folder: str | Path, subfolder: str) -> Path:
    """The preferred weight file of ``folder/subfolder`` (see :data:`~.model_files.SVD_WEIGHT_FILES`).

    Raises:
        CheckpointError: naming the subfolder and the file expected in it.
    """
    names = SVD_WEIGHT_FILES[subfolder]
    where = Path(folder) / subfolder
    expected = f"{names[0]} (or {names[1]}) from {SVD_FOLDER}/{subfolder}/"
    if not where.is_dir():
        raise CheckpointError(
            f"{folder} is not a complete {SVD_FOLDER} folder: it has no '{subfolder}' subfolder. "
            f"Put {expected} into {where}."
        )
    for name in names:
        if (where / name).is_file():
            return where / name
    raise CheckpointError(f"No weights in {where}: put {expected} there.")


def _read_single_file(path: Path, parts: tuple[str, ...]) -> dict[str, RawPart]:
    check_svd_checkpoint(state_dict_keys(path), source=str(path))
    prefixes = {
        VAE_PART: (VAE_PREFIX, CONDITIONING_VAE_PREFIX),
        IMAGE_ENCODER_PART: (CLIP_PREFIX,),
        UNET_PART: (UNET_PREFIX,),
    }
    wanted = tuple(prefix for part in parts for prefix in prefixes[part])
    split = split_checkpoint(read_state_dict(path, keep=lambda key: key.startswith(wanted)))
    source = str(path)
    read = {
        VAE_PART: lambda: (
            convert_vae(split["vae"]),
            f"{source} (first_stage_model.*, conditioner.embedders.3.encoder.*)",
        ),
        IMAGE_ENCODER_PART: lambda: (
            convert_clip_vision(split["clip"]),
            f"{source} (conditioner.embedders.0.open_clip.model.visual.*)",
        ),
        UNET_PART: lambda: (convert_unet(split["unet"]), f"{source} (model.diffusion_model.*)"),
    }
    return {part: read[part]() for part in parts}


def folder_configs(folder: str | Path, default: SVDConfigs = SVD_XT) -> SVDConfigs:
    """The architectures a diffusers SVD folder declares in its config files; ``default`` for any absent."""

    def read(subfolder: str, name: str, fallback: Mapping[str, Any]) -> Mapping[str, Any]:
        path = Path(folder) / subfolder / name
        if not path.is_file():
            return fallback
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable JSON config ({err}).") from err

    return SVDConfigs(
        unet=read("unet", "config.json", default.unet),
        vae=read("vae", "config.json", default.vae),
        image_encoder=read("image_encoder", "config.json", default.image_encoder),
        scheduler=read("scheduler", "scheduler_config.json", default.scheduler),
    )
