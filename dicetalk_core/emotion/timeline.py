"""Emotion keyframes over a clip, resolved to one prior per generated frame.

A :class:`Timeline` is an ordered list of :class:`Keyframe`: an emotion prior that is *fully
reached* at a time mark, and how the change from the previous keyframe happens (``ease``, over
how long: ``over``). Times are :class:`TimeMark`: seconds (``2s``), generated frames (``30f``:
DICE-Talk generates 12.5 frames per second of speech, so ``30f`` is 2.4 s), or percent of the clip
(``50%``; ``0%`` is the first frame, ``100%`` the last). A keyframe without a time is placed evenly
between its neighbours (the first defaults to 0, a run at the end spreads towards 100%: three
keyframes without times sit at 0, 33.3% and 66.7%, so each holds a third of the clip).

Value at time ``t`` with keyframe times ``t_0 <= t_1 <= ...`` and priors ``p_k``:

* ``t < t_0``: ``p_0``; ``t >= t_last``: ``p_last``; ``t == t_k``: ``p_k`` exactly.
* Times in one unit must not go backwards (an error); when marks in different units cross for a
  short clip (``3s`` then ``50%`` of a 4 s clip) the later keyframe is moved up, with a warning.
* ``t_{k-1} <= t < t_k``: the transition into keyframe ``k`` starts at
  ``s = max(t_{k-1}, t_k - over_k)`` (``s = t_{k-1}`` when ``over`` is not given); before ``s`` the
  value holds ``p_{k-1}``; after it ``p = (1 - e(u)) p_{k-1} + e(u) p_k`` with ``u = (t - s) / (t_k - s)``
  and the easing ``e``: ``hold`` 0 (a jump at ``t_k``), ``linear`` ``u``, ``smooth`` ``3u^2 - 2u^3``.

Interpolation happens on priors, not on emotion tokens: every frame's tokens are then what the
emotion model makes of a real prior (see ``conditioning``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..rates import GENERATION_FPS

logger = logging.getLogger(__name__)

EASINGS = ("hold", "linear", "smooth")
TIME_UNITS = {"s": "seconds", "f": "generated frames (12.5 per second)", "%": "percent of the clip"}

_SECONDS = r"s|sec|secs|second|seconds"
_TIME_PATTERNS = (
    (re.compile(rf"^(\d+(?:\.\d+)?|\.\d+)\s*(?:{_SECONDS})?$"), "s", 1.0),
    (re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*ms$"), "s", 0.001),
    (re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*%$"), "%", 1.0),
    (re.compile(r"^(\d+)\s*(?:f|frames?)$"), "f", 1.0),
    (re.compile(r"^(?:f|frame)\s*(\d+)$"), "f", 1.0),
)


@dataclass(frozen=True)
class TimeMark:
    """A point (or a length) on the clip's time axis: ``value`` in ``unit`` (``s``, ``f`` or ``%``)."""

    value: float
    unit: str = "s"

    def __post_init__(self) -> None:
        if self.unit not in TIME_UNITS:
            raise InputError(f"Unknown time unit {self.unit!r}; use one of {', '.join(TIME_UNITS)}.")
        if not math.isfinite(self.value) or self.value < 0:
            raise InputError(f"A time must be a finite number >= 0, got {self.value!r}.")
        if self.unit == "%" and self.value > 100:
            raise InputError(f"A time in percent of the clip must be at most 100%, got {self.value:g}%.")

    @classmethod
    def parse(cls, text: str | float | int) -> TimeMark:
        """``2``, ``2.5s``, ``2 sec``, ``500ms``, ``30f``, ``frame 30``, ``50%`` -> TimeMark (numbers are seconds)."""
        if isinstance(text, bool):
            raise InputError(f"{text!r} is not a time.")
        if isinstance(text, (int, float)):
            return cls(float(text), "s")
        if not isinstance(text, str):
            raise InputError(f"{text!r} is not a time; write e.g. '2s', '30f' or '50%'.")
        cleaned = text.strip().lower()
        for pattern, unit, scale in _TIME_PATTERNS:
            match = pattern.match(cleaned)
            if match:
                return cls(float(match.group(1)) * scale, unit)
        raise InputError(
            f"{text!r} is not a time. Write seconds ('2s', '2.5 sec', '500ms'), generated frames "
            "('30f' or 'frame 30'; 12.5 frames per second) or percent of the clip ('50%')."
        )

    def seconds(self, span: float, fps: float = GENERATION_FPS) -> float:
        """This mark in seconds, for a clip whose last frame is at ``span`` seconds."""
        if self.unit == "s":
            return self.value
        if self.unit == "f":
            return self.value / fps
        return self.value / 100.0 * span

    def __str__(self) -> str:
        value = f"{self.value:g}"
        return f"{value}{self.unit}"


@dataclass(frozen=True)
class Keyframe:
    """An emotion prior ``(D,)`` fully reached at ``at``; ``ease`` and ``over`` shape the way into it.

    Attributes:
        prior: ``(D,)`` float32.
        at: when it is reached, or None to place it evenly between its neighbours.
        ease: ``hold``, ``linear`` or ``smooth`` (the transition from the previous keyframe).
        over: length of that transition, ending at ``at``; None = from the previous keyframe.
        label: what it is, for reports and saved files (e.g. ``"very happy"``).
    """

    prior: torch.Tensor
    at: TimeMark | None = None
    ease: str = "smooth"
    over: TimeMark | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.ease not in EASINGS:
            raise InputError(f"Easing {self.ease!r} is not one of {', '.join(EASINGS)}.")
        if self.prior.ndim != 1:
            raise InputError(f"A keyframe's prior must be one vector (D,), got shape {tuple(self.prior.shape)}.")


