"""A complete DICE-Talk models folder with tiny random weights, laid out like the real one.

Every file is written in the official format (``.pth`` tensor dicts, a diffusers SVD-xt folder,
a transformers whisper folder, RIFE's ``module.``-prefixed ``flownet.pkl``), so the loaders under
test are the ones users run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from test_interpolation import write_official_pkl
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from dicetalk_core.models import AudioProjection, EmotionModel, PoseGuider
from dicetalk_core.models.layouts import SVD_XT_SCHEDULER_CONFIG
from dicetalk_core.unet_adapters import install_dice_adapters

WIDTH = 32
TOKENS = 4
WHISPER_DIM = 16
WHISPER_LAYERS = 2

UNET_CONFIG = dict(
    sample_size=None,
    in_channels=8,
    out_channels=4,
    num_frames=25,
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(WIDTH, WIDTH),
    num_attention_heads=(2, 2),
    cross_attention_dim=WIDTH,
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(WIDTH,) * 4,
    layers_per_block=1,
    latent_channels=4,
    sample_size=64,
    scaling_factor=0.18215,
    force_upcast=True,
)
SCHEDULER_CONFIG = SVD_XT_SCHEDULER_CONFIG


def write_svd_folder(folder: Path) -> None:
    torch.manual_seed(10)
    AutoencoderKLTemporalDecoder(**VAE_CONFIG).save_pretrained(folder / "vae")
    clip = CLIPVisionConfig(
        hidden_size=WIDTH,
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        image_size=224,
        patch_size=32,
        projection_dim=WIDTH,
    )
    CLIPVisionModelWithProjection(clip).save_pretrained(folder / "image_encoder")
    EulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    UNetSpatioTemporalConditionModel(**UNET_CONFIG).save_pretrained(folder / "unet")


def write_whisper_folder(folder: Path) -> None:
    torch.manual_seed(11)
    config = WhisperConfig(
        d_model=WHISPER_DIM,
        encoder_layers=WHISPER_LAYERS,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        max_target_positions=32,
        num_mel_bins=80,
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)


def write_dice_talk_files(folder: Path) -> None:
    torch.manual_seed(12)
    unet = install_dice_adapters(UNetSpatioTemporalConditionModel(**UNET_CONFIG), num_tokens=(TOKENS, TOKENS))
    torch.save(unet.state_dict(), folder / "unet.pth")
    window_inputs = 10 * (WHISPER_LAYERS + 1) * WHISPER_DIM
    torch.save(AudioProjection(window_inputs, 24, WIDTH, TOKENS).state_dict(), folder / "audio_linear.pth")
    emotion = EmotionModel(
        in_dim=256,
        dim=WIDTH,
        intermediate_dim=24,
        num_tokens=TOKENS,
        num_codes=8,
        num_heads=8,
        classifier=(WIDTH, 16, 8, 22),
    )
    save_file(emotion.state_dict(), str(folder / "emo_model.safetensors"))
    torch.save(PoseGuider(WIDTH, (8, 16, 16, 32)).state_dict(), folder / "pose_guider.pth")


def write_models_folder(folder: Path) -> Path:
    """Write the whole tiny folder; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    write_dice_talk_files(folder)
    write_svd_folder(folder / "stable-video-diffusion-img2vid-xt")
    write_whisper_folder(folder / "whisper-tiny")
    (folder / "RIFE").mkdir(exist_ok=True)
    write_official_pkl(folder / "RIFE" / "flownet.pkl")
    (folder / "emotions").mkdir(exist_ok=True)
    rng = np.random.default_rng(13)
    for name in ("happy", "neutral"):
        np.save(folder / "emotions" / f"{name}.npy", rng.normal(0, 0.85, (1, 256)).astype(np.float32))
    return folder
