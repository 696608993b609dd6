"""The emotion value that flows between nodes (ComfyUI type ``DICE_EMOTION``).

An :class:`Emotion` is a weighted sum of timelines: ``E(t) = sum_i v_i T_i(t)`` with normalised
weights ``v_i``. A fixed emotion (a preset, a mix, a classifier's estimate) is one timeline with one
keyframe; a keyframed timeline or a voice-driven estimate is one timeline with many; mixing a
fixed face estimate with a voice timeline keeps both as tracks. Frame-wise resolution needs the
clip's frame count, which is only known once the audio is encoded, so it happens in
:meth:`Emotion.priors` (called by the emotion bank), never earlier.

Everything is linear in the priors, so intensity (``n + a (E - n)``) and mixing commute with the
per-frame resolution: mixing two timelines and resolving equals resolving both and mixing the frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..rates import GENERATION_FPS
from .mixing import MixComponent, check_intensity, mix_priors, normalised_weights, scale_from_neutral
from .timeline import Timeline, constant_timeline, map_priors


@dataclass(frozen=True)
class Emotion:
    """An emotion over a clip.

    Attributes:
        tracks: ``(weight, Timeline)`` pairs; weights are normalised (sum 1).
        description: one line for people (shown in reports and saved files).
        provenance: JSON-able record of where it came from (sources, preset files and hashes, spec text).
    """

    tracks: tuple[tuple[float, Timeline], ...]
    description: str = ""
    provenance: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tracks:
            raise InputError("An emotion needs at least one track.")
        dims = {t.keyframes[0].prior.shape[0] for _, t in self.tracks}
        if len(dims) > 1:
            raise InputError(f"Cannot combine emotion priors of sizes {sorted(dims)}.")

    @classmethod
    def constant(cls, prior: torch.Tensor, description: str = "", provenance: Mapping | None = None) -> Emotion:
        """A fixed emotion from a prior ``(D,)`` (or ``(1, D)``)."""
        return cls(((1.0, constant_timeline(prior, description)),), description, dict(provenance or {}))

    @classmethod
    def from_timeline(cls, timeline: Timeline, description: str = "", provenance: Mapping | None = None) -> Emotion:
        return cls(((1.0, timeline),), description or timeline.describe(), dict(provenance or {}))

    @property
    def dim(self) -> int:
        return self.tracks[0][1].keyframes[0].prior.shape[0]

    @property
    def is_static(self) -> bool:
        """True when the emotion is the same on every frame."""
        return all(t.is_static for _, t in self.tracks)

    def prior(self) -> torch.Tensor:
        """``(D,)`` the prior of a fixed emotion (exactly the preset's values for a plain preset)."""
        if not self.is_static:
            raise InputError(
                f"'{self.description}' changes over time; it needs the clip's length: connect the audio "
                "features to DICE-Talk Emotion Bank."
            )
        components = [MixComponent(t.keyframes[0].prior, w) for w, t in self.tracks]
        return mix_priors(components)

    def priors(self, n_frames: int, fps: float = GENERATION_FPS) -> torch.Tensor:
        """``(n_frames, D)`` float32: the prior of every generated frame."""
        if len(self.tracks) == 1:
            return self.tracks[0][1].priors(n_frames, fps)
        out = torch.zeros(n_frames, self.dim, dtype=torch.float32)
        for weight, timeline in self.tracks:
            out += weight * timeline.priors(n_frames, fps)
        return out

    def with_intensity(self, intensity: float, neutral: torch.Tensor | None) -> Emotion:
        """``n + a (E - n)`` on every keyframe (linear, so the same on every frame)."""
        intensity = check_intensity(intensity, self.description or "the emotion")
        if intensity == 1.0:
            return self
        if neutral is None:
            raise InputError(
                "Changing an emotion's intensity needs the neutral preset (neutral.npy) beside the others."
            )
        neutral = neutral.reshape(-1).to(torch.float32)
        tracks = tuple((w, map_priors(t, lambda p: scale_from_neutral(p, neutral, intensity))) for w, t in self.tracks)
        description = f"{self.description} x{intensity:g}"
        provenance = {"source": "intensity", "intensity": intensity, "of": dict(self.provenance)}
        return Emotion(tracks, description, provenance)

    def describe(self) -> str:
        """A readable summary of the tracks."""
        if len(self.tracks) == 1:
            timeline = self.tracks[0][1]
            return self.description or timeline.describe()
        return " + ".join(f"{w:.2f} x ({t.describe()})" for w, t in self.tracks)


def mix_emotions(
    parts: Sequence[tuple[Emotion, float]], description: str = "", provenance: Mapping | None = None
) -> Emotion:
    """``sum_i v_i E_i`` with normalised weights; fixed parts collapse into one fixed track.

    Zero-weight parts are dropped. Fixed + fixed is again a fixed emotion (exactly the mix of the priors).
    """
    weights = normalised_weights([w for _, w in parts], "the emotion mix")
    fixed: list[MixComponent] = []
    moving: list[tuple[float, Timeline]] = []
    for (emotion, _), v in zip(parts, weights, strict=True):
        if v == 0:
            continue
        for w, timeline in emotion.tracks:
            if timeline.is_static:
                fixed.append(MixComponent(timeline.keyframes[0].prior, v * w, label=emotion.description))
            else:
                moving.append((v * w, timeline))
    labels = [f"{v:.2f} {e.description or 'emotion'}" for (e, _), v in zip(parts, weights, strict=True) if v > 0]
    description = description or " + ".join(labels)
    tracks: list[tuple[float, Timeline]] = []
    if fixed:
        total = sum(c.weight for c in fixed)
        tracks.append((total, constant_timeline(mix_priors(fixed), description)))
    tracks.extend(moving)
    record = dict(provenance or {}) or {
        "source": "mix",
        "parts": [{"weight": v, "of": dict(e.provenance)} for (e, _), v in zip(parts, weights, strict=True) if v > 0],
    }
    return Emotion(tuple(tracks), description, record)
