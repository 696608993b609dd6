"""HTTP routes the pack adds to ComfyUI's server: the facts its web extension takes from Python.

``GET /dicetalk/vocabulary`` (also under ``/api``, as every route of ComfyUI's server) answers with
the emotion grammar's word tables and the numbers the timeline editor computes with, read from the
engine at request time, so the browser never keeps a copy of them.
"""

from __future__ import annotations

from aiohttp import web
from server import PromptServer

from ..dicetalk_core import model_files, rates
from ..dicetalk_core.emotion import keyframes_json, mixing, text, timeline

VOCABULARY_ROUTE = "/dicetalk/vocabulary"


def _mark(mark: timeline.TimeMark | None) -> dict | None:
    return None if mark is None else {"value": mark.value, "unit": mark.unit}


def vocabulary() -> dict:
    """The emotion text grammar (``dicetalk_core.emotion.text``) and the timeline's constants, as JSON."""
    return {
        "emotion_words": {word: [preset, factor] for word, (preset, factor) in text.EMOTION_WORDS.items()},
        "adverbs": dict(text.ADVERBS),
        "transitions": {word: [ease, _mark(over)] for word, (ease, over) in text.TRANSITIONS.items()},
        "default_transition": [text.DEFAULT_TRANSITION[0], _mark(text.DEFAULT_TRANSITION[1])],
        "then_words": list(text.THEN_WORDS),
        "and_words": list(text.AND_WORDS),
        "time_words": list(text.TIME_WORDS),
        "over_words": list(text.OVER_WORDS),
        "fillers": sorted(text.FILLERS),
        "ignored_punctuation": list(text.IGNORED_PUNCTUATION),
        "slot_pattern": text.SLOT_PATTERN.pattern,
        "presets": list(model_files.OFFICIAL_PRESETS),
        "easings": list(timeline.EASINGS),
        "keyframe_keys": list(keyframes_json.KEYFRAME_KEYS),
        "max_intensity": mixing.MAX_INTENSITY,
        "generation_fps": rates.GENERATION_FPS,
        "sample_rate": rates.SAMPLE_RATE,
        "samples_per_audio_frame": rates.SAMPLES_PER_FRAME,
        "audio_frames_per_generated_frame": rates.FRAME_STEP,
        "max_audio_frames": rates.MAX_AUDIO_FRAMES,
    }


def register_routes() -> None:
    """Adds the routes to ComfyUI's server, which serves them once every pack is imported (nothing to add
    to when the nodes are imported without a running server, e.g. by a tool that lists them)."""
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return

    async def get_vocabulary(request: web.Request) -> web.Response:
        return web.json_response(vocabulary())

    server.routes.get(VOCABULARY_ROUTE)(get_vocabulary)
