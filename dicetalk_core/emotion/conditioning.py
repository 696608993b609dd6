"""Emotion value -> the emotion tokens the sampler attends to (fixed, or one token set per frame).

One path for every emotion: its priors (one for a fixed emotion; per frame for a changing one, from
``Emotion.priors``: keyframes, easing, mixes and intensities are all linear operations on priors) go
through :meth:`~dicetalk_core.models.EmotionModel.prior_tokens`, which gives each prior exactly the tokens
the model's forward gives it alone. So the same emotion written different ways (a preset, the word in
text, a one-keyframe timeline, a single-entry mix, a timeline that holds it) gives bit-identical tokens,
and a preset gives what the official code computes.

Tokens are not interpolated: the emotion model is non-linear in the prior (an MLP with LayerNorm makes
the attention queries), so a blend of two token sets is not what the model produces for any prior,
while every per-frame token set made here is the model's own answer to a real point of the prior space.
Frames that share a prior (held keyframes) share one computation, so the cost grows with the number of
distinct priors, not frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..models import EmotionModel
from ..rates import GENERATION_FPS
from .value import Emotion


@dataclass(frozen=True)
class EmotionConditioning:
    """Emotion tokens for the sampler (ComfyUI type ``DICE_EMOTION_COND``).

    Attributes:
        cond: ``(T, C)`` for the whole clip or ``(N, T, C)`` one per generated frame.
        uncond: ``(T, C)`` the model's tokens for a zero prior (not zero tokens).
    """

    cond: torch.Tensor
    uncond: torch.Tensor

    def per_frame(self, n_frames: int) -> torch.Tensor:
        """``(n_frames, T, C)`` conditional tokens."""
        if self.cond.ndim == 2:
            return self.cond[None].expand(n_frames, -1, -1)
        if self.cond.shape[0] != n_frames:
            raise InputError(f"The emotion has {self.cond.shape[0]} frames but the audio gives {n_frames}.")
        return self.cond


def as_emotion(value: Emotion | torch.Tensor) -> Emotion:
    """Accept an :class:`Emotion` or a bare prior tensor ``(D,)`` / ``(1, D)``."""
    if isinstance(value, Emotion):
        return value
    if isinstance(value, torch.Tensor):
        return Emotion.constant(value.reshape(-1), "prior")
    raise InputError(f"Expected an emotion (DICE_EMOTION), got {type(value).__name__}.")


@torch.no_grad()
def emotion_conditioning(
    model: EmotionModel,
    emotion: Emotion | torch.Tensor,
    n_frames: int | None = None,
    *,
    retrieval: bool = False,
    fps: float = GENERATION_FPS,
) -> EmotionConditioning:
    """Tokens for a fixed emotion (``cond (T, C)``) or a changing one (``cond (n_frames, T, C)``).

    Args:
        model: the emotion model.
        emotion: an :class:`Emotion` (or a prior tensor).
        n_frames: generated frames of the clip; required when the emotion changes over time.
        retrieval: False (the official inference default) attends to the whole emotion bank; True to
            each prior's nearest prototype only.
        fps: generated frames per second.
    """
    emotion = as_emotion(emotion)
    param = next(model.parameters())
    if emotion.is_static:
        priors, frame_prior = emotion.prior()[None], None
    elif n_frames is None:
        raise InputError(
            f"'{emotion.describe()}' changes over time, so it needs the clip's length: connect the "
            "audio features (from DICE-Talk Audio Encoder) to DICE-Talk Emotion Bank."
        )
    else:
        priors, frame_prior = torch.unique(emotion.priors(n_frames, fps), dim=0, return_inverse=True)
    priors = priors.to(device=param.device, dtype=param.dtype)
    tokens = model.prior_tokens(torch.cat([priors, torch.zeros_like(priors[:1])]), retrieval=retrieval)
    cond, uncond = tokens[:-1], tokens[-1]
    if frame_prior is None:
        return EmotionConditioning(cond[0], uncond)
    return EmotionConditioning(cond[frame_prior.to(cond.device)], uncond)
