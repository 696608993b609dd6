"""An emotion as written by a person, before names are looked up: terms, keyframes, times.

Both front ends (the small English grammar in ``text`` and the JSON form in ``keyframes_json``)
produce a list of :class:`KeyframeSpec`; ``compose.build_emotion`` turns it into an ``Emotion`` by
resolving the names against the presets (and the node's connected emotions).
"""

from __future__ import annotations

from dataclasses import dataclass

from .timeline import TimeMark


@dataclass(frozen=True)
class TermSpec:
    """One emotion in a mix: a preset (or connected-emotion) ``name``, its mix ``weight`` and ``intensity``.

    ``text`` is what the person wrote (``"very happy"``), for labels and error messages.
    """

    name: str
    weight: float = 1.0
    intensity: float = 1.0
    text: str = ""


@dataclass(frozen=True)
class KeyframeSpec:
    """A mix of terms reached at ``at`` (None: spaced evenly), entered with ``ease`` over ``over``.

    ``intensity`` scales the whole mix (multiplies every term's intensity).
    """

    terms: tuple[TermSpec, ...]
    at: TimeMark | None = None
    ease: str = "smooth"
    over: TimeMark | None = None
    intensity: float = 1.0
    text: str = ""

    @property
    def label(self) -> str:
        return self.text or " + ".join(t.text or t.name for t in self.terms)
