"""Windowed EDM sampling with DICE-Talk's three-way classifier-free guidance.

The whole clip (``N`` video frames plus ``window`` padding frames driven by unconditional audio and
emotion) is denoised at once: every step slides windows of ``window`` frames over it (stride
``window - overlap``, start shifted back by an offset that grows by ``shift_offset`` per step,
indices wrapping around), runs one UNet call per window on the batch ``[uncond, reference-only,
full]``, guides ``u + g1 (r - u) + g2 (c - r)``, takes one Euler step per window from the same sigma
pair, and averages the windows per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import EulerDiscreteScheduler

from .errors import CancelledError, InputError
from .unet_adapters import DiceUNet


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling settings; defaults are the official inference config (``dice_talk.yaml``).

    Attributes:
        steps: denoising steps.
        window: frames per UNet call (``n_sample_frames``); also the number of padding frames.
        overlap: frames shared by consecutive windows.
        shift_offset: per-step rotation of the window grid.
        ref_guidance: (first step, last step) scale g1 of the reference image, linear in between.
        audio_guidance: (first step, last step) scale g2 of audio + emotion jointly.
        strength: img2img strength; 1.0 starts from sigma_max.
        fps: the fps micro-condition (generation rate, 12.5).
        motion_bucket_id: second added time id.
        motion_bucket_id_exp: third added time id.
    """

    steps: int = 25
    window: int = 25
    overlap: int = 0
    shift_offset: int = 7
    ref_guidance: tuple[float, float] = (3.0, 3.0)
    audio_guidance: tuple[float, float] = (6.0, 6.0)
    strength: float = 1.0
    fps: float = 12.5
    motion_bucket_id: float = 8.0
    motion_bucket_id_exp: float = 16.0

    def validate(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}.")
        if self.window < 1:
            raise InputError(f"window must be at least 1 frame, got {self.window}.")
        if not 0 <= self.overlap < self.window:
            raise InputError(f"overlap must be between 0 and window - 1 = {self.window - 1}, got {self.overlap}.")
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {self.strength}.")

    def windows(self, total: int, shift: int) -> list[int]:
        """Window start frames (after the shift; may be negative: indices wrap modulo ``total``)."""
        return [start - shift for start in range(0, total, self.window - self.overlap)]


@dataclass(frozen=True)
class ClipConditioning:
    """Everything the sampler needs, per latent frame (``L = N + window``), for the three CFG branches.

    Attributes:
        image_latents: ``(1, 4, h, w)`` unscaled VAE latent of the reference (zero in the uncond branch).
        image_embeds: ``(1, 1, C)`` CLIP image embedding (zero in the uncond branch).
        audio: ``(L, T, C)`` conditional audio tokens (padding frames hold the unconditional ones).
        audio_uncond: ``(L, T, C)`` unconditional audio tokens.
        emotion: ``(L, T, C)`` conditional emotion tokens (padding frames unconditional).
        emotion_uncond: ``(L, T, C)`` unconditional emotion tokens.
        pose_features: ``(1, C0, h, w)`` pose-guider features of the face mask, the same every frame.
        face_mask: ``(1, 1, H, W)`` pixel mask of the spatial adapters, or None for no masking.
    """

    image_latents: torch.Tensor
    image_embeds: torch.Tensor
    audio: torch.Tensor
    audio_uncond: torch.Tensor
    emotion: torch.Tensor
    emotion_uncond: torch.Tensor
    pose_features: torch.Tensor
    face_mask: torch.Tensor | None

    @property
    def num_latent_frames(self) -> int:
        return self.audio.shape[0]


@dataclass(frozen=True)
class WindowResult:
    """Reported after every window: its step, start (after shift), frame indices and results."""

    step: int
    start: int
    frames: list[int]
    guided: torch.Tensor
    latents: torch.Tensor


def guidance_schedule(bounds: tuple[float, float], steps: int, dtype: torch.dtype) -> torch.Tensor:
    """``(steps,)`` scales linear from ``bounds[0]`` to ``bounds[1]``, in ``dtype`` (the official's)."""
    return torch.linspace(bounds[0], bounds[1], steps).to(dtype)


