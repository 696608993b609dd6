"""Opt-in speed-ups that change the result (all OFF by default: the default is the exact, parity-checked path).

None of these is validated on the real DICE-Talk weights: each was measured for speed and for its
deviation from the exact path on random-weight models only (``bench/fast_mode.py``). Turn them on
one at a time and look at the video.

* ``autocast``: run the UNet under ``torch.autocast`` in bf16 or fp16 (weights stay as loaded; the
  scheduler step, guidance and window averaging stay in the working dtype). On GPUs with fast
  half-precision matmuls this is the usual ~2x; CPUs without bf16 instructions get slower.
* ``guidance_interval``: the three-way guided batch ``[uncond, reference, full]`` runs only on the
  steps whose index ``i`` satisfies ``lo * steps <= i < hi * steps``; the other steps run the full
  branch alone (batch 1 instead of 3, i.e. guidance scales taken as 1).
* ``guidance_reuse``: on guided steps, the three-way batch runs every ``k``-th step only; in between,
  the full branch runs alone and the guidance terms ``r - u`` and ``c - r`` of the frame's last
  three-way step are reused (cached per frame, latent-sized: ``2 x (N + 25) x 4 x h x w``).
* ``compile``: ``torch.compile`` the UNet (first call compiles: minutes; needs a C++ compiler on CPU).
* ``cache_interval`` / ``cache_threshold`` with ``cache_depth``: UNet feature caching across steps
  (``feature_cache``): between full UNet calls, cached calls run only the layers above the skip
  connection ``cache_depth`` and reuse the deeper layers' output of the frames' last full call. Uniform:
  the full UNet every ``cache_interval``-th step. Adaptive: a call is cached while the first down layer's
  output changed by less than ``cache_threshold`` (relative L1) since that call. Not with ``compile``.
* ``decode_autocast``: the VAE decode under ``torch.autocast`` in bf16 or fp16 (only for fp32 runs; pays
  where the device has fast half-precision convolutions). ``decode_chunk_size``: frames per
  temporal-decoder clip instead of ``GenerationSettings.decode_chunk_size`` (official 10): another clip
  size mixes frames over other boundaries (the frames change) and may decode faster.
* ``interpolation_autocast`` / ``interpolation_batch``: RIFE under autocast (fp16 on GPUs) and over
  several frame pairs per call.

Fewer denoising steps is the plain ``SamplerSettings.steps`` (official 25).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from .errors import InputError

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

FULL, REUSE, UNGUIDED = "full", "reuse", "unguided"

DEFAULT_CACHE_DEPTH = 0


@dataclass(frozen=True)
class FastMode:
    """Which speed-ups are on (see the module docstring); the defaults are all off.

    Attributes:
        autocast: None, ``"bf16"`` or ``"fp16"``.
        guidance_interval: ``(lo, hi)`` fractions of the steps that get three-way guidance.
        guidance_reuse: run the three-way batch every ``k``-th guided step (1 = every step).
        compile: ``torch.compile`` the UNet.
        cache_interval: uniform feature caching: the full UNet every ``k``-th step (1 = off).
        cache_depth: the skip connection cached calls run down to (0 = shallowest and cheapest).
        cache_threshold: adaptive feature caching when > 0: the relative change of the first down
            layer's output below which a call reuses the deep features (0 = off).
        decode_autocast: None, ``"bf16"`` or ``"fp16"`` for the VAE decode.
        decode_chunk_size: frames per temporal-decoder clip, or None for the generation settings' (official 10).
        interpolation_autocast: None, ``"bf16"`` or ``"fp16"`` for RIFE.
        interpolation_batch: frame pairs per RIFE call (1 = one pair per call, as the official loop).
    """

    autocast: str | None = None
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    guidance_reuse: int = 1
    compile: bool = False
    cache_interval: int = 1
    cache_depth: int = DEFAULT_CACHE_DEPTH
    cache_threshold: float = 0.0
    decode_autocast: str | None = None
    decode_chunk_size: int | None = None
    interpolation_autocast: str | None = None
    interpolation_batch: int = 1

    @property
    def enabled(self) -> bool:
        return self != FastMode()

    @property
    def caches_features(self) -> bool:
        """Whether UNet feature caching is on (uniform or adaptive)."""
        return self.cache_interval > 1 or self.cache_threshold > 0

    def validate(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise InputError(f"autocast must be one of None, {', '.join(AUTOCAST_DTYPES)}; got {self.autocast!r}.")
        lo, hi = self.guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(f"guidance_interval must satisfy 0 <= lo <= hi <= 1, got {self.guidance_interval}.")
        if self.guidance_reuse < 1:
            raise InputError(f"guidance_reuse must be at least 1 (1 = no reuse), got {self.guidance_reuse}.")
        for name in ("decode_autocast", "interpolation_autocast"):
            value = getattr(self, name)
            if value is not None and value not in AUTOCAST_DTYPES:
                raise InputError(f"{name} must be one of None, {', '.join(AUTOCAST_DTYPES)}; got {value!r}.")
        if self.cache_interval < 1:
            raise InputError(f"cache_interval must be at least 1 (1 = no caching), got {self.cache_interval}.")
        if self.cache_depth < 0:
            raise InputError(f"cache_depth must be 0 or more (0 = the shallowest), got {self.cache_depth}.")
        if not 0.0 <= self.cache_threshold < 1.0:
            raise InputError(f"cache_threshold must be in [0, 1) (0 = off), got {self.cache_threshold}.")
        if self.cache_interval > 1 and self.cache_threshold > 0:
            raise InputError(
                "Choose one kind of feature caching: cache_interval (uniform) or cache_threshold (adaptive), "
                "not both; set the other to its off value (1 or 0)."
            )
        if self.compile and self.caches_features:
            raise InputError(
                "Feature caching runs the UNet layer by layer and cannot use the compiled UNet: turn off "
                "compile or the caching (cache_interval 1, cache_threshold 0)."
            )
        if self.decode_chunk_size is not None and self.decode_chunk_size < 1:
            raise InputError(f"decode_chunk_size must be at least 1 frame, got {self.decode_chunk_size}.")
        if self.interpolation_batch < 1:
            raise InputError(f"interpolation_batch must be at least 1 frame pair, got {self.interpolation_batch}.")

    def step_kinds(self, steps: int) -> list[str]:
        """Per step: ``"full"`` (three-way batch), ``"reuse"`` (full branch + cached terms) or ``"unguided"``.

        The first guided step is always ``"full"``, so a reuse step always has terms to reuse.
        """
        lo, hi = self.guidance_interval
        kinds, since_full = [], None
        for i in range(steps):
            if not lo * steps <= i < hi * steps:
                kinds.append(UNGUIDED)
            elif since_full is None or since_full + 1 >= self.guidance_reuse:
                kinds.append(FULL)
                since_full = 0
            else:
                kinds.append(REUSE)
                since_full += 1
        return kinds

    def autocast_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for the UNet call, or a no-op context."""
        return autocast_context(self.autocast, device)

    def decode_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for the VAE decode, or a no-op context."""
        return autocast_context(self.decode_autocast, device)


def autocast_context(name: str | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in :data:`AUTOCAST_DTYPES` ``[name]`` on ``device``'s type, or a no-op context for None."""
    if name is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=AUTOCAST_DTYPES[name])


def compiled_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(unet)``, cached on the module; the UNet itself when compiling is unavailable."""
    cached = getattr(unet, "_dicetalk_compiled", None)
    if cached is not None:
        return cached
    try:
        compiled = torch.compile(unet)
    except Exception as error:  # torch.compile raises many kinds of errors when a backend is missing
        logger.warning("torch.compile is unavailable (%s); running the UNet uncompiled.", error)
        compiled = unet
    object.__setattr__(unet, "_dicetalk_compiled", compiled)
    return compiled
