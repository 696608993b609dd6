"""Fixtures of the real-ComfyUI tests: tiny weights, test inputs and one server per test module.

See ``dicetalk_harness.py`` for ``COMFYUI_DIR``. Each module gets its own server (so ComfyUI's output
cache never carries a result from one module's runs into another's), started with the pack linked into
``custom_nodes`` under its folder name, only this pack enabled, the tiny models folder as the default
models path, and input/output folders in the test's temporary directory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers shared with the engine tests

from dicetalk_harness import harness_dest, harness_tools, pack_server, write_inputs

from dicetalk_core.random_models import write_models_folder


@pytest.fixture(scope="session")
def comfy_dest() -> Path:
    dest = harness_dest()
    harness_tools()
    return dest


@pytest.fixture(scope="session")
def models_root(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root whose ``dice_talk/`` holds the whole tiny random-weight DICE-Talk folder."""
    root = tmp_path_factory.mktemp("comfy_models")
    write_models_folder(root / "dice_talk")
    return root


@pytest.fixture(scope="session")
def input_dir(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portrait, wide photo and speech clip, under the names the example workflows use."""
    return write_inputs(tmp_path_factory.mktemp("comfy_input"))


@pytest.fixture(scope="module")
def comfy_server(comfy_dest: Path, models_root: Path, input_dir: Path, tmp_path_factory) -> Iterator:
    with pack_server(comfy_dest, models_root, input_dir, tmp_path_factory.mktemp("comfy_output")) as server:
        yield server