def added_time_ids(settings: SamplerSettings, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(3, 3)`` = ``[fps, motion_bucket_id, motion_bucket_id_exp]`` per CFG branch (no fps - 1)."""
    ids = torch.tensor([[settings.fps, settings.motion_bucket_id, settings.motion_bucket_id_exp]], dtype=dtype)
    return ids.repeat(3, 1).to(device)


def start_timesteps(scheduler: EulerDiscreteScheduler, settings: SamplerSettings, device: torch.device):
    """Set the scheduler's schedule and return the timesteps actually run (img2img strength cut)."""
    scheduler.set_timesteps(settings.steps, device=device)
    run = min(int(settings.steps * settings.strength), settings.steps)
    return scheduler.timesteps[(settings.steps - run) * scheduler.order :]


def initial_latents(
    scheduler: EulerDiscreteScheduler,
    ref_latents: torch.Tensor,
    noise: torch.Tensor,
    first_timestep: torch.Tensor,
) -> torch.Tensor:
    """``ref_latents (1, 4, h, w)`` + sigma(first step) x ``noise (1, L, 4, h, w)`` (not noise x init sigma)."""
    return scheduler.add_noise(ref_latents[:, None], noise, first_timestep.reshape(1))


def _branches(cond: ClipConditioning, frames: list[int]) -> dict[str, torch.Tensor]:
    """Gather one window's inputs for the batch ``[uncond, reference-only, full]``, batch-major."""
    index = torch.tensor(frames, device=cond.audio.device)
    width = len(frames)
    embeds = cond.image_embeds.expand(width, -1, -1)
    audio_u, emotion_u = cond.audio_uncond[index], cond.emotion_uncond[index]
    image = cond.image_latents[:, None].expand(1, width, -1, -1, -1)
    return {
        "image_embeds": torch.cat([torch.zeros_like(embeds), embeds, embeds]),
        "audio": torch.cat([audio_u, audio_u, cond.audio[index]]),
        "emotion": torch.cat([emotion_u, emotion_u, cond.emotion[index]]),
        "image_latents": torch.cat([torch.zeros_like(image), image, image]),
        "pose": cond.pose_features[:, None].expand(3, width, -1, -1, -1),
    }


def sample(
    unet: DiceUNet,
    scheduler: EulerDiscreteScheduler,
    cond: ClipConditioning,
    ref_latents: torch.Tensor,
    noise: torch.Tensor,
    settings: SamplerSettings,
    *,
    on_window: Callable[[WindowResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Denoise a whole clip.

    Args:
        unet: the patched UNet (its dtype is the working dtype).
        scheduler: an ``EulerDiscreteScheduler`` with the SVD-xt config (its state is reset here).
        cond: per-frame conditioning, see :class:`ClipConditioning`.
        ref_latents: ``(1, 4, h, w)`` VAE latent mean of the reference x 0.18215.
        noise: ``(1, L, 4, h, w)`` initial noise.
        settings: see :class:`SamplerSettings`.
        on_window: called after every window (progress, previews, parity checks).
        should_stop: polled before every window; True raises :class:`CancelledError`.

    Returns:
        ``(1, L, 4, h, w)`` final latents (scaled by the VAE scaling factor 0.18215).
    """
    settings.validate()
    total = cond.num_latent_frames
    if noise.shape[1] != total:
        raise InputError(f"noise has {noise.shape[1]} frames but the conditioning has {total}.")
    device, dtype = noise.device, unet.dtype
    timesteps = start_timesteps(scheduler, settings, device)
    g1 = guidance_schedule(settings.ref_guidance, len(timesteps), dtype).tolist()
    g2 = guidance_schedule(settings.audio_guidance, len(timesteps), dtype).tolist()
    time_ids = added_time_ids(settings, dtype, device)
    masks = None if cond.face_mask is None else [cond.face_mask, cond.face_mask]
    latents = initial_latents(scheduler, ref_latents, noise, timesteps[:1])

    shift = 0
    for step, t in enumerate(timesteps):
        summed = torch.zeros_like(latents, dtype=dtype)
        counter = torch.zeros((1, total, 1, 1, 1), dtype=dtype, device=device)
        for start in settings.windows(total, shift):
            if should_stop is not None and should_stop():
                raise CancelledError("Generation cancelled.")
            frames = [(start + j) % total for j in range(settings.window)]
            inputs = _branches(cond, frames)
            window_latents = latents[:, frames]
            scheduler._step_index = None  # every window steps between the same sigma pair
            model_input = scheduler.scale_model_input(torch.cat([window_latents] * 3), t)
            model_input = torch.cat([model_input, inputs["image_latents"]], dim=2)
            prediction = unet(
                model_input,
                t,
                image_embeds=inputs["image_embeds"],
                adapter_tokens=[inputs["audio"], inputs["emotion"]],
                added_time_ids=time_ids,
                pose_features=inputs["pose"],
                masks=masks,
            ).sample
            uncond, reference, full = prediction.chunk(3)
            guided = uncond + g1[step] * (reference - uncond) + g2[step] * (full - reference)
            window_latents = scheduler.step(guided, t.to(dtype), window_latents).prev_sample
            index = torch.tensor(frames, device=device)
            summed.index_add_(1, index, window_latents)
            counter.index_add_(1, index, torch.ones_like(counter[:, : len(frames)]))
            if on_window is not None:
                on_window(WindowResult(step, start, frames, guided, window_latents))
        shift = (shift + settings.shift_offset) % settings.window
        latents = summed / counter
    return latents
