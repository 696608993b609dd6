"""Architectures of every module of a run: the official ones, and scaled-down ones of the same structure.

Standard library only: plain constructor arguments. :data:`OFFICIAL` is what the release's files hold:
SVD-xt's UNet (with DICE-Talk's audio and emotion attention), VAE, CLIP image encoder and scheduler,
whisper-tiny, and the DICE-Talk audio projection, emotion model and pose guider. The loaders build
the official architectures from it; ``random_models`` builds any layout with random weights for tests
(:data:`TINY`), benches (:data:`TINY`, :data:`MEDIUM`, :data:`OFFICIAL`) and the GPU check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..rates import AUDIO_WINDOW

SVD_XT_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 96,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "CrossAttnDownBlockSpatioTemporal",
        "DownBlockSpatioTemporal",
    ],
    "up_block_types": [
        "UpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
        "CrossAttnUpBlockSpatioTemporal",
    ],
    "block_out_channels": [320, 640, 1280, 1280],
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "transformer_layers_per_block": 1,
    "num_attention_heads": [5, 10, 20, 20],
    "num_frames": 25,
}
"""``unet/config.json`` of the SVD-xt folder (kwargs of ``UNetSpatioTemporalConditionModel``)."""

SVD_XT_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
"""``vae/config.json`` (kwargs of ``AutoencoderKLTemporalDecoder``)."""

SVD_XT_IMAGE_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
}
"""``image_encoder/config.json``: OpenCLIP ViT-H/14 (kwargs of ``CLIPVisionConfig``)."""

SVD_XT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "prediction_type": "v_prediction",
    "interpolation_type": "linear",
    "use_karras_sigmas": True,
    "sigma_min": 0.002,
    "sigma_max": 700.0,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "steps_offset": 1,
}
"""``scheduler/scheduler_config.json`` (``EulerDiscreteScheduler``)."""


WHISPER_TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 51865,
    "num_mel_bins": 80,
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}
"""``config.json`` of openai/whisper-tiny (kwargs of ``WhisperConfig``)."""


@dataclass(frozen=True)
class ModelLayout:
    """The architecture of every module of a run (constructor arguments).

    Attributes:
        name: ``official``, ``medium`` or ``tiny``.
        unet: ``UNetSpatioTemporalConditionModel`` kwargs (the stock UNet the adapters go into).
        vae: ``AutoencoderKLTemporalDecoder`` kwargs.
        image_encoder: ``CLIPVisionConfig`` kwargs.
        scheduler: ``EulerDiscreteScheduler`` kwargs.
        whisper: ``WhisperConfig`` kwargs.
        audio_hidden: hidden width of the audio projection.
        emotion_model: ``EmotionModel`` kwargs.
        pose_guider_channels: the pose guider's stage widths.
        resolution: the video side this layout is run at.
    """

    name: str
    unet: Mapping[str, Any]
    vae: Mapping[str, Any]
    image_encoder: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    whisper: Mapping[str, Any]
    audio_hidden: int
    emotion_model: Mapping[str, Any]
    pose_guider_channels: tuple[int, ...]
    resolution: int

    @property
    def window(self) -> int:
        """Frames per UNet call (the sampler's window)."""
        return self.unet["num_frames"]

    @property
    def latent_size(self) -> int:
        """The latent side at :attr:`resolution` (the VAE downsamples by 8)."""
        return self.resolution // 8

    @property
    def tokens(self) -> int:
        """Audio and emotion tokens per frame."""
        return self.emotion_model["num_tokens"]

    @property
    def audio_projection(self) -> dict[str, int]:
        """``AudioProjection`` kwargs: one frame's whisper window (all hidden states) -> tokens."""
        width = AUDIO_WINDOW * (self.whisper["encoder_layers"] + 1) * self.whisper["d_model"]
        cross = self.unet["cross_attention_dim"]
        return dict(input_dim=width, intermediate_dim=self.audio_hidden, token_dim=cross, num_tokens=self.tokens)

    @property
    def pose_guider(self) -> dict[str, Any]:
        """``PoseGuider`` kwargs: features as wide as the UNet's first stage."""
        return dict(out_channels=self.unet["block_out_channels"][0], block_out_channels=self.pose_guider_channels)


OFFICIAL = ModelLayout(
    name="official",
    unet=SVD_XT_UNET_CONFIG,
    vae=SVD_XT_VAE_CONFIG,
    image_encoder=SVD_XT_IMAGE_ENCODER_CONFIG,
    scheduler=SVD_XT_SCHEDULER_CONFIG,
    whisper=WHISPER_TINY_CONFIG,
    audio_hidden=1024,
    emotion_model=dict(
        in_dim=256,
        dim=1024,
        intermediate_dim=1024,
        num_tokens=32,
        num_codes=64,
        num_heads=8,
        classifier=(1280, 512, 256, 22),
    ),
    pose_guider_channels=(16, 32, 96, 256),
    resolution=512,
)

MEDIUM = ModelLayout(
    name="medium",
    unet={
        **SVD_XT_UNET_CONFIG,
        "sample_size": None,
        "block_out_channels": [32, 64, 128, 128],
        "num_attention_heads": [1, 1, 2, 2],
    },
    vae={**SVD_XT_VAE_CONFIG, "block_out_channels": [32, 64, 128, 128], "sample_size": 256},
    image_encoder={
        **SVD_XT_IMAGE_ENCODER_CONFIG,
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "patch_size": 32,
    },
    scheduler=SVD_XT_SCHEDULER_CONFIG,
    whisper=WHISPER_TINY_CONFIG,
    audio_hidden=1024,
    emotion_model={**OFFICIAL.emotion_model, "classifier": (32, 16, 8, 22)},
    pose_guider_channels=(16, 32, 96, 256),
    resolution=256,
)
"""SVD-xt's structure (4 levels, 2 layers per block, cross-attention width 1024, 32 + 32 tokens, 25-frame
windows) at a tenth of its width, whisper-tiny's real layout and the DICE-Talk modules at their real
sizes, at 256x256: runs on a 2-core CPU in minutes per clip."""

TINY = ModelLayout(
    name="tiny",
    unet={
        "sample_size": None,
        "in_channels": 8,
        "out_channels": 4,
        "num_frames": 25,
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
        "block_out_channels": [32, 32],
        "num_attention_heads": [2, 2],
        "cross_attention_dim": 32,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24,
    },
    vae={**SVD_XT_VAE_CONFIG, "block_out_channels": [32] * 4, "layers_per_block": 1, "sample_size": 64},
    image_encoder={
        **SVD_XT_IMAGE_ENCODER_CONFIG,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 32,
        "projection_dim": 32,
    },
    scheduler=SVD_XT_SCHEDULER_CONFIG,
    whisper={
        **WHISPER_TINY_CONFIG,
        "vocab_size": 64,
        "d_model": 16,
        "encoder_layers": 2,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "max_target_positions": 32,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 1,
        "suppress_tokens": None,
        "begin_suppress_tokens": None,
    },
    audio_hidden=24,
    emotion_model=dict(
        in_dim=256, dim=32, intermediate_dim=24, num_tokens=4, num_codes=8, num_heads=8, classifier=(32, 16, 8, 22)
    ),
    pose_guider_channels=(8, 16, 16, 32),
    resolution=64,
)
"""Seconds per clip: for tests (width 32, 4 tokens, 64x64 video, 25-frame windows)."""

LAYOUTS = {layout.name: layout for layout in (TINY, MEDIUM, OFFICIAL)}
