"""Fixtures of the real-ComfyUI tests: tiny weights, test inputs, one server per test module, and the
browser tests' servers (one per frontend, shared by a module's browser tests).

See ``dicetalk_harness.py`` for ``COMFYUI_DIR``. Each server-side test module gets its own server (so
ComfyUI's output cache never carries a result from one module's runs into another's), started with the
pack linked into ``custom_nodes`` under its folder name, only this pack enabled, the tiny models folder
as the default models path, and input/output folders in the test's temporary directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers shared with the engine tests

from dicetalk_harness import FrontendServers, harness_dest, harness_tools, pack_server, unavailable, write_inputs
from test_emotion_classifiers import write_face_classifier
from test_emotion_mixing import random_library

from dicetalk_core.model_files import OFFICIAL_PRESETS
from dicetalk_core.random_models import write_models_folder

logger = logging.getLogger(__name__)

SAVED_EMOTION = "wistful"
"""A saved emotion beside the presets in the browser tests' models: the timeline editor must offer it."""


@pytest.fixture(scope="session")
def comfy_dest() -> Path:
    dest = harness_dest()
    harness_tools()
    return dest


@pytest.fixture(scope="session")
def models_root(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root whose ``dice_talk/`` holds the whole tiny random-weight DICE-Talk folder, plus what the
    examples beyond ``basic`` read: a second preset for the mix and a tiny face-expression classifier."""
    root = tmp_path_factory.mktemp("comfy_models")
    dice = write_models_folder(root / "dice_talk")
    random_library(dice / "emotions", ("surprised",))
    write_face_classifier(dice / "expression" / "tiny_vit")
    return root


@pytest.fixture(scope="session")
def input_dir(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portrait, wide photo and speech clip, under the names the example workflows use."""
    return write_inputs(tmp_path_factory.mktemp("comfy_input"))


@pytest.fixture(scope="module")
def comfy_server(comfy_dest: Path, models_root: Path, input_dir: Path, tmp_path_factory) -> Iterator:
    with pack_server(comfy_dest, models_root, input_dir, tmp_path_factory.mktemp("comfy_output")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(comfy_dest: Path) -> dict:
    """What the browser checks run with: node, Debian chromium and playwright-core from the harness."""
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    modules = comfy_dest / "ui" / "node_modules"
    if node is None or not Path(chromium).exists() or not (modules / "playwright-core").is_dir():
        unavailable(
            f"browser tests skipped: need node ({node}), chromium ({chromium}) and playwright-core in {modules} "
            f"(run setup_comfyui.sh {comfy_dest} --with-ui)"
        )
    return {"node": node, "chromium": chromium, "modules": modules}


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    """Where the browser tests put their screenshots: ``DICETALK_SCREENSHOTS`` (CI keeps it), else a temporary
    folder."""
    folder = Path(os.environ.get("DICETALK_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("browser screenshots in %s", folder)
    return folder


@pytest.fixture(scope="session")
def browser_models(comfy_dest: Path, tmp_path_factory) -> Path:
    """The browser tests' models: the tiny folder, the eight presets and a saved emotion (random priors), and a
    tiny face-expression classifier, so every example workflow runs."""
    root = tmp_path_factory.mktemp("browser_models")
    dice = write_models_folder(root / "dice_talk")
    random_library(dice / "emotions", (*OFFICIAL_PRESETS, SAVED_EMOTION))
    write_face_classifier(dice / "expression" / "tiny_vit")
    return root


@pytest.fixture(scope="module")
def frontend_servers(comfy_dest: Path, browser_models: Path, input_dir: Path, tmp_path_factory) -> Iterator:
    """``servers["harness"]`` / ``servers["newest"]``: a server serving that frontend, shared by the module's
    browser tests (the render mode is a user setting each check writes before opening the page). Per module,
    as the other servers: every server links the pack into ``custom_nodes`` and unlinks it when it stops,
    which would leave a longer-lived server without the pack's web folder."""
    output = tmp_path_factory.mktemp("browser_output")

    def start(front_end_root: Path | None):
        user = tmp_path_factory.mktemp("browser_user")
        return pack_server(comfy_dest, browser_models, input_dir, output, front_end_root, user)

    with ExitStack() as stack:
        yield FrontendServers(comfy_dest, start, stack)
