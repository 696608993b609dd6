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

import ast
import copy
import json
import os
import sys
import wave
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = Path(__file__).resolve().parent / "workflows"
EXAMPLES = REPO / "example_workflows"
EXAMPLE_NAMES = tuple(sorted(path.stem for path in EXAMPLES.glob("*.json")))
"""Every example workflow; each has its API twin ``tests/comfy/workflows/<name>_api.json``."""


def pack_node_ids() -> tuple[str, ...]:
    """The keys of ``NODE_CLASS_MAPPINGS`` in ``nodes/__init__.py``, read from its source (importing the nodes
    needs ComfyUI's runtime)."""
    tree = ast.parse((REPO / "nodes" / "__init__.py").read_text())
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "NODE_CLASS_MAPPINGS" for target in statement.targets
        ):
            return tuple(ast.literal_eval(key) for key in statement.value.keys)
    raise AssertionError("nodes/__init__.py assigns no NODE_CLASS_MAPPINGS dict")


DICE_NODES = pack_node_ids()

# Input file names the example workflows use (README "ComfyUI" section documents them).
PORTRAIT = "dicetalk_portrait.png"
WIDE_PHOTO = "dicetalk_wide_photo.png"
REFERENCE_FACE = "dicetalk_reference_face.png"
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


def pack_server(
    dest: Path,
    models_dir: Path,
    input_dir: Path,
    output_dir: Path,
    front_end_root: Path | None = None,
    user_dir: Path | None = None,
):
    """A ComfyUI server (not started yet: use it as a context manager) with only this pack, on ``models_dir``.

    Live previews are on (``--preview-method latent2rgb``), so the sampler's preview code runs in every
    test, and the server uses one OpenMP thread: on a shared 2-core machine OpenMP spin-waiting made a
    tiny run take 40-55 s instead of about 6 s. ``front_end_root`` serves another frontend than the one
    ComfyUI's requirements installed (``--front-end-root``); ``user_dir`` keeps the user settings the
    browser checks write (e.g. the render mode) out of the harness's own ``ComfyUI/user``.
    """
    from comfy_server import ComfyServer

    front_end = [f"--front-end-root={front_end_root}"] if front_end_root else []
    front_end += [f"--user-directory={user_dir}"] if user_dir else []
    return ComfyServer(
        dest,
        packs=[REPO],
        models_dir=models_dir,
        output_dir=output_dir,
        input_dir=input_dir,
        only_pack=True,
        server_args=["--preview-method", "latent2rgb", *front_end],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        quiet=True,
    )


# ------------------------------------------------------------------------------------------ frontends

CONSTRAINTS = REPO / ".ci" / "constraints.txt"
FRONTEND_PACKAGE = "comfyui-frontend-package"
NODES_2_SETTING = "Comfy.VueNodes.Enabled"
NEWER_BACKEND_ROUTES = ("/api/jobs", "/api/global_subgraphs")
"""Routes the newer frontend calls that ComfyUI 0.3.64 does not have: their 404s (and the frontend's console
error about the jobs one) are the only errors its page may show."""
NEWER_BACKEND_CONSOLE = ("JobsApiError: Failed to fetch jobs: 404",)


def newest_frontend_version() -> str:
    """The newer frontend the browser checks also run on: its pin in ``.ci/constraints.txt``."""
    for line in CONSTRAINTS.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("_", "-") == FRONTEND_PACKAGE and version.strip():
            return version.strip()
    raise AssertionError(f"{CONSTRAINTS} has no line {FRONTEND_PACKAGE}==VERSION")


def newest_frontend_root(dest: Path) -> Path:
    """The static folder of the pinned frontend, as ``.ci/run`` unpacks it into ``DEST/frontends/<version>``."""
    version = newest_frontend_version()
    folder = dest / "frontends" / version
    root = folder / "comfyui_frontend_package" / "static"
    if not (root / "index.html").is_file():
        unavailable(
            f"browser tests on frontend {version} skipped: {root} is missing. Unpack it as .ci/run does: "
            f"python -m pip download --no-deps {FRONTEND_PACKAGE}=={version} -d {folder}/wheel && "
            f"python -m zipfile -e {folder}/wheel/*.whl {folder}"
        )
    return root


