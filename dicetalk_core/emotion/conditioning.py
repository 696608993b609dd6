"""Emotion value -> the emotion tokens the sampler attends to (fixed, or one token set per frame).

Per-frame emotions are resolved as *priors* first (``Emotion.priors``: keyframes, easing, mixes,
intensities are all linear operations on priors) and then every distinct prior goes through the
emotion model. Tokens are not interpolated: the emotion model is non-linear in the prior (an MLP
with LayerNorm makes the attention queries), so a blend of two token sets is not what the model
produces for any prior, while every per-frame token set made here is the model's own answer to a
real point of the prior space, the same as a fixed mix with those weights would give. Frames that
share a prior (held keyframes) share one computation, so the cost grows with the number of distinct
priors, not frames (about 4 s per 250 distinct priors for the full-size model on a 2-core CPU).

A fixed emotion takes the single-prior path of :func:`~dicetalk_core.pipeline.emotion_tokens`,
bit for bit what the official code computes for a preset.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..models import EmotionModel
from ..pipeline import EmotionConditioning, emotion_tokens
from .timeline import GENERATION_FPS
from .value import Emotion

CHUNK = 128  # priors per emotion-model call: bounds the attention weights (8 x 4096 x 2048 floats at full size)


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
        retrieval: see :func:`~dicetalk_core.pipeline.emotion_tokens`.
        fps: generated frames per second (12.5).
    """
    emotion = as_emotion(emotion)
    if emotion.is_static:
        return emotion_tokens(model, emotion.prior(), retrieval=retrieval)
    if n_frames is None:
        raise InputError(
            f"'{emotion.describe()}' changes over time, so it needs the clip's length: connect the "
            "audio features (from DICE-Talk Audio Encoder) to DICE-Talk Emotion Bank."
        )
    priors = emotion.priors(n_frames, fps)
    distinct, inverse = torch.unique(priors, dim=0, return_inverse=True)
    uncond = emotion_tokens(model, distinct[0], retrieval=retrieval).uncond
    cond = distinct_tokens(model, distinct, retrieval=retrieval)
    return EmotionConditioning(cond[inverse.to(cond.device)], uncond)


@torch.no_grad()
def distinct_tokens(
    model: EmotionModel, priors: torch.Tensor, *, retrieval: bool = False, chunk: int = CHUNK
) -> torch.Tensor:
    """``(K, in_dim)`` priors -> ``(K, T, C)`` tokens, ``chunk`` priors per call.

    Full bank: the bank's keys and values are the same for every prior, so the queries of a whole
    chunk attend to one bank at once (the model's own ``emo_linear``, ``bank_tokens`` and
    ``attention``; softmax rows are independent, so this is the model's forward, computed once per
    chunk instead of once per frame: ~15x faster at full size). Retrieval: the model's forward, one
    prior per batch entry (each attends to its own nearest code).
    """
    param = next(model.parameters())
    priors = priors.to(device=param.device, dtype=param.dtype)
    parts = []
    for block in priors.split(chunk):
        if retrieval:
            parts.append(model(block[:, None, None, None], retrieval=True).tokens[:, 0])
            continue
        queries = model.emo_linear(block, flat_dims=1)  # (k, T, C)
        merged = model.attention(queries.reshape(1, 1, -1, queries.shape[-1]), model.bank_tokens())
        parts.append(merged.reshape(queries.shape))
    return torch.cat(parts)
