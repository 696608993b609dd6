"""Shared pieces of the real-ComfyUI tests: where the harness is, test inputs, workflows, mp4 checks.

``COMFYUI_DIR`` is the ComfyUI folder of the harness made by ``setup_comfyui.sh DEST``, i.e.
``DEST/ComfyUI`` (the same variable ``tests/test_svd_single_file.py`` reads as "a ComfyUI source
folder"); the server runs with the harness venv beside it, ``DEST/venv``. ``COMFYUI_DIR=DEST`` works
here too. The harness tools (``comfy_server.py``,
``ui_check.mjs``) are read from ``COMFYUI_HARNESS_TOOLS`` (default ``../shared/comfyui`` beside the
repository). Without them the tests skip with a message, or fail when ``DICETALK_REQUIRE_COMFYUI=1``
(CI sets it, so a broken harness cannot pass as skipped).

This module is not named like any ``comfy.*`` module on purpose: ComfyUI's ``comfy`` is a namespace
package, and ``tests/comfy`` is a portion of it whenever ``tests/`` is on ``sys.path``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = Path(__file__).resolve().parent / "workflows"
EXAMPLES = REPO / "example_workflows"
EXAMPLE_NAMES = ("basic", "crop_paste_back")

DICE_NODES = (
    "DICEModelLoader",
    "DICEAudioEncoder",
    "DICEEmotionPreset",
    "DICEEmotionBank",
    "DICEEmotionEmbedder",
    "DICEFaceCrop",
    "DICEPasteBack",
    "DICESampler",
    "DICEFastMode",
    "DICEFrameInterpolation",
)

# Input file names the example workflows use (README "ComfyUI" section documents them).
PORTRAIT = "dicetalk_portrait.png"
WIDE_PHOTO = "dicetalk_wide_photo.png"
SPEECH = "dicetalk_speech.wav"

# Speech: 2.3 s at 24 kHz stereo -> 36800 samples at 16 kHz -> 57 audio frames of 40 ms (57.5, so
# one resampled sample more or less changes nothing) -> 28 generated frames -> 55 after RIFE.
SPEECH_RATE = 24_000
SPEECH_SAMPLES = 55_200
AUDIO_FRAMES = SPEECH_SAMPLES * 16_000 // SPEECH_RATE // 640
GENERATED_FRAMES = AUDIO_FRAMES // 2
WIDE_SIZE = (576, 256)  # (width, height) of the wide photo

TINY_SETTINGS = {"steps": 2, "resolution": 64}
"""Sampler settings the tests run the workflows with (tiny random weights; the files keep the official ones)."""


def unavailable(message: str) -> None:
    """Skip, or fail under ``DICETALK_REQUIRE_COMFYUI=1``."""
    if os.environ.get("DICETALK_REQUIRE_COMFYUI") == "1":
        pytest.fail(f"{message} (DICETALK_REQUIRE_COMFYUI=1)", pytrace=False)
    pytest.skip(message)


def harness_dest() -> Path:
    """The harness folder DEST (holding ``ComfyUI/`` and ``venv/``) from ``COMFYUI_DIR`` (DEST/ComfyUI or DEST)."""
    value = os.environ.get("COMFYUI_DIR", "")
    if not value:
        unavailable(
            "real-ComfyUI tests skipped: run `bash ../shared/comfyui/setup_comfyui.sh DEST --with-ui` and set "
            "COMFYUI_DIR=DEST/ComfyUI"
        )
    root = Path(value).expanduser().resolve()
    dest = root.parent if (root / "main.py").is_file() else root
    if not (dest / "ComfyUI" / "main.py").is_file() or not (dest / "venv" / "bin" / "python").exists():
        unavailable(
            f"real-ComfyUI tests skipped: COMFYUI_DIR={value} is not the ComfyUI folder of a harness (expected "
            f"{dest}/ComfyUI/main.py and {dest}/venv/bin/python; make one with setup_comfyui.sh DEST)"
        )
    return dest


def harness_tools() -> Path:
    tools = Path(os.environ.get("COMFYUI_HARNESS_TOOLS", REPO.parent / "shared" / "comfyui")).resolve()
    if not (tools / "comfy_server.py").is_file():
        unavailable(f"real-ComfyUI tests skipped: comfy_server.py not found in {tools} (set COMFYUI_HARNESS_TOOLS)")
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
    return tools


def pack_server(dest: Path, models_dir: Path, input_dir: Path, output_dir: Path):
    """A ComfyUI server (not started yet: use it as a context manager) with only this pack, on ``models_dir``.

    Live previews are on (``--preview-method latent2rgb``), so the sampler's preview code runs in every
    test, and the server uses one OpenMP thread: on a shared 2-core machine OpenMP spin-waiting made a
    tiny run take 40-55 s instead of about 6 s.
    """
    from comfy_server import ComfyServer

    return ComfyServer(
        dest,
        packs=[REPO],
        models_dir=models_dir,
        output_dir=output_dir,
        input_dir=input_dir,
        only_pack=True,
        server_args=["--preview-method", "latent2rgb"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        quiet=True,
    )


# ------------------------------------------------------------------------------------------ inputs


def astronaut(size: int) -> np.ndarray:
    """scikit-image's astronaut photo (public domain, NASA), resized to ``size`` x ``size``."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS))


