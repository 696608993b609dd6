"""Emotion arithmetic in the prior space: intensity along the line from neutral, and weighted mixes.

An emotion prior is a ``(D,)`` vector (``D = 256``) in the space of the paper's disentangled emotion
embedder; a preset is the mean prior of many videos of one emotion. All eight official presets share
a large common part (norm 13.3-14.0, pairwise cosine 0.91-0.99); what tells them apart is their
offset from ``neutral`` (norm 3.4-5.1). So every operation here works on offsets from neutral.

With ``n`` the neutral prior, ``p_i`` component priors (presets or saved emotions), intensities
``a_i`` and weights ``w_i >= 0`` (not all zero), ``v_i = w_i / sum_j w_j``:

* intensity: ``p(a) = n + a (p - n)``. ``a = 0`` gives neutral, ``1`` the prior unchanged, ``1.5``
  an exaggerated version; ``a`` is limited to ``[0, MAX_INTENSITY]`` and a warning is logged above
  :data:`SUPPORTED_INTENSITY` (the presets are averages, so the model has seen offsets somewhat past
  them, but how far is unknown: past 1.5 the result is extrapolation).
* mix: ``m = sum_i v_i p_i(a_i) = n + sum_i v_i a_i (p_i - n)``: a convex combination of the
  intensity-scaled priors. Weights are normalised, so ``{happy: 2, sad: 2}`` equals
  ``{happy: 1, sad: 1}``; the strength of a mix is set with intensities, not with weights.

Consequence worth knowing: offsets of different emotions point in different directions (cosine
0.06 for angry vs surprised, 0.9 for angry vs disgusted), so an even mix of two dissimilar
emotions lies closer to neutral than either (its offset is shorter); raise its intensity to
compensate. With ``a = 1`` for every component neutral is not needed and the result is exactly
``sum_i v_i p_i`` (a single component returns its prior bit for bit).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

logger = logging.getLogger(__name__)

SUPPORTED_INTENSITY = 1.5
MAX_INTENSITY = 2.0


def check_intensity(intensity: float, what: str = "emotion") -> float:
    """Validate an intensity: a finite number in ``[0, MAX_INTENSITY]``; warns above ``SUPPORTED_INTENSITY``."""
    try:
        value = float(intensity)
    except (TypeError, ValueError) as err:
        raise InputError(f"The intensity of {what} must be a number, got {intensity!r}.") from err
    if not math.isfinite(value) or not 0.0 <= value <= MAX_INTENSITY:
        raise InputError(
            f"The intensity of {what} is {intensity!r}; use 0 (neutral) to 1 (the preset as is), up to "
            f"{SUPPORTED_INTENSITY} to exaggerate (at most {MAX_INTENSITY})."
        )
    if value > SUPPORTED_INTENSITY:
        logger.warning(
            "Intensity %.2f for %s is past %.1f, beyond the range the presets cover: the expression may "
            "look distorted or the identity may drift.",
            value,
            what,
            SUPPORTED_INTENSITY,
        )
    return value


def apply_intensity(prior: torch.Tensor, neutral: torch.Tensor | None, intensity: float) -> torch.Tensor:
    """``n + a (p - n)``: ``prior (D,)`` moved along the line from ``neutral (D,)``; ``a = 1`` returns ``prior``."""
    return scale_from_neutral(prior, neutral, check_intensity(intensity))


def scale_from_neutral(prior: torch.Tensor, neutral: torch.Tensor | None, intensity: float) -> torch.Tensor:
    """``n + a (p - n)`` without validating ``a`` (see :func:`apply_intensity`)."""
    if intensity == 1.0:
        return prior
    if neutral is None:
        raise InputError("Changing an emotion's intensity needs the neutral preset (neutral.npy) beside the others.")
    return neutral + intensity * (prior - neutral)


@dataclass(frozen=True)
class MixComponent:
    """One term of a mix: a prior ``(D,)``, its weight (>= 0) and intensity, and a label for reports."""

    prior: torch.Tensor
    weight: float = 1.0
    intensity: float = 1.0
    label: str = ""


def normalised_weights(weights: Sequence[float], what: str = "the mix") -> list[float]:
    """``w_i / sum w``; refuses negative, non-finite or all-zero weights."""
    values = []
    for w in weights:
        try:
            value = float(w)
        except (TypeError, ValueError) as err:
            raise InputError(f"A weight in {what} must be a number, got {w!r}.") from err
        if not math.isfinite(value) or value < 0:
            raise InputError(f"Weights in {what} must be finite and not negative; got {w!r}.")
        values.append(value)
    total = sum(values)
    if total <= 0:
        raise InputError(f"All weights in {what} are zero; give at least one emotion a positive weight.")
    return [v / total for v in values]


def mix_priors(components: Sequence[MixComponent], neutral: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i v_i (n + a_i (p_i - n))`` with normalised weights ``v_i`` (see the module docstring).

    Args:
        components: at least one :class:`MixComponent`, all priors ``(D,)``.
        neutral: ``(D,)``; needed only when some intensity differs from 1.

    Returns:
        ``(D,)`` float32.
    """
    if not components:
        raise InputError("A mix needs at least one emotion.")
    shape = components[0].prior.shape
    for c in components:
        if c.prior.shape != shape:
            raise InputError(f"Cannot mix priors of shapes {tuple(shape)} and {tuple(c.prior.shape)}.")
    weights = normalised_weights([c.weight for c in components])
    terms = [
        (v, scale_from_neutral(c.prior, neutral, check_intensity(c.intensity, c.label or "an emotion")))
        for v, c in zip(weights, components, strict=True)
        if v > 0
    ]
    if len(terms) == 1:
        return terms[0][1].to(torch.float32)
    result = torch.zeros(shape, dtype=torch.float32)
    for v, prior in terms:
        result = result + v * prior.to(torch.float32)
    return result
