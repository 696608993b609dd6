"""Opt-in speed-ups that change the result (all OFF by default: the default is the exact, parity-checked path).

None of these was validated on the real DICE-Talk weights (none were available when they were written):
each was measured for speed and for its deviation from the exact path on random-weight models only
(``bench/fast_mode.py``). Turn them on one at a time and look at the video.

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


@dataclass(frozen=True)
class FastMode:
    """Which speed-ups are on (see the module docstring); the defaults are all off.

    Attributes:
        autocast: None, ``"bf16"`` or ``"fp16"``.
        guidance_interval: ``(lo, hi)`` fractions of the steps that get three-way guidance.
        guidance_reuse: run the three-way batch every ``k``-th guided step (1 = every step).
        compile: ``torch.compile`` the UNet.
    """

    autocast: str | None = None
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    guidance_reuse: int = 1
    compile: bool = False

    @property
    def enabled(self) -> bool:
        return self != FastMode()

    def validate(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise InputError(f"autocast must be one of None, {', '.join(AUTOCAST_DTYPES)}; got {self.autocast!r}.")
        lo, hi = self.guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(f"guidance_interval must satisfy 0 <= lo <= hi <= 1, got {self.guidance_interval}.")
        if self.guidance_reuse < 1:
            raise InputError(f"guidance_reuse must be at least 1 (1 = no reuse), got {self.guidance_reuse}.")

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
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[self.autocast])


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
