"""Windowed EDM sampling with DICE-Talk's three-way classifier-free guidance.

The whole clip (``N`` video frames plus ``window`` padding frames driven by unconditional audio and
emotion) is denoised at once: every step slides windows of ``window`` frames over it (stride
``window - overlap``, start shifted back by an offset that grows by ``shift_offset`` per step,
indices wrapping around), runs one UNet call per window on the batch ``[uncond, reference-only,
full]``, guides ``u + g1 (r - u) + g2 (c - r)``, takes one Euler step per window from the same sigma
pair, and averages the windows per frame.

Per run, the window-invariant inputs are built once; per window only the frame-indexed tokens are
gathered. ``fast`` (:class:`~dicetalk_core.fast_mode.FastMode`, off by default) may replace the
three-way batch by the full branch alone on some steps, run the UNet under autocast, or reuse the
UNet's deep features across steps (:mod:`~dicetalk_core.feature_cache`, per clip frame and CFG branch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import EulerDiscreteScheduler

from . import defaults
from .errors import CancelledError, InputError
from .fast_mode import FULL, REUSE, FastMode, compiled_unet
from .feature_cache import ALL_BRANCHES, FULL_BRANCH, FeatureCache
from .rates import GENERATION_FPS
from .unet_adapters import DiceUNet


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling settings; defaults are the official inference config (:mod:`.defaults`).

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

    steps: int = defaults.STEPS
    window: int = defaults.WINDOW
    overlap: int = defaults.OVERLAP
    shift_offset: int = defaults.SHIFT_OFFSET
    ref_guidance: tuple[float, float] = (defaults.REF_GUIDANCE, defaults.REF_GUIDANCE)
    audio_guidance: tuple[float, float] = (defaults.AUDIO_GUIDANCE, defaults.AUDIO_GUIDANCE)
    strength: float = 1.0
    fps: float = GENERATION_FPS
    motion_bucket_id: float = float(defaults.MOTION_BUCKET_ID)
    motion_bucket_id_exp: float = float(defaults.MOTION_BUCKET_ID_EXP)

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

    def window_count(self, n_frames: int) -> int:
        """Windows run over all steps for a clip of ``n_frames`` generated frames (plus the padding window)."""
        return len(self.windows(n_frames + self.window, 0)) * self.steps


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
    """Reported after every window: its step, start (after shift), frame indices and results.

    Attributes:
        guided: ``(1, window, 4, h, w)`` the guided model output of the step.
        latents: ``(1, window, 4, h, w)`` the window's latents after the step.
        denoised: ``(1, window, 4, h, w)`` the step's estimate of the clean latents (for previews).
    """

    step: int
    start: int
    frames: list[int]
    guided: torch.Tensor
    latents: torch.Tensor
    denoised: torch.Tensor


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


class _WindowInputs:
    """One clip's conditioning arranged per window for the UNet (built once per run, gathered per window).

    The window-invariant parts (image latents, CLIP embeddings, pose features, time ids) are built once;
    per window only the frame-indexed audio and emotion tokens are gathered.
    """

    def __init__(self, cond: ClipConditioning, settings: SamplerSettings, dtype: torch.dtype, device: torch.device):
        self.cond = cond
        width = settings.window
        embeds = cond.image_embeds.expand(width, -1, -1)
        image = cond.image_latents[:, None].expand(1, width, -1, -1, -1)
        self.all_branches = {
            "image_embeds": torch.cat([torch.zeros_like(embeds), embeds, embeds]),
            "image_latents": torch.cat([torch.zeros_like(image), image, image]),
            "time_ids": added_time_ids(settings, dtype, device),
        }
        self.full_branch = {
            "image_embeds": embeds.contiguous(),
            "image_latents": image.contiguous(),
            "time_ids": self.all_branches["time_ids"][:1],
        }
        self.pose = cond.pose_features  # (1, C0, h, w): broadcast to every frame inside the UNet

    def unet_kwargs(self, index: torch.Tensor, three_way: bool) -> dict:
        """UNet inputs of the frames ``index`` for all three branches ``[uncond, reference, full]`` or the full
        branch alone."""
        cond = self.cond
        if three_way:
            audio_u, emotion_u = cond.audio_uncond[index], cond.emotion_uncond[index]
            audio = torch.cat([audio_u, audio_u, cond.audio[index]])
            emotion = torch.cat([emotion_u, emotion_u, cond.emotion[index]])
            fixed = self.all_branches
        else:
            audio, emotion, fixed = cond.audio[index], cond.emotion[index], self.full_branch
        return {
            "image_embeds": fixed["image_embeds"],
            "adapter_tokens": [audio, emotion],
            "added_time_ids": fixed["time_ids"],
            "pose_features": self.pose,
            "image_latents": fixed["image_latents"],
        }


def sample(
    unet: DiceUNet,
    scheduler: EulerDiscreteScheduler,
    cond: ClipConditioning,
    ref_latents: torch.Tensor,
    noise: torch.Tensor,
    settings: SamplerSettings,
    *,
    fast: FastMode | None = None,
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
        fast: opt-in speed-ups that change the result (:class:`~dicetalk_core.fast_mode.FastMode`);
            None or all-off is the exact path.
        on_window: called after every window (progress, previews, parity checks).
        should_stop: polled before every window; True raises :class:`CancelledError`.

    Returns:
        ``(1, L, 4, h, w)`` final latents (scaled by the VAE scaling factor 0.18215).
    """
    settings.validate()
    fast = fast or FastMode()
    fast.validate()
    total = cond.num_latent_frames
    if noise.shape[1] != total:
        raise InputError(f"noise has {noise.shape[1]} frames but the conditioning has {total}.")
    device, dtype = noise.device, unet.dtype
    timesteps = start_timesteps(scheduler, settings, device)
    g1 = guidance_schedule(settings.ref_guidance, len(timesteps), dtype).tolist()
    g2 = guidance_schedule(settings.audio_guidance, len(timesteps), dtype).tolist()
    kinds = fast.step_kinds(len(timesteps))
    model = compiled_unet(unet) if fast.compile else unet
    cache = None
    if fast.caches_features:
        cache = FeatureCache(unet, fast.cache_depth, fast.cache_interval, fast.cache_threshold, total)
    masks = None if cond.face_mask is None else [cond.face_mask, cond.face_mask]
    inputs = _WindowInputs(cond, settings, dtype, device)
    latents = initial_latents(scheduler, ref_latents, noise, timesteps[:1])
    cached_terms = None
    if REUSE in kinds:  # per frame: r - u and c - r of the frame's last three-way step
        cached_terms = torch.zeros((2, *latents.shape), dtype=dtype, device=device)

    shift = 0
    for step, t in enumerate(timesteps):
        summed = torch.zeros_like(latents, dtype=dtype)
        counter = torch.zeros((1, total, 1, 1, 1), dtype=dtype, device=device)
        three_way = kinds[step] == FULL
        for start in settings.windows(total, shift):
            if should_stop is not None and should_stop():
                raise CancelledError("Generation cancelled.")
            frames = [(start + j) % total for j in range(settings.window)]
            index = torch.tensor(frames, device=device)
            kwargs = inputs.unet_kwargs(index, three_way)
            window_latents = latents[:, index]
            scheduler._step_index = None  # every window steps between the same sigma pair
            branches = 3 if three_way else 1
            model_input = scheduler.scale_model_input(torch.cat([window_latents] * branches), t)
            model_input = torch.cat([model_input, kwargs.pop("image_latents")], dim=2)
            with fast.autocast_context(device):
                if cache is None:
                    prediction = model(model_input, t, masks=masks, **kwargs).sample
                else:
                    slots = ALL_BRANCHES if three_way else FULL_BRANCH
                    prediction = cache(step, slots, index, model_input, t, masks=masks, **kwargs)
            prediction = prediction.to(dtype)
            if three_way:
                uncond, reference, full = prediction.chunk(3)
                guided = uncond + g1[step] * (reference - uncond) + g2[step] * (full - reference)
                if cached_terms is not None:
                    cached_terms[0, :, index] = reference - uncond
                    cached_terms[1, :, index] = full - reference
            elif kinds[step] == REUSE:
                terms = cached_terms[:, :, index]
                guided = prediction + (g1[step] - 1) * terms[0] + (g2[step] - 1) * terms[1]
            else:
                guided = prediction
            stepped = scheduler.step(guided, t.to(dtype), window_latents)
            window_latents = stepped.prev_sample
            summed.index_add_(1, index, window_latents)
            counter.index_add_(1, index, torch.ones_like(counter[:, : len(frames)]))
            if on_window is not None:
                on_window(WindowResult(step, start, frames, guided, window_latents, stepped.pred_original_sample))
        shift = (shift + settings.shift_offset) % settings.window
        latents = summed / counter
    return latents
