"""DICE-Talk generation, the top of the engine: settings, initial noise, reference encoding, conditioning,
and :func:`generate`, which composes the front ends' outputs, the models, the sampler and the decode.

No math of its own beyond arranging tensors the way the official pipeline feeds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKLTemporalDecoder
from transformers import CLIPVisionModelWithProjection

from . import defaults
from .emotion.conditioning import EmotionConditioning
from .errors import InputError
from .fast_mode import FastMode
from .memory import decode_frame_bytes, unet_call_bytes
from .models import AudioProjection, PoseGuider
from .models.bundle import DiceTalkModels
from .precision import Precision
from .sampler import ClipConditioning, SamplerSettings, WindowResult, sample
from .vae_decode import decode_latents

REFERENCE_LATENT_SCALE = 0.18215  # the official code scales by this literal, not by the VAE config
POSE_GUIDER_BATCH = 8  # identical frames the pose guider runs on (see pose_features)


@dataclass(frozen=True)
class GenerationSettings:
    """Settings of one video; defaults are the official inference config (:mod:`.defaults`).

    Attributes:
        decode_chunk_size: frames per temporal-decoder clip (official 10; other values change the video).
        decode_clips_per_call: clips decoded per VAE call: an int, or ``"auto"`` (from free memory).
            Any value gives the same frames: the clip boundaries stay at multiples of ``decode_chunk_size``.
        fast: opt-in speed-ups that change the result; all off by default (see ``fast_mode``).
    """

    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    adapter_scales: tuple[float, float] = (1.0, 1.0)
    noise_aug_strength: float = 0.0
    decode_chunk_size: int = defaults.DECODE_CHUNK
    decode_clips_per_call: int | str = "auto"
    fast: FastMode = field(default_factory=FastMode)


@dataclass(frozen=True)
class InitialNoise:
    """The two random draws of a run, in the official order.

    Attributes:
        augmentation: ``(1, 3, H, W)`` noise added to the reference before the conditioning encode
            (drawn even at strength 0, as the official does, so seeds line up).
        latents: ``(1, L, 4, h, w)`` initial latent noise.
    """

    augmentation: torch.Tensor
    latents: torch.Tensor

    @classmethod
    def from_seed(cls, seed: int, image_size: tuple[int, int], latent_shape: tuple[int, ...]) -> InitialNoise:
        """Draw both from a CPU ``torch.Generator`` seeded with ``seed``: one seed, one video, on any device."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        augmentation = torch.randn((1, 3, *image_size), generator=generator, dtype=torch.float32)
        latents = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
        return cls(augmentation, latents)


