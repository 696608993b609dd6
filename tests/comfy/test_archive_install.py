"""The pack installed as ComfyUI-Manager and the Comfy Registry install it: from the published archive.

``comfy node pack`` (comfy-cli) builds the archive the registry publishes: the git-tracked files minus
the ``.comfyignore`` patterns. It runs on a clean copy of the tracked files (so nothing is written into
the checkout). The archive must hold no development files (bench/, tests/, scripts/, .ci/) and every
file the pack loads: each relative Python import of a shipped module and each relative JavaScript
import of the web extension resolves inside it. Unpacked into a folder named after the registry id,
that folder (not the checkout) is linked into the harness's ``custom_nodes/``; its ``requirements.txt``
is installed with ComfyUI's own Python; the server starts with only this pack, lists its nodes,
templates and web extension, and runs the ``basic`` example (its API twin) with tiny weights.

comfy-cli lives in its own venv (it pulls uv, ruff, gitpython, ...); ``DICETALK_COMFY_CLI`` names its
``comfy`` executable (``.ci/run`` installs it). Without it the tests skip with a message, or fail under
``DICETALK_REQUIRE_COMFYUI=1``. Also skips without ``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dicetalk_harness import DICE_NODES, EXAMPLES, GENERATED_FRAMES, REPO, api_workflow, tiny, unavailable, video_size

from dicetalk_core.video_io import read_video_info

logger = logging.getLogger(__name__)

NODE_ID = "comfyui-dicetalk"  # [project] name: the registry id, and the folder Manager installs into
DEVELOPMENT_ONLY = ("bench/", "tests/", "scripts/", ".ci/")
SHIPPED = ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md")
SHIPPED_FOLDERS = ("dicetalk_core/", "nodes/", "web/", "example_workflows/")
RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Archive:
    names: list[str]  # entries of node.zip
    tracked: list[str]  # git-tracked files of the checkout
    unpacked: Path  # the archive unpacked into a folder named NODE_ID


def comfy_cli() -> Path:
    value = os.environ.get("DICETALK_COMFY_CLI", "")
    if not value or not Path(value).is_file():
        unavailable(
            "archive install test skipped: set DICETALK_COMFY_CLI to comfy-cli's `comfy` executable (install it "
            "in its own venv: python3 -m venv V && V/bin/pip install comfy-cli; .ci/run does)"
        )
    return Path(value)


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def archive(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    comfy = comfy_cli()
    source = tmp_path_factory.mktemp("pack_source")
    tracked = tracked_files()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    subprocess.run(["git", "add", "-A"], cwd=source, check=True)
    packed = subprocess.run(
        [comfy, "--skip-prompt", "--no-enable-telemetry", "node", "pack"],
        cwd=source,
        env={**os.environ, "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = packed.stdout + packed.stderr
    assert packed.returncode == 0 and (source / "node.zip").is_file(), output
    assert "warning" not in output.lower(), output
    unpacked = tmp_path_factory.mktemp("custom_nodes") / NODE_ID
    with zipfile.ZipFile(source / "node.zip") as zipped:
        names = zipped.namelist()
        zipped.extractall(unpacked)
    logger.info("node.zip: %d files, %.0f KB", len(names), (source / "node.zip").stat().st_size / 1024)
    return Archive(names, tracked, unpacked)


def test_the_archive_holds_no_development_files(archive):
    development = [name for name in archive.names if name.startswith(DEVELOPMENT_ONLY)]
    assert not development, f"development files in the archive (add them to .comfyignore): {development}"


def test_the_archive_holds_every_file_the_pack_loads(archive):
    expected = [name for name in archive.tracked if name in SHIPPED or name.startswith(SHIPPED_FOLDERS)]
    assert sorted(set(expected) - set(archive.names)) == []
    unresolved = []
    for path in sorted(archive.unpacked.rglob("*.py")):
        package = path.parent
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.parents[node.level - 2] if node.level > 1 else package
                target = base.joinpath(*(node.module or "").split("."))
                if not (target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()):
                    unresolved.append(f"{path.relative_to(archive.unpacked)}: from {'.' * node.level}{node.module}")
            elif isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                own = [m for m in modules if m and m.split(".")[0] in {"dicetalk_core", "nodes"}]
                # the pack root is not on sys.path inside ComfyUI: its own modules import each other relatively
                unresolved += [f"{path.relative_to(archive.unpacked)}: absolute import {m}" for m in own]
    for path in sorted((archive.unpacked / "web").rglob("*.js")):
        for module in re.findall(r"""^\s*import\s[^;]*?from\s+["'](\.{1,2}/[^"']+)["']""", path.read_text(), re.M):
            if not module.startswith("../../scripts/") and not (path.parent / module).resolve().is_file():
                unresolved.append(f"{path.relative_to(archive.unpacked)}: import {module}")
    assert not unresolved, "imports that do not resolve inside the archive:\n" + "\n".join(unresolved)


def torch_version(python: Path) -> str:
    done = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def installed_server(archive, comfy_dest: Path, models_root: Path, input_dir: Path, tmp_path_factory) -> Iterator:
    from comfy_server import ComfyServer

    python = comfy_dest / "venv" / "bin" / "python"
    torch_before = torch_version(python)
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=archive.unpacked,
        env={key: value for key, value in os.environ.items() if key != "PIP_CONSTRAINT"},  # as Manager runs it
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, f"pip install -r requirements.txt with ComfyUI's Python failed:\n{install.stderr}"
    assert torch_version(python) == torch_before, "installing requirements.txt replaced ComfyUI's torch"
    server = ComfyServer(
        comfy_dest,
        packs=[archive.unpacked],
        models_dir=models_root,
        output_dir=tmp_path_factory.mktemp("archive_output"),
        input_dir=input_dir,
        only_pack=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        quiet=True,
    )
    with server:
        yield server


def test_the_installed_archive_registers_its_nodes_templates_and_web_extension(installed_server, archive):
    info = installed_server.assert_nodes(DICE_NODES)  # raises with the traceback of a pack import error
    assert installed_server.import_errors()[0] == []
    modules = {info[name]["python_module"] for name in DICE_NODES}
    assert modules == {f"custom_nodes.{NODE_ID}"}, modules
    templates = installed_server.get_json("/api/workflow_templates")
    assert sorted(templates[NODE_ID]) == sorted(path.stem for path in EXAMPLES.glob("*.json"))
    extensions = installed_server.get_json("/extensions")
    served = {name.removeprefix(f"/extensions/{NODE_ID}/") for name in extensions if NODE_ID in name}
    shipped = {str(path.relative_to(archive.unpacked / "web")) for path in (archive.unpacked / "web").rglob("*.js")}
    assert served == shipped


def test_the_installed_archive_runs_the_basic_example(installed_server):
    result = installed_server.run_prompt(tiny(api_workflow("basic")), timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    assert result.status == "success", f"{result.status}: {result.error}"
    (video,) = [Path(f) for f in result.output_files if f.endswith(".mp4")]
    info = read_video_info(video)
    assert (info.n_frames, info.fps, video_size(video)) == (2 * GENERATED_FRAMES - 1, pytest.approx(25.0), (64, 64))
    assert info.channels > 0, "the video has no sound"
    logger.info("basic from the installed archive: ran in %.1f s", result.seconds)
