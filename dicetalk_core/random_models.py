"""Random-weight models of any layout (:mod:`.models.layouts`): built in memory, or written as a models folder.

For tests, benches and the GPU check: nothing is downloaded, and a folder written here is laid out and
serialised like the real one (``.pth`` tensor dicts, a diffusers SVD-xt folder, a transformers whisper
folder, RIFE's ``module.``-prefixed ``flownet.pkl``), so the loaders under test are the ones users run.
The same seed gives the same weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .audio import WhisperAudioEncoder
from .interpolation import IFBlock, IFNet
from .model_files import (
    AUDIO_PROJECTION_FILE,
    EMOTION_MODEL_FILE,
    EMOTIONS_FOLDER,
    POSE_GUIDER_FILE,
    RIFE_FILE,
    SVD_FOLDER,
    UNET_FILE,
    WHISPER_FOLDER,
    accepted_names,
)
from .models import AudioProjection, EmotionModel, PoseGuider
from .models.bundle import DiceTalkModels
from .models.layouts import TINY, ModelLayout
from .unet_adapters import DiceUNet, install_dice_adapters

OUTPUT_SCALE = 0.05
"""The random UNet's output layer is scaled by this, so that 25 steps from sigma 700 stay finite."""
TEACHER_IN_CHANNELS = 14
"""Input channels of RIFE's training-only teacher block (the official file holds it)."""


def build_unet(layout: ModelLayout, *, seed: int = 0) -> DiceUNet:
    """The stock UNet of ``layout`` with the DICE-Talk adapters, random weights, eval mode (on the default device)."""
    torch.manual_seed(seed)
    unet = install_dice_adapters(UNetSpatioTemporalConditionModel(**layout.unet), (layout.tokens, layout.tokens))
    with torch.no_grad():
        unet.conv_out.weight.mul_(OUTPUT_SCALE)
    return unet.eval()


def build_models(
    layout: ModelLayout = TINY, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> DiceTalkModels:
    """Every module of ``layout`` with random weights (the audio projection and emotion model in float32).

    The weights are initialised on ``device`` itself (no CPU copy of a full-size model); the scheduler is
    made on the CPU, as its constructor reads its tensors with numpy.
    """
    with torch.device(device):
        unet = build_unet(layout, seed=seed)
        torch.manual_seed(seed + 1)
        modules = {
            "vae": AutoencoderKLTemporalDecoder(**layout.vae),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**layout.image_encoder)),
            "pose_guider": PoseGuider(**layout.pose_guider),
            "audio_projection": AudioProjection(**layout.audio_projection),
            "emotion_model": EmotionModel(**layout.emotion_model),
        }
    models = DiceTalkModels(unet=unet, **modules, scheduler=EulerDiscreteScheduler(**layout.scheduler))
    for name in DiceTalkModels.MODULES:  # some scalars (diffusers' mix factors) are made on the CPU regardless
        module_dtype = torch.float32 if name in DiceTalkModels.CONDITIONING_MODULES else dtype
        getattr(models, name).to(device=device, dtype=module_dtype).eval().requires_grad_(False)
    return models


def build_whisper(
    layout: ModelLayout = TINY, *, device: torch.device | str = "cpu", seed: int = 3
) -> WhisperAudioEncoder:
    """The whisper encoder of ``layout`` with random weights, as the audio front end uses it."""
    torch.manual_seed(seed)
    encoder = WhisperEncoder(WhisperConfig(**layout.whisper)).to(device).eval()
    return WhisperAudioEncoder(WhisperFeatureExtractor(), encoder)


def write_models_folder(folder: str | Path, layout: ModelLayout = TINY, *, seed: int = 0) -> Path:
    """A complete DICE-Talk models folder of ``layout`` (the layout of ``model_files``); returns it.

    The emotion model is written as ``emo_model.safetensors`` (the accepted sibling of the release's
    ``.pth``), the others as the release's ``.pth`` tensor dicts; two emotion presets (happy, neutral).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = build_models(layout, seed=seed)
    torch.save(models.unet.state_dict(), folder / UNET_FILE)
    torch.save(models.audio_projection.state_dict(), folder / AUDIO_PROJECTION_FILE)
    save_file(models.emotion_model.state_dict(), str(folder / accepted_names(EMOTION_MODEL_FILE)[1]))
    torch.save(models.pose_guider.state_dict(), folder / POSE_GUIDER_FILE)
    write_svd_folder(folder / SVD_FOLDER, models)
    write_whisper_folder(folder / WHISPER_FOLDER, layout, seed=seed + 3)
    write_rife_file(folder / RIFE_FILE, seed=seed + 4)
    (folder / EMOTIONS_FOLDER).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed + 5)
    for name in ("happy", "neutral"):
        prior = rng.normal(0, 0.85, (1, layout.emotion_model["in_dim"])).astype(np.float32)
        np.save(folder / EMOTIONS_FOLDER / f"{name}.npy", prior)
    return folder


def write_svd_folder(folder: Path, models: DiceTalkModels) -> None:
    """A diffusers SVD-xt folder: the VAE, the CLIP image encoder, the scheduler, the stock UNet's config
    and weights (those of ``models.unet`` without the DICE-Talk adapters)."""
    models.vae.save_pretrained(folder / "vae")
    models.image_encoder.save_pretrained(folder / "image_encoder")
    models.scheduler.save_pretrained(folder / "scheduler")
    stock = UNetSpatioTemporalConditionModel.from_config(models.unet.config)
    stock.load_state_dict({k: v for k, v in models.unet.state_dict().items() if ".processor." not in k})
    stock.save_pretrained(folder / "unet")


def write_whisper_folder(folder: Path, layout: ModelLayout, *, seed: int = 3) -> None:
    """A transformers whisper folder (encoder and decoder, as the release's whisper-tiny)."""
    torch.manual_seed(seed)
    WhisperModel(WhisperConfig(**layout.whisper)).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)


def write_rife_file(path: Path, *, seed: int = 4) -> None:
    """``flownet.pkl`` as the release holds it: ``module.``-prefixed keys, the teacher block included."""
    torch.manual_seed(seed)
    state = {f"module.{k}": v for k, v in IFNet().state_dict().items()}
    state |= {f"module.block_tea.{k}": v for k, v in IFBlock(TEACHER_IN_CHANNELS).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