@torch.no_grad()
def audio_tokens(projection: AudioProjection, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame whisper windows ``(N, w, layers, channels)`` -> (cond ``(N, T, C)``, uncond ``(T, C)``).

    Frames are projected one at a time, as the official code does: a batched matmul may round
    differently, and sigma_max = 700 with guidance 6 amplifies that past the parity tolerance.
    The unconditional tokens are the projection of an all-zero window (constant over frames).
    """
    param = next(projection.parameters())
    windows = windows.to(device=param.device, dtype=param.dtype)
    cond = torch.cat([projection(window[None]) for window in windows])
    uncond = projection(torch.zeros_like(windows[:1]))[0]
    return cond, uncond


@torch.no_grad()
def clip_image_embeds(image_encoder: CLIPVisionModelWithProjection, clip_image: torch.Tensor) -> torch.Tensor:
    """``(3, S, S)`` CLIP-normalised image -> ``(1, 1, C)`` projected image embedding."""
    param = next(image_encoder.parameters())
    embeds = image_encoder(clip_image[None].to(device=param.device, dtype=param.dtype)).image_embeds
    return embeds[:, None]


@torch.no_grad()
def encode_reference(
    vae: AutoencoderKLTemporalDecoder,
    ref_image: torch.Tensor,
    augmentation: torch.Tensor,
    strength: float,
    precision: Precision,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE-encode the reference image.

    Args:
        ref_image: ``(3, H, W)`` in [-1, 1].
        augmentation: ``(1, 3, H, W)`` noise; ``strength`` times it is added for the conditioning latent.

    Returns:
        ``ref_latents`` ``(1, 4, h, w)`` = latent mean x 0.18215 (the start of sampling) and
        ``image_latents`` ``(1, 4, h, w)`` = unscaled latent mode of the augmented image (the
        conditioning concatenated to the UNet input). Both in the diffusion dtype.
    """
    decode_dtype = vae.dtype
    vae.to(dtype=precision.vae_encode)
    try:
        image = ref_image[None].to(device=precision.device, dtype=precision.vae_encode)
        ref_mean = vae.encode(image).latent_dist.mean
        if strength == 0:
            image_latents = ref_mean  # the same image: the mode equals the mean
        else:
            augmented = image + strength * augmentation.to(image)
            image_latents = vae.encode(augmented).latent_dist.mode()
    finally:
        vae.to(dtype=decode_dtype)
    return (ref_mean * REFERENCE_LATENT_SCALE).to(precision.diffusion), image_latents.to(precision.diffusion)


def pad_frames(per_frame: torch.Tensor, padding: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, T, C)`` (or one ``(T, C)`` broadcast to ``n_frames``) + ``count`` copies of ``padding (T, C)``."""
    return torch.cat([per_frame, padding[None].expand(count, -1, -1)])


@torch.no_grad()
def pose_features(pose_guider: PoseGuider, mask: torch.Tensor, frames: int) -> torch.Tensor:
    """Pose-guider features ``(1, C0, h, w)`` of the face mask ``(3, H, W)``, the same for every frame.

    The official code runs the guider over all ``frames`` (N + 25) identical copies at once: memory
    grows with the clip (2-4 x 8.4 MB per frame at 512x512). Every copy gives the same features, so
    this runs ``min(frames, POSE_GUIDER_BATCH)`` copies and keeps one. Not one copy: on the CPU a
    convolution over a batch of 1 takes another kernel that rounds differently (1e-7, which the
    golden cases' sigma_max = 700 and guidance 6 amplify past their tolerance); batches of 2 and
    more round like the official batch.
    """
    frames = min(frames, POSE_GUIDER_BATCH)
    video = mask[None, :, None].expand(1, -1, frames, -1, -1).contiguous()
    return pose_guider.forward_video(video)[:, :, 0]


@dataclass(frozen=True)
class ReferenceInputs:
    """The prepared portrait (see ``face``): model-size tensors."""

    ref_image: torch.Tensor  # (3, H, W) in [-1, 1]
    clip_image: torch.Tensor  # (3, S, S) CLIP-normalised
    face_mask: torch.Tensor  # (3, H, W) in [0, 1]


@torch.no_grad()
def build_conditioning(
    models: DiceTalkModels,
    reference: ReferenceInputs,
    audio_windows: torch.Tensor,
    emotion: EmotionConditioning,
    settings: GenerationSettings,
    augmentation: torch.Tensor,
    precision: Precision,
) -> tuple[ClipConditioning, torch.Tensor]:
    """Everything the sampler needs, and the reference latents ``(1, 4, h, w)`` it starts from."""
    window = settings.sampler.window
    dtype, device = precision.diffusion, precision.device
    audio_cond, audio_uncond = audio_tokens(models.audio_projection, audio_windows)
    n_frames = audio_cond.shape[0]
    emo_cond, emo_uncond = emotion.per_frame(n_frames), emotion.uncond
    ref_latents, image_latents = encode_reference(
        models.vae, reference.ref_image, augmentation, settings.noise_aug_strength, precision
    )
    mask = reference.face_mask.to(device=device, dtype=models.pose_guider.conv_in.weight.dtype)
    total = n_frames + window
    pose = pose_features(models.pose_guider, mask, total)
    cond = ClipConditioning(
        image_latents=image_latents,
        image_embeds=clip_image_embeds(models.image_encoder, reference.clip_image).to(dtype),
        audio=pad_frames(audio_cond, audio_uncond, window).to(dtype),
        audio_uncond=audio_uncond.to(dtype)[None].expand(total, -1, -1),  # one copy, viewed per frame
        emotion=pad_frames(emo_cond, emo_uncond, window).to(dtype),
        emotion_uncond=emo_uncond.to(dtype)[None].expand(total, -1, -1),
        pose_features=pose.to(dtype),
        face_mask=mask[None, :1],
    )
    return cond, ref_latents


@torch.no_grad()
def generate(
    models: DiceTalkModels,
    reference: ReferenceInputs,
    audio_windows: torch.Tensor,
    emotion: EmotionConditioning,
    settings: GenerationSettings,
    precision: Precision,
    *,
    seed: int | None = None,
    noise: InitialNoise | None = None,
    on_window: Callable[[WindowResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_stage: Callable[[str, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Portrait + per-frame audio windows + emotion prior -> video frames at the generation rate.

    Args:
        audio_windows: ``(N, w, layers, channels)`` whisper windows, one per generated frame.
        emotion: emotion tokens (whole clip or per frame), see :mod:`.emotion.conditioning`.
        seed / noise: exactly one; the seed draws :class:`InitialNoise` in the official order.
        on_stage: called before each stage of :data:`~.models.bundle.STAGE_MODULES` with its name and the working
            memory it needs beyond its modules (bytes; 0 when small: the sampling stage names one UNet
            call's activations, the decode one temporal clip's), so a caller can load just those modules
            and make room for them.

    Returns:
        ``frames`` ``(N, 3, H, W)`` float32 in [0, 1] on the CPU and the final latents ``(1, N + window, 4, h, w)``.
    """
    if (seed is None) == (noise is None):
        raise InputError("Give exactly one of seed or noise.")
    if audio_windows.shape[0] < 1:
        raise InputError("The audio is too short to make a single frame; use at least 0.08 s of speech.")
    _, height, width = reference.ref_image.shape
    factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    total = audio_windows.shape[0] + settings.sampler.window
    latent_shape = (1, total, models.vae.config.latent_channels, height // factor, width // factor)
    if noise is None:
        noise = InitialNoise.from_seed(seed, (height, width), latent_shape)
    stage = on_stage or (lambda _name, _memory: None)
    stage("conditioning", 0)
    cond, ref_latents = build_conditioning(
        models, reference, audio_windows, emotion, settings, noise.augmentation, precision
    )
    branches = 3 * settings.sampler.window
    stage("sampling", unet_call_bytes(models.unet.config, latent_shape[-2:], branches, precision.diffusion))
    models.unet.set_adapter_scales(*settings.adapter_scales)
    latents = sample(
        models.unet,
        models.scheduler,
        cond,
        ref_latents,
        noise.latents.to(device=precision.device, dtype=precision.diffusion),
        settings.sampler,
        fast=settings.fast,
        on_window=on_window,
        should_stop=should_stop,
    )
    chunk_size = settings.fast.decode_chunk_size or settings.decode_chunk_size
    stage("decode", decode_frame_bytes(models.vae, latent_shape[-2:]) * chunk_size)
    with settings.fast.decode_context(precision.device):
        frames = decode_latents(
            models.vae,
            latents,
            audio_windows.shape[0],
            chunk_size,
            should_stop=should_stop,
            clips_per_call=settings.decode_clips_per_call,
        )
    return frames, latents
