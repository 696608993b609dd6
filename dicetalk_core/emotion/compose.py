"""Emotion text or JSON -> an :class:`~.value.Emotion`, with names resolved against presets and inputs.

``parse_emotion_spec`` picks the front end: a value starting with ``[`` or ``{`` is JSON
(``keyframes_json``), anything else the English grammar (``text``). ``build_emotion`` then looks every
name up (connected inputs ``emotion_1`` ... first, then the preset library), mixes each keyframe's
terms (``mixing``) and returns a fixed emotion for one keyframe or a timeline for several, with a
provenance record naming the spec and every preset file used (with its SHA-256).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import InputError
from .keyframes_json import parse_emotion_json
from .mixing import MixComponent, mix_priors
from .presets import PresetLibrary
from .spec import KeyframeSpec
from .text import parse_emotion_text
from .timeline import Keyframe, Timeline
from .value import Emotion


def parse_emotion_spec(text: str, extra_names: tuple[str, ...] | list[str] = ()) -> tuple[list[KeyframeSpec], str]:
    """Text or JSON -> (keyframe specs, ``"json"`` or ``"text"``)."""
    if not isinstance(text, str):
        raise InputError(f"An emotion description must be text, got {type(text).__name__}.")
    if text.lstrip()[:1] in ("[", "{"):
        return parse_emotion_json(text, extra_names), "json"
    return parse_emotion_text(text, extra_names), "text"


def _prior_of(name: str, library: PresetLibrary | None, inputs: Mapping[str, Emotion], record: dict) -> torch.Tensor:
    if name in inputs:
        emotion = inputs[name]
        if not emotion.is_static:
            raise InputError(
                f"{name} ('{emotion.describe()}') changes over time, so it cannot be one keyframe; mix it "
                "with DICE-Talk Emotion Mix instead."
            )
        record.setdefault("inputs", {})[name] = dict(emotion.provenance) or {"description": emotion.description}
        return emotion.prior()
    if name.startswith("emotion_") and name[8:].isdigit():
        raise InputError(f"The text uses {name}, but no emotion is connected to the input {name}.")
    if library is None:
        raise InputError(f"'{name}' needs the emotion presets, but no preset folder is available.")
    record.setdefault("presets", {})[name] = library.record(name)
    return library.prior(name)


def build_emotion(
    specs: list[KeyframeSpec],
    library: PresetLibrary | None,
    inputs: Mapping[str, Emotion] | None = None,
    *,
    source: str = "text",
    spec_text: str = "",
) -> Emotion:
    """Resolve names and mix: one spec -> fixed :class:`Emotion`, several -> a timeline.

    Args:
        specs: from :func:`parse_emotion_spec`.
        library: the preset folders (neutral is taken from it when an intensity is not 1).
        inputs: connected emotions by input name (``emotion_1`` ...), fixed ones only.
        source / spec_text: recorded in the provenance.
    """
    inputs = dict(inputs or {})
    record: dict = {"source": source, "spec": spec_text}
    neutral: torch.Tensor | None = None
    keyframes = []
    for spec in specs:
        components = [
            MixComponent(_prior_of(t.name, library, inputs, record), t.weight, t.intensity * spec.intensity, t.text)
            for t in spec.terms
        ]
        if neutral is None and any(c.intensity != 1.0 for c in components):
            if library is None or "neutral" not in library.names():
                raise InputError("Intensities need the neutral preset (neutral.npy) in the emotion presets folder.")
            neutral = library.prior("neutral")
            record.setdefault("presets", {})["neutral"] = library.record("neutral")
        keyframes.append(Keyframe(mix_priors(components, neutral), spec.at, spec.ease, spec.over, spec.label))
    description = spec_text.strip() if source == "text" else " -> ".join(k.label for k in keyframes)
    if len(keyframes) == 1:
        return Emotion.constant(keyframes[0].prior, description, record)
    return Emotion.from_timeline(Timeline(tuple(keyframes)), description, record)


def emotion_from_spec(text: str, library: PresetLibrary | None, inputs: Mapping[str, Emotion] | None = None) -> Emotion:
    """``parse_emotion_spec`` + ``build_emotion`` in one call."""
    names = tuple(library.names()) if library is not None else ()
    specs, source = parse_emotion_spec(text, names)
    return build_emotion(specs, library, inputs, source=source, spec_text=text)
