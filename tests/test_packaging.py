"""Packaging: one list of runtime dependencies, a test extra that holds what the tests import, and an
engine that installs as a library (``pip install <checkout>``, then ``python -m dicetalk_core`` anywhere).

The node pack itself is not pip-installed: ComfyUI loads it from ``custom_nodes/`` and installs
``requirements.txt`` with its own Python (tests/comfy/test_archive_install.py does it as the registry
does). ``pyproject.toml`` installs the engine, ``dicetalk_core``, and is what the Comfy Registry reads.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# In pyproject's dependencies but not in requirements.txt, which ComfyUI installs with its own Python:
# ComfyUI brings both, and a pack's requirements must never replace its torch build (CUDA, ROCm, ...)
# nor its frontend. The frontend entry is how the Comfy Registry reads the supported frontend versions.
NOT_IN_REQUIREMENTS = {"torch", "comfyui-frontend-package"}

# Modules that ComfyUI itself provides to the nodes (and to the tests that import ComfyUI's code); its
# server runs on aiohttp, whose types the pack's routes use.
COMFYUI_MODULES = {
    *("comfy", "comfy_api", "comfy_execution", "folder_paths", "latent_preview", "server", "nodes"),
    "aiohttp",
}


def requirements(lines: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in lines]
    return {canonicalize_name(req.name): req for req in parsed}


def requirements_txt() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    return requirements([line for line in lines if line])


def third_party_imports(*roots: Path) -> dict[str, Path]:
    """Top-level names imported by absolute imports in the ``.py`` files under ``roots`` (first file seen)."""
    found: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return {name: path for name, path in found.items() if name not in sys.stdlib_module_names}


def distributions_of(module: str) -> set[str]:
    """The installed distributions providing top-level ``module``, and the module's own name (canonical names):
    a requirement whose marker leaves it out here (``tomli`` on Python 3.11+) is matched by name."""
    return {canonicalize_name(dist) for dist in packages_distributions().get(module, [])} | {canonicalize_name(module)}


def test_requirements_txt_lists_the_runtime_dependencies_of_pyproject():
    declared = requirements(PROJECT["dependencies"])
    assert set(declared) >= NOT_IN_REQUIREMENTS
    expected = {name: str(req) for name, req in declared.items() if name not in NOT_IN_REQUIREMENTS}
    assert {name: str(req) for name, req in requirements_txt().items()} == expected


def test_every_package_the_engine_and_nodes_import_is_a_runtime_dependency():
    declared = set(requirements(PROJECT["dependencies"]))
    imports = third_party_imports(REPO / "dicetalk_core", REPO / "nodes", REPO / "__init__.py")
    missing = {
        name: str(path.relative_to(REPO))
        for name, path in imports.items()
        if name not in COMFYUI_MODULES | {"dicetalk_core"} and not distributions_of(name) & declared
    }
    assert not missing, f"imported but provided by no dependency in pyproject.toml: {missing}"


def test_the_test_extra_holds_what_the_tests_import():
    declared = set(requirements(PROJECT["dependencies"])) | set(requirements(PROJECT["optional-dependencies"]["test"]))
    scripts = [*(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py"), *(REPO / "scripts").glob("*.py")]
    local = {path.stem for path in scripts} | {"parity_checks", "dicetalk_core", "comfy_server"}
    imports = third_party_imports(REPO / "tests")
    missing = {
        name: str(path.relative_to(REPO))
        for name, path in imports.items()
        if name not in local | COMFYUI_MODULES and not distributions_of(name) & declared
    }
    assert not missing, f"tests import what neither the dependencies nor the test extra provide: {missing}"
    assert "ruff" in declared, ".ci/run runs ruff: it belongs in the test extra"


def test_the_versions_ci_pins_satisfy_the_declared_ranges():
    declared = requirements(PROJECT["dependencies"]) | requirements(PROJECT["optional-dependencies"]["test"])
    lines = [line.split("#")[0].strip() for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines()]
    pins = requirements([line for line in lines if line])
    outside = {
        name: f"{pin.specifier} not in {declared[name].specifier}"
        for name, pin in pins.items()
        if name in declared and not declared[name].specifier.contains(next(iter(pin.specifier)).version)
    }
    assert not outside, f".ci/constraints.txt pins versions outside pyproject's ranges: {outside}"


def test_readmes_test_command_installs_the_test_extra_and_is_what_ci_runs():
    tests = (REPO / "README.md").read_text().split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    command = tests.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    assert "\n" not in command, f"README's Tests section should give one line, got:\n{command}"
    assert '-e ".[test]"' in command and "pytest tests" in command, command
    assert command in (REPO / ".ci" / "run").read_text(), f".ci/run does not run README's test command: {command}"


def test_the_registry_icon_is_a_small_square_png_in_the_repository():
    prefix = "https://raw.githubusercontent.com/comfyui-dicetalk/comfyui-dicetalk/main/"
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    assert icon.startswith(prefix), icon
    path = REPO / icon.removeprefix(prefix)
    assert path.is_file(), f"the Icon URL names {path}, which is not in the repository"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == image.height and 64 <= image.width <= 512
    assert path.stat().st_size < 100_000


def clean_copy(target: Path) -> Path:
    """The git-tracked files of the checkout copied to ``target``, as a fresh clone has them (and the
    in-tree build of pip/setuptools writes nothing into the checkout)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_pip_install_of_the_checkout_gives_a_cli_that_runs_from_any_folder(tmp_path):
    """The wheel built from a clean copy holds every engine module; ``python -m dicetalk_core --help`` works
    outside the checkout. The engine alone is installed (``--no-deps --target``); this Python's packages
    provide the dependencies."""
    checkout = clean_copy(tmp_path / "checkout")
    target = tmp_path / "site"
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PIP_CONSTRAINT"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(checkout)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import dicetalk_core, pathlib; print(pathlib.Path(dicetalk_core.__file__).parent)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    installed = Path(where.stdout.strip())
    assert installed == target / "dicetalk_core", f"dicetalk_core imported from {installed}, not the installed copy"
    shipped = {path.relative_to(installed) for path in installed.rglob("*.py")}
    source = {path.relative_to(checkout / "dicetalk_core") for path in (checkout / "dicetalk_core").rglob("*.py")}
    assert source <= shipped, f"modules left out of the wheel (a folder without __init__.py?): {source - shipped}"
    cli = subprocess.run(
        [sys.executable, "-m", "dicetalk_core", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "--models" in cli.stdout and "--emotion" in cli.stdout
