"""A small, explicit English grammar for emotions: ``"slightly sad, then very happy at 2s"``.

Grammar (case-insensitive; words outside the tables below are refused with the list of known ones)::

    prompt   := segment (THEN segment)*          THEN: "then", "->", U+2192 (arrow), ";"   (", then" too)
    segment  := any order of: mix, time, over, transition
    mix      := term (AND term)*                 AND: "and", "with", "plus", "+", "&", ","
    term     := [weight] ADVERB* EMOTION [":" number]
    weight   := "70%" | "0.7"                    relative weight in the mix (normalised)
    time     := ("at" | "by") TIME               when this segment's emotion is fully reached
    over     := "over" DURATION                  how long the change into it takes
    TIME     := "2s" | "2 s" | "2.5 seconds" | "500ms" | "30f" | "frame 30" | "50%"

* EMOTION: a preset word or synonym (:data:`EMOTION_WORDS`; some synonyms carry an intensity, e.g.
  ``furious`` = angry x1.4), a saved preset's file name, or a connected input (``emotion_1`` ...).
* ADVERB multiplies the intensity (:data:`ADVERBS`; ``very very`` = 1.25 x 1.25); ``happy:1.2`` sets
  it as a number. Intensity is the distance from neutral (see ``mixing``).
* Transition words (:data:`TRANSITIONS`): ``suddenly`` (hold: jump at the time mark), ``gradually``
  (linear from the previous keyframe), ``smoothly`` (default: smooth over 0.5 s), ``quickly``
  (smooth over 0.25 s). ``over 1s`` sets the length.
* Segments without ``at`` are spread evenly (``"a then b"``: b is reached at 50% of the clip and
  holds to the end; see ``timeline``).
* Filler words (:data:`FILLERS`, e.g. ``looking``, ``becoming``, ``a``) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from ..errors import InputError
from .spec import KeyframeSpec, TermSpec
from .timeline import TimeMark

# word -> (preset, implied intensity)
EMOTION_WORDS: dict[str, tuple[str, float]] = {
    **{w: ("angry", 1.0) for w in ("angry", "anger", "mad", "cross", "irritated")},
    "annoyed": ("angry", 0.6),
    "furious": ("angry", 1.4),
    "enraged": ("angry", 1.5),
    **{w: ("contempt", 1.0) for w in ("contempt", "contemptuous", "scornful", "disdainful", "smug", "sneering")},
    **{w: ("disgusted", 1.0) for w in ("disgusted", "disgust", "repulsed", "revolted")},
    **{w: ("fear", 1.0) for w in ("fear", "afraid", "scared", "fearful", "frightened")},
    "nervous": ("fear", 0.5),
    "anxious": ("fear", 0.6),
    "terrified": ("fear", 1.4),
    **{w: ("happy", 1.0) for w in ("happy", "happiness", "joy", "joyful", "glad", "cheerful", "smiling")},
    "content": ("happy", 0.5),
    "pleased": ("happy", 0.7),
    "delighted": ("happy", 1.25),
    "ecstatic": ("happy", 1.5),
    **{w: ("neutral", 1.0) for w in ("neutral", "calm", "blank", "expressionless", "plain", "relaxed")},
    **{w: ("sad", 1.0) for w in ("sad", "sadness", "unhappy", "sorrowful", "gloomy", "upset", "melancholy")},
    "down": ("sad", 0.6),
    "depressed": ("sad", 1.3),
    "devastated": ("sad", 1.5),
    **{w: ("surprised", 1.0) for w in ("surprised", "surprise", "amazed", "startled")},
    "astonished": ("surprised", 1.3),
    "shocked": ("surprised", 1.4),
}

# phrase -> intensity factor (multi-word phrases are matched first)
ADVERBS: dict[str, float] = {
    "barely": 0.25,
    "a touch": 0.4,
    "slightly": 0.5,
    "a bit": 0.5,
    "a little": 0.5,
    "a little bit": 0.5,
    "mildly": 0.5,
    "somewhat": 0.6,
    "kind of": 0.7,
    "moderately": 0.75,
    "fairly": 0.75,
    "rather": 0.8,
    "quite": 0.9,
    "very": 1.25,
    "really": 1.25,
    "so": 1.25,
    "deeply": 1.3,
    "extremely": 1.5,
    "super": 1.5,
    "incredibly": 1.5,
    "intensely": 1.5,
}

# word -> (easing, transition length or None for "from the previous keyframe")
TRANSITIONS: dict[str, tuple[str, TimeMark | None]] = {
    "suddenly": ("hold", None),
    "abruptly": ("hold", None),
    "instantly": ("hold", None),
    "immediately": ("hold", None),
    "gradually": ("linear", None),
    "slowly": ("linear", None),
    "smoothly": ("smooth", TimeMark(0.5)),
    "quickly": ("smooth", TimeMark(0.25)),
}
DEFAULT_TRANSITION = ("smooth", TimeMark(0.5))

THEN_WORDS = ("then",)
AND_WORDS = ("and", "with", "plus", "+", "&", ",")
TIME_WORDS = ("at", "by")
OVER_WORDS = ("over",)
FILLERS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "be",
        "being",
        "looking",
        "look",
        "looks",
        "feeling",
        "feel",
        "feels",
        "becoming",
        "becomes",
        "become",
        "getting",
        "gets",
        "get",
        "turning",
        "turns",
        "turn",
        "face",
        "expression",
        "mood",
    ]
)
IGNORED_PUNCTUATION = (".", "!")
SLOT_PATTERN = re.compile(r"^emotion_?([1-9])$")

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>(?:\d+(?:\.\d+)?|\.\d+)\s*(?:%|ms\b|s\b|secs?\b|seconds?\b|f\b|frames?\b)?)"
    r"|(?P<word>[a-z_][a-z0-9_\-]*(?::(?:\d+(?:\.\d+)?|\.\d+))?)"
    r"|(?P<punct>[,+&;.!])"
    r")"
)
_MAX_PHRASE = max(len(p.split()) for p in ADVERBS)


def vocabulary() -> str:
    """The words the grammar understands, for error messages and the node's tooltip."""
    by_preset: dict[str, list[str]] = {}
    for word, (preset, factor) in EMOTION_WORDS.items():
        by_preset.setdefault(preset, []).append(word if factor == 1.0 else f"{word} (x{factor:g})")
    emotions = "; ".join(f"{p}: {', '.join(ws)}" for p, ws in by_preset.items())
    adverbs = ", ".join(f"{a} (x{f:g})" for a, f in ADVERBS.items())
    transitions = ", ".join(TRANSITIONS)
    return (
        f"emotions - {emotions}; saved preset names; emotion_1..emotion_9 (connected inputs). "
        f"Intensity - {adverbs}, or 'happy:1.2'. Mix - and, with, plus, +, &, ','; weights '70% happy, 30% sad'. "
        f"Sequence - then, ->, ';'. Time - 'at 2s', 'at 30f' (frames, 12.5 per second), 'at 50%'; 'over 1s'. "
        f"Transitions - {transitions}. Ignored - {', '.join(sorted(FILLERS))}."
    )