@dataclass(frozen=True)
class Combination:
    """A frontend and a render mode the browser checks run in.

    ``frontend`` is ``harness`` (the one ComfyUI's requirements install) or ``newest`` (the pin above);
    ``nodes_2`` is the frontend's "Nodes 2.0" setting (every node a DOM element instead of canvas drawing).
    ``seed`` goes into the sampler of every run the checks queue: combinations share a server, and a
    prompt the server has run before would only be answered from its cache.
    """

    id: str
    frontend: str
    nodes_2: bool
    seed: int

    def check_args(self) -> list[str]:
        """Options of the check scripts (``browser_page.mjs``): the render mode, and what this frontend may show."""
        args = ["--setting", f"{NODES_2_SETTING}={json.dumps(self.nodes_2)}"]
        if self.frontend == "newest":
            args += [arg for route in NEWER_BACKEND_ROUTES for arg in ("--allow-404", route)]
            args += [arg for text in NEWER_BACKEND_CONSOLE for arg in ("--allow-console", text)]
        return args


COMBINATIONS = (
    Combination("harness-frontend", "harness", nodes_2=False, seed=1),
    Combination("newest-frontend", "newest", nodes_2=False, seed=2),
    Combination("newest-frontend-nodes2", "newest", nodes_2=True, seed=3),
)


class FrontendServers:
    """One server per frontend, started when first asked for and stopped with the fixture that holds them."""

    def __init__(self, dest: Path, start: Callable[[Path | None], object], stack: ExitStack) -> None:
        self._dest, self._start, self._stack = dest, start, stack
        self._servers: dict[str, object] = {}

    def __getitem__(self, frontend: str):
        if frontend not in self._servers:
            root = newest_frontend_root(self._dest) if frontend == "newest" else None
            self._servers[frontend] = self._stack.enter_context(self._start(root))
        return self._servers[frontend]


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


def write_reference_face(path: Path) -> Path:
    """Another face for the emotion-from-face example: the astronaut mirrored, at 192 px."""
    Image.fromarray(astronaut(192)[:, ::-1].copy()).save(path)
    return path


def write_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_portrait(folder / PORTRAIT)
    write_wide_photo(folder / WIDE_PHOTO)
    write_reference_face(folder / REFERENCE_FACE)
    write_speech(folder / SPEECH)
    return folder


# ------------------------------------------------------------------------------------------ workflows


def api_workflow(name: str) -> dict:
    """The API twin of ``example_workflows/<name>.json``: what the frontend's graphToPrompt makes of it, with
    the inputs the server reads (see :func:`server_inputs`)."""
    return json.loads((WORKFLOWS / f"{name}_api.json").read_text())


FRONTEND_ONLY_INPUTS = frozenset({("LoadAudio", "audioUI"), ("PreviewAny", "preview")})
"""Display widgets of core nodes that frontend 1.27.10 puts into the prompt and 1.58.1 does not; no node
declares them and the server ignores them, so the API twins leave them out."""


def server_inputs(prompt: dict, object_info: dict) -> tuple[dict, set[tuple[str, str]]]:
    """``prompt`` without ``_meta`` and with only the inputs its nodes declare (required, optional, hidden), and
    the (class, input) pairs left out."""
    kept, dropped = {}, set()
    for node_id, node in prompt.items():
        spec = object_info[node["class_type"]]["input"]
        declared = {name for group in ("required", "optional", "hidden") for name in spec.get(group, {})}
        inputs = {key: value for key, value in node["inputs"].items() if key in declared}
        dropped |= {(node["class_type"], key) for key in node["inputs"] if key not in declared}
        kept[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return kept, dropped


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
