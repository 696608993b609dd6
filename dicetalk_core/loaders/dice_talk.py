"""Loading the official DICE-Talk weight files into our modules, strictly, key for key.

The release files (``unet.pth``, ``audio_linear.pth``, ``emo_model.pth``, ``pose_guider.pth``) are
plain tensor dicts read with ``weights_only=True``; a ``.safetensors`` file of the same name is used
instead when present. Every size is inferred from the tensors, so one code path loads the full-size
release and tiny test models. Modules are built on the ``meta`` device and take the file's tensors
as their parameters: no random initialisation of 1.6 B parameters, no second copy in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch import nn

from ..errors import CheckpointError
from ..model_files import (
    AUDIO_PROJECTION_FILE,
    DICE_TALK_FILES,
    EMOTION_MODEL_FILE,
    POSE_GUIDER_FILE,
    UNET_FILE,
    find_weight_file,
)
from ..models import AudioProjection, EmotionModel, PoseGuider
from ..models.bundle import DiceTalkModels
from ..models.emotion_model import OFFICIAL_NUM_HEADS
from ..precision import Precision
from ..unet_adapters import DiceUNet, install_dice_adapters
from .checkpoints import StateDict, describe_state_dict, load_strict, read_state_dict
from .svd import (
    IMAGE_ENCODER_PART,
    SVD_XT,
    VAE_PART,
    SVDConfigs,
    build_scheduler,
    folder_configs,
    load_svd_part,
)

EMOTION_PRIOR_DIM = 256
"""Values in an emotion prior (the official presets): what ``emo_model.pth`` must take."""

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def build_on_meta(
    factory: Callable[[], ModuleT], state: Mapping[str, torch.Tensor], *, source: str, what: str
) -> ModuleT:
    """Build ``factory()`` without allocating weights and load ``state`` into it strictly."""
    with torch.device("meta"):
        module = factory()
    return load_strict(module, state, source=source, what=what, assign=True).eval()


def _read(path: str | Path) -> tuple[StateDict, str]:
    return read_state_dict(path), str(path)


def _require(state: Mapping[str, torch.Tensor], keys: tuple[str, ...], source: str, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"{source} is not {what}: it lacks {', '.join(missing)}; it looks like {describe_state_dict(state)}."
        )


def load_audio_projection(path: str | Path) -> AudioProjection:
    """``audio_linear.pth`` -> :class:`AudioProjection` (sizes from the file)."""
    state, source = _read(path)
    what = "the DICE-Talk audio projection (audio_linear.pth)"
    _require(state, ("proj1.weight", "proj3.weight", "norm.weight"), source, what)
    return build_on_meta(lambda: AudioProjection.from_state_dict(state), state, source=source, what=what)


def load_emotion_model(path: str | Path, num_heads: int = OFFICIAL_NUM_HEADS) -> EmotionModel:
    """``emo_model.pth`` -> :class:`EmotionModel` (sizes from the file; the head count is not stored in it)."""
    state, source = _read(path)
    what = "the DICE-Talk emotion model (emo_model.pth)"
    needed = (
        "codebook.fc.weight",
        "codebook.codebook.weight",
        "emo_linear.proj1.weight",
        "emo_linear.proj3.weight",
        "classifier.fc1.weight",
    )
    _require(state, needed, source, what)
    return build_on_meta(lambda: EmotionModel.from_state_dict(state, num_heads), state, source=source, what=what)


def load_pose_guider(path: str | Path) -> PoseGuider:
    """``pose_guider.pth`` -> :class:`PoseGuider` (sizes from the file)."""
    state, source = _read(path)
    what = "the DICE-Talk pose guider (pose_guider.pth)"
    _require(state, ("conv_in.weight", "conv_out.weight", "blocks.1.weight"), source, what)
    return build_on_meta(lambda: PoseGuider.from_state_dict(state), state, source=source, what=what)


def build_dice_unet(config: Mapping, state: Mapping[str, torch.Tensor], *, source: str) -> DiceUNet:
    """A stock ``UNetSpatioTemporalConditionModel(**config)`` patched with the adapters, loaded strictly."""

    def factory() -> DiceUNet:
        return install_dice_adapters(UNetSpatioTemporalConditionModel.from_config(dict(config)))

    return build_on_meta(factory, state, source=source, what="the DICE-Talk UNet (unet.pth)")


def load_dice_unet(path: str | Path, config: Mapping) -> DiceUNet:
    """``unet.pth`` (all 1,556 keys: stock SVD-xt UNet + audio/emotion adapters) -> :class:`DiceUNet`.

    Args:
        path: the weight file.
        config: the SVD-xt UNet config (``unet/config.json`` of the SVD-xt folder).
    """
    state, source = _read(path)
    return build_dice_unet(config, state, source=source)


@dataclass(frozen=True)
class ModelFiles:
    """Where each module of :class:`DiceTalkModels` is read from, and the device and dtypes it runs in.

    Attributes:
        paths: the file found for each name of :data:`~dicetalk_core.model_files.DICE_TALK_FILES`.
        svd_path: the SVD-xt diffusers folder or ``svd_xt.safetensors`` (VAE, CLIP image encoder).
        configs: the SVD architectures (from the folder's config files, else SVD-xt's).
        precision: device and dtypes (see :meth:`DiceTalkModels.to_precision`).
    """

    paths: Mapping[str, Path]
    svd_path: Path
    configs: SVDConfigs
    precision: Precision

    @classmethod
    def find(cls, folder: str | Path, svd_path: str | Path, precision: Precision) -> ModelFiles:
        """The files of ``folder`` (DICE-Talk) and ``svd_path`` (SVD-xt); a clear error for any missing."""
        svd_path = Path(svd_path)
        paths = {name: find_weight_file(folder, name) for name in DICE_TALK_FILES}
        configs = folder_configs(svd_path) if svd_path.is_dir() else SVD_XT
        return cls(paths, svd_path, configs, precision)

    def load(self, name: str) -> nn.Module:
        """The module ``name`` (a module field of :class:`DiceTalkModels`), read from its file, in eval mode."""
        device, dtype = self.precision.device, self.precision.diffusion
        svd = dict(device=device, dtype=dtype, configs=self.configs)
        readers: dict[str, Callable[[], nn.Module]] = {
            "unet": lambda: load_dice_unet(self.paths[UNET_FILE], self.configs.unet),
            "vae": lambda: load_svd_part(self.svd_path, VAE_PART, **svd),
            "image_encoder": lambda: load_svd_part(self.svd_path, IMAGE_ENCODER_PART, **svd),
            "pose_guider": lambda: load_pose_guider(self.paths[POSE_GUIDER_FILE]),
            "audio_projection": lambda: load_audio_projection(self.paths[AUDIO_PROJECTION_FILE]),
            "emotion_model": lambda: load_emotion_model(self.paths[EMOTION_MODEL_FILE]),
        }
        if name not in readers:
            raise KeyError(f"{name!r} is not a DICE-Talk module; one of {', '.join(readers)}")
        module = readers[name]()
        return module.to(device=device, dtype=DiceTalkModels.module_dtype(name, self.precision)).eval()


def load_dice_talk_models(
    folder: str | Path, svd_path: str | Path, *, device: torch.device | str, dtype: torch.dtype
) -> DiceTalkModels:
    """Every module of a run: DICE-Talk files from ``folder``, VAE/CLIP/scheduler from SVD-xt at ``svd_path``.

    Args:
        folder: the DICE-Talk folder (``unet.pth``, ``audio_linear.pth``, ``emo_model.pth``, ``pose_guider.pth``).
        svd_path: the SVD-xt diffusers folder (its config files are used) or ``svd_xt.safetensors``.
        device: where every module is put.
        dtype: dtype of the UNet, VAE, CLIP image encoder and pose guider (audio/emotion modules run in fp32).
    """
    files = ModelFiles.find(folder, svd_path, Precision(device=torch.device(device), diffusion=dtype))
    return read_dice_talk_models(files)


def read_dice_talk_models(files: ModelFiles, read: Callable[[str], nn.Module] | None = None) -> DiceTalkModels:
    """Every module of ``files``, one after the other, through ``read`` (default ``files.load``), checked
    to come from one model (:func:`check_models_fit`)."""
    read = read or files.load
    models = DiceTalkModels(
        **{name: read(name) for name in DiceTalkModels.MODULES}, scheduler=build_scheduler(files.configs.scheduler)
    )
    check_models_fit(models, files.paths)
    return models


def check_models_fit(models: DiceTalkModels, paths: Mapping[str, Path]) -> None:
    """Refuse DICE-Talk files that each loaded strictly but come from models of different sizes.

    Every size is inferred from its own file, so a pose guider, audio projection or emotion model of
    another model loads on its own and would only fail in the middle of sampling.

    Args:
        models: the loaded modules.
        paths: the file each module came from, by its release file name (:data:`DICE_TALK_FILES`).
    """
    unet, pose, audio, emotion = (
        paths[name].name for name in (UNET_FILE, POSE_GUIDER_FILE, AUDIO_PROJECTION_FILE, EMOTION_MODEL_FILE)
    )
    audio_dim, emotion_dim = (layer.in_features for layer in models.unet.adapter_processors()[0].to_k_ip)
    channels, pose_channels = models.unet.conv_in.out_channels, models.pose_guider.conv_out.out_channels
    audio_tokens, emotion_tokens = models.audio_projection.token_dim, models.emotion_model.emo_linear.token_dim
    prior_dim = models.emotion_model.emo_linear.input_dim
    checks = (
        (pose_channels, channels, f"{pose} gives {pose_channels} feature channels; {unet} takes {channels}"),
        (
            audio_tokens,
            audio_dim,
            f"{audio} makes {audio_tokens}-value tokens; {unet}'s audio attention takes {audio_dim}",
        ),
        (
            emotion_tokens,
            emotion_dim,
            f"{emotion} makes {emotion_tokens}-value tokens; {unet}'s emotion attention takes {emotion_dim}",
        ),
        (
            prior_dim,
            EMOTION_PRIOR_DIM,
            f"{emotion} reads {prior_dim}-value emotion priors; the presets have {EMOTION_PRIOR_DIM}",
        ),
    )
    problems = [message for found, wanted, message in checks if found != wanted]
    if problems:
        folder = paths[UNET_FILE].parent.resolve()
        raise CheckpointError(
            f"The DICE-Talk files in {folder} come from models of different sizes:\n- "
            + "\n- ".join(problems)
            + f"\nUse {', '.join(DICE_TALK_FILES)} of one DICE-Talk release: re-download the file named first."
        )