def reserved_words() -> frozenset[str]:
    """Words the grammar gives a meaning (a saved emotion named like one could not be referred to)."""
    adverb_words = {w for phrase in ADVERBS for w in phrase.split()}
    return frozenset(
        {*EMOTION_WORDS, *adverb_words, *TRANSITIONS, *THEN_WORDS, *AND_WORDS, *TIME_WORDS, *OVER_WORDS, *FILLERS}
    )


def _tokenize(text: str) -> list[str]:
    cleaned = text.lower().replace("\u2192", " then ").replace("->", " then ").replace("=>", " then ")
    cleaned = cleaned.replace(";", " then ")
    tokens: list[str] = []
    pos = 0
    while pos < len(cleaned):
        if cleaned[pos:].strip() == "":
            break
        match = _TOKEN.match(cleaned, pos)
        if match is None or match.end() == pos:
            bad = cleaned[pos:].strip()[:1]
            raise InputError(f"Unexpected character {bad!r} in emotion text {text!r}. Understood: {vocabulary()}")
        token = re.sub(r"\s+", " ", match.group(match.lastgroup).strip())
        if token not in IGNORED_PUNCTUATION:
            tokens.append(token)
        pos = match.end()
    return tokens


def _split_segments(tokens: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in THEN_WORDS:
            while segments[-1] and segments[-1][-1] in (",", "and"):
                segments[-1].pop()  # ", then" / "and then"
            if len(segments) > 1 and not segments[-1]:
                continue  # "; then", "-> then": one separator
            segments.append([])
        else:
            segments[-1].append(tok)
    return segments


def _is_number(tok: str) -> bool:
    return bool(re.match(r"^(\d+(?:\.\d+)?|\.\d+)$", tok))


def _time_from(tokens: list[str], i: int, text: str) -> tuple[TimeMark, int]:
    """Read a time at ``tokens[i]`` ("2s", "2 s", "frame 30", "50%"); returns it and the next index."""
    if i >= len(tokens):
        raise InputError(f"A time is missing at the end of {text!r}; write e.g. 'at 2s', 'at 30f' or 'at 50%'.")
    tok = tokens[i]
    if tok in ("frame", "f") and i + 1 < len(tokens) and _is_number(tokens[i + 1]):
        return TimeMark.parse(f"frame {tokens[i + 1]}"), i + 2
    if _is_number(tok) and i + 1 < len(tokens) and re.match(r"^(s|secs?|seconds?|ms|f|frames?|%)$", tokens[i + 1]):
        return TimeMark.parse(tok + tokens[i + 1]), i + 2
    if tok[:1].isdigit() or tok[:1] == ".":
        return TimeMark.parse(tok), i + 1
    raise InputError(f"{tok!r} in {text!r} is not a time; write e.g. 'at 2s', 'at 30f' or 'at 50%'.")


def _phrase(tokens: list[str], i: int) -> tuple[str, int] | None:
    for size in range(_MAX_PHRASE, 0, -1):
        words = tokens[i : i + size]
        phrase = " ".join(words)
        if len(words) == size and phrase in ADVERBS:
            return phrase, i + size
    return None


def _unknown(tok: str, text: str) -> InputError:
    return InputError(f"Could not understand {tok!r} in the emotion text {text!r}. Understood: {vocabulary()}")


def _emotion_word(word: str, extra_names: Collection[str]) -> tuple[str, float] | None:
    if word in EMOTION_WORDS:
        return EMOTION_WORDS[word]
    if SLOT_PATTERN.match(word):
        return f"emotion_{SLOT_PATTERN.match(word).group(1)}", 1.0
    lowered = {n.lower(): n for n in extra_names}
    if word in lowered:
        return lowered[word], 1.0
    return None


def _parse_segment(tokens: list[str], text: str, extra_names: Collection[str]) -> KeyframeSpec:
    terms: list[TermSpec] = []
    at: TimeMark | None = None
    ease, over = DEFAULT_TRANSITION
    weight: float | None = None
    factor = 1.0
    pending: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in TIME_WORDS:
            at, i = _time_from(tokens, i + 1, text)
            continue
        if tok in OVER_WORDS:
            over, i = _time_from(tokens, i + 1, text)
            continue
        if tok in TRANSITIONS:
            ease, over = TRANSITIONS[tok]
            i += 1
            continue
        phrase = _phrase(tokens, i)
        if phrase is not None:
            factor *= ADVERBS[phrase[0]]
            pending.append(phrase[0])
            i = phrase[1]
            continue
        if tok in AND_WORDS:
            if pending or weight is not None:
                raise InputError(f"'{' '.join(pending) or weight}' in {text!r} is not followed by an emotion.")
            i += 1
            continue
        if tok in FILLERS:
            i += 1
            continue
        if tok.endswith("%") or _is_number(tok):
            if weight is not None or pending:
                raise _unknown(tok, text)
            value = float(tok.rstrip("%").strip())
            weight = value / 100.0 if tok.endswith("%") else value
            i += 1
            continue
        word, _, number = tok.partition(":")
        found = _emotion_word(word, extra_names)
        if found is None:
            raise _unknown(word, text)
        name, implied = found
        intensity = implied * factor * (float(number) if number else 1.0)
        label = " ".join([*pending, tok])
        terms.append(TermSpec(name, 1.0 if weight is None else weight, intensity, label))
        weight, factor, pending = None, 1.0, []
        i += 1
    if pending or weight is not None:
        raise InputError(f"'{' '.join(pending) or weight}' in {text!r} is not followed by an emotion.")
    if not terms:
        raise InputError(f"A part of the emotion text {text!r} names no emotion. Understood: {vocabulary()}")
    return KeyframeSpec(tuple(terms), at, ease, over, 1.0, " and ".join(t.text for t in terms))


def parse_emotion_text(text: str, extra_names: Collection[str] = ()) -> list[KeyframeSpec]:
    """``"slightly sad, then very happy at 2s"`` -> keyframe specs (see the module docstring).

    Args:
        text: the prompt.
        extra_names: other accepted emotion names (saved presets), matched case-insensitively.

    Raises:
        InputError: with the list of understood words when something cannot be read.
    """
    if not text or not text.strip():
        raise InputError(
            f"The emotion text is empty. Write e.g. 'slightly sad, then very happy'. Understood: {vocabulary()}"
        )
    segments = _split_segments(_tokenize(text))
    if any(not s for s in segments):
        raise InputError(f"'then' needs an emotion on both sides in {text!r}.")
    return [_parse_segment(s, text, extra_names) for s in segments]


def parse_mix_text(text: str, extra_names: Collection[str] = ()) -> KeyframeSpec:
    """One segment only (no ``then``): ``"very happy and slightly surprised"``."""
    specs = parse_emotion_text(text, extra_names)
    if len(specs) != 1:
        raise InputError(f"{text!r} describes a sequence ('then'); here only one emotion or mix is allowed.")
    return specs[0]
