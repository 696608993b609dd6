"""The JSON form of an emotion (mix or keyframes), for workflows and scripts.

Accepted values (all validated; unknown keys are refused so typos do not pass silently)::

    {"happy": 0.7, "sad": 0.3}                                   a fixed mix: name -> weight
    [KEYFRAME, ...]    or    {"keyframes": [KEYFRAME, ...]}       a timeline

    KEYFRAME = {
      "emotion":   "very happy and slightly surprised"  (text, see ``text``)  or  {"happy": 0.7, "sad": 0.3},
      "at":        "2s" | "30f" | "50%" | 2.0 (seconds)   optional: spaced evenly when absent,
      "ease":      "hold" | "linear" | "smooth"           optional, default "smooth",
      "over":      "0.5s" ...                             optional: transition length; default: from
                                                          the previous keyframe,
      "intensity": 1.2                                    optional: scales the whole keyframe
    }

Unlike the text grammar (which defaults to a 0.5 s transition), a JSON keyframe without ``over``
eases over the whole gap from the previous keyframe, as keyframes do in animation tools.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection

from ..errors import InputError
from .spec import KeyframeSpec, TermSpec
from .text import parse_mix_text
from .timeline import EASINGS, TimeMark

KEYFRAME_KEYS = ("emotion", "at", "ease", "over", "intensity")
EXAMPLE = '[{"at": "0s", "emotion": "neutral"}, {"at": "2s", "emotion": "very happy", "ease": "smooth"}]'


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a number, got {value!r}.")
    return float(value)


def _time(value: object, where: str) -> TimeMark:
    try:
        return TimeMark.parse(value)  # type: ignore[arg-type]
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


def _mix(value: object, where: str, extra_names: Collection[str]) -> tuple[TermSpec, ...]:
    if isinstance(value, str):
        try:
            return parse_mix_text(value, extra_names).terms
        except InputError as err:
            raise InputError(f"{where}: {err}") from err
    if isinstance(value, dict) and value:
        terms = []
        for name, weight in value.items():
            if not isinstance(name, str) or not name.strip():
                raise InputError(f"{where}: mix keys must be emotion names, got {name!r}.")
            term = parse_mix_text(name, extra_names).terms
            if len(term) != 1:
                raise InputError(f"{where}: {name!r} must name one emotion (give the others their own weight).")
            t = term[0]
            value = _number(weight, f"{where}[{name!r}]")
            terms.append(TermSpec(t.name, value, t.intensity, f"{value:g} {t.text}"))
        return tuple(terms)
    raise InputError(
        f'{where} must be an emotion text such as "very happy" or a mix such as {{"happy": 0.7, "sad": 0.3}}.'
    )


def _keyframe(value: object, where: str, extra_names: Collection[str]) -> KeyframeSpec:
    if not isinstance(value, dict):
        raise InputError(f'{where} must be an object like {{"at": "2s", "emotion": "happy"}}, got {value!r}.')
    unknown = sorted(set(value) - set(KEYFRAME_KEYS))
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {', '.join(KEYFRAME_KEYS)}.")
    if "emotion" not in value:
        raise InputError(f'{where} has no "emotion".')
    ease = value.get("ease", "smooth")
    if ease not in EASINGS:
        raise InputError(f"{where}.ease is {ease!r}; use one of {', '.join(EASINGS)}.")
    text = value["emotion"] if isinstance(value["emotion"], str) else ""
    return KeyframeSpec(
        terms=_mix(value["emotion"], f"{where}.emotion", extra_names),
        at=_time(value["at"], f"{where}.at") if value.get("at") is not None else None,
        ease=ease,
        over=_time(value["over"], f"{where}.over") if value.get("over") is not None else None,
        intensity=_number(value.get("intensity", 1.0), f"{where}.intensity"),
        text=text,
    )


def parse_emotion_json(text: str, extra_names: Collection[str] = ()) -> list[KeyframeSpec]:
    """Parse the JSON form (see the module docstring) into keyframe specs."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"The emotion JSON is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}). "
            f"Example: {EXAMPLE}"
        ) from err
    if isinstance(data, dict) and "keyframes" in data:
        if set(data) != {"keyframes"}:
            raise InputError(
                f'Besides "keyframes" the emotion JSON has unknown keys {sorted(set(data) - {"keyframes"})}.'
            )
        data = data["keyframes"]
    if isinstance(data, dict):
        if "emotion" in data:
            return [_keyframe(data, "keyframe", extra_names)]
        return [KeyframeSpec(_mix(data, "the mix", extra_names))]
    if isinstance(data, list):
        if not data:
            raise InputError(f"The keyframe list is empty. Example: {EXAMPLE}")
        return [_keyframe(item, f"keyframes[{i}]", extra_names) for i, item in enumerate(data)]
    raise InputError(f"The emotion JSON must be a list of keyframes or a mix object. Example: {EXAMPLE}")