def write_portrait(path: Path) -> Path:
    Image.fromarray(astronaut(256)).save(path)
    return path


def write_wide_photo(path: Path) -> Path:
    """A wide shot: the 256 px portrait at two thirds of the width, the scene's edges stretched outwards."""
    width, height = WIDE_SIZE
    left = width * 2 // 3 - 128
    wide = np.pad(astronaut(height), ((0, 0), (left, width - height - left), (0, 0)), mode="edge")
    Image.fromarray(wide).save(path)
    return path


def write_speech(path: Path, samples: int = SPEECH_SAMPLES, rate: int = SPEECH_RATE) -> Path:
    """A voice-like stereo clip: a 140 Hz buzz with harmonics, its loudness moving like syllables."""
    t = np.arange(samples) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    mono = 0.3 * voice * envelope / np.abs(voice).max()
    pcm = np.round(np.stack([mono, 0.8 * mono], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def write_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_portrait(folder / PORTRAIT)
    write_wide_photo(folder / WIDE_PHOTO)
    write_speech(folder / SPEECH)
    return folder


# ------------------------------------------------------------------------------------------ workflows


def api_workflow(name: str) -> dict:
    """The API twin of ``example_workflows/<name>.json`` (what the frontend's graphToPrompt makes of it)."""
    return json.loads((WORKFLOWS / f"{name}_api.json").read_text())


def ui_workflow(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def with_settings(prompt: dict, **settings) -> dict:
    """A copy of ``prompt`` with the DICE-Talk Sampler's inputs replaced by ``settings``."""
    prompt = copy.deepcopy(prompt)
    (sampler,) = nodes_of(prompt, "DICESampler")
    unknown = set(settings) - set(prompt[sampler]["inputs"])
    assert not unknown, f"DICESampler has no input {unknown}"
    prompt[sampler]["inputs"].update(settings)
    return prompt


def tiny(prompt: dict, **more) -> dict:
    """``prompt`` with :data:`TINY_SETTINGS`, then ``more`` (e.g. more steps), in the sampler."""
    return with_settings(prompt, **{**TINY_SETTINGS, **more})


CONTROL_AFTER_GENERATE = {"fixed", "increment", "decrement", "randomize"}


def widget_slots(node: dict) -> dict[str, int]:
    """Index in ``widgets_values`` of each widget of a UI-format node (a seed's control value has its own slot)."""
    names = [entry["widget"]["name"] for entry in node.get("inputs", []) if entry.get("widget")]
    values, slots, index = node["widgets_values"], {}, 0
    for name in names:
        slots[name] = index
        index += 1
        if index < len(values) and values[index] in CONTROL_AFTER_GENERATE and isinstance(values[index - 1], int):
            index += 1
    assert index == len(values), f"{node['type']}: {len(values)} widget values for widgets {names}"
    return slots


def ui_with_settings(workflow: dict, **settings) -> dict:
    """A copy of a UI-format workflow with the DICE-Talk Sampler's widgets set to ``settings``."""
    workflow = copy.deepcopy(workflow)
    (sampler,) = [node for node in workflow["nodes"] if node["type"] == "DICESampler"]
    slots = widget_slots(sampler)
    for name, value in settings.items():
        sampler["widgets_values"][slots[name]] = value
    return workflow


# ------------------------------------------------------------------------------------------ outputs


def video_size(path: str | Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height