def _ease(kind: str, u: torch.Tensor) -> torch.Tensor:
    if kind == "linear":
        return u
    if kind == "smooth":
        return u * u * (3.0 - 2.0 * u)
    return torch.zeros_like(u)


@dataclass(frozen=True)
class Timeline:
    """Keyframes in order (see the module docstring for the exact rule)."""

    keyframes: tuple[Keyframe, ...]

    def __post_init__(self) -> None:
        if not self.keyframes:
            raise InputError("A timeline needs at least one keyframe.")
        dims = {k.prior.shape[0] for k in self.keyframes}
        if len(dims) > 1:
            raise InputError(f"All keyframes must have priors of one size; got sizes {sorted(dims)}.")
        last: dict[str, tuple[float, int]] = {}
        for i, key in enumerate(self.keyframes):
            if key.at is None:
                continue
            previous = last.get(key.at.unit)
            if previous is not None and key.at.value < previous[0]:
                before = self.keyframes[previous[1]]
                raise InputError(
                    f"Keyframe times must not go backwards: {key.label or f'keyframe {i + 1}'} at {key.at} comes "
                    f"after {before.label or f'keyframe {previous[1] + 1}'} at {before.at}. Reorder the keyframes "
                    "or fix their times."
                )
            last[key.at.unit] = (key.at.value, i)

    @property
    def is_static(self) -> bool:
        """True when every keyframe holds the same prior (the value never changes)."""
        first = self.keyframes[0].prior
        return all(torch.equal(k.prior, first) for k in self.keyframes[1:])

    def times(self, span: float, fps: float = GENERATION_FPS) -> list[float]:
        """Keyframe times in seconds for a clip whose last frame is at ``span`` seconds (auto times filled in).

        Raises:
            InputError: the resolved times go backwards.
        """
        known: list[float | None] = [None if k.at is None else k.at.seconds(span, fps) for k in self.keyframes]
        if known[0] is None:
            known[0] = 0.0
        count = len(known)
        i = 1
        while i < count:
            if known[i] is not None:
                i += 1
                continue
            j = i
            while j < count and known[j] is None:
                j += 1
            left = known[i - 1]
            right, steps = (known[j], j - i + 1) if j < count else (max(span, left), count - i + 1)
            for m in range(i, j):
                known[m] = left + (m - i + 1) / steps * (right - left)
            i = j
        times = [float(t) for t in known]
        for k in range(1, count):
            if times[k] < times[k - 1]:  # only across units (e.g. "3s" then "50%" of a 4 s clip)
                logger.warning(
                    "Keyframe %d (%s) falls at %.2f s, before the previous one (%.2f s) in this %.2f s clip; "
                    "it is moved to %.2f s.",
                    k + 1,
                    self.keyframes[k].label or "unnamed",
                    times[k],
                    times[k - 1],
                    span,
                    times[k - 1],
                )
                times[k] = times[k - 1]
        return times

    def priors(self, n_frames: int, fps: float = GENERATION_FPS) -> torch.Tensor:
        """``(n_frames, D)`` float32: the prior of every generated frame (frame ``f`` is at ``f / fps`` s)."""
        if n_frames < 1:
            raise InputError(f"Need at least one frame to place an emotion timeline on, got {n_frames}.")
        span = (n_frames - 1) / fps
        stack = torch.stack([k.prior.to(torch.float32) for k in self.keyframes])
        if len(self.keyframes) == 1:
            return stack.expand(n_frames, -1).clone()
        times = torch.tensor(self.times(span, fps), dtype=torch.float64)
        t = torch.arange(n_frames, dtype=torch.float64) / fps
        after = torch.searchsorted(times, t, right=True)  # keyframes at or before each frame
        index = after.clamp(1, len(self.keyframes) - 1)
        out = stack[(after - 1).clamp(min=0)].clone()
        between = (after > 0) & (after < len(self.keyframes))
        for k in range(1, len(self.keyframes)):
            frames = between & (index == k)
            if not frames.any():
                continue
            key = self.keyframes[k]
            start = times[k - 1]
            if key.over is not None:
                start = max(start, times[k] - key.over.seconds(span, fps))
            length = times[k] - start
            if length <= 0:
                continue
            u = ((t[frames] - start) / length).clamp(0.0, 1.0)
            w = _ease(key.ease, u).to(torch.float32)[:, None]
            # lerp: exact at both ends and wherever the two keyframes hold the same prior
            out[frames] = torch.lerp(stack[k - 1].expand(len(w), -1), stack[k].expand(len(w), -1), w)
        return out

    def describe(self) -> str:
        """``"neutral -> happy at 2s (smooth over 0.5s)"`` style summary."""
        parts = []
        for i, key in enumerate(self.keyframes):
            text = key.label or f"keyframe {i + 1}"
            if key.at is not None:
                text += f" at {key.at}"
            if i > 0:
                text += f" ({key.ease}" + (f" over {key.over})" if key.over is not None else ")")
            parts.append(text)
        return " -> ".join(parts)


def constant_timeline(prior: torch.Tensor, label: str = "") -> Timeline:
    """One keyframe: the same prior on every frame."""
    return Timeline((Keyframe(prior.reshape(-1).to(torch.float32), TimeMark(0.0), "hold", None, label),))


def map_priors(timeline: Timeline, transform: Callable[[torch.Tensor], torch.Tensor]) -> Timeline:
    """A copy of ``timeline`` with ``transform(prior)`` applied to every keyframe's prior."""
    return Timeline(tuple(Keyframe(transform(k.prior), k.at, k.ease, k.over, k.label) for k in timeline.keyframes))
