"""``scripts/setup_and_run.py``: every step that needs no internet.

The weights step runs from a local folder and from a local HTTP server with Range support (resume,
restart, dropped connections); the comfy-cli install and the pip calls run against a recording fake;
the workflow is checked against the pack's node definitions; the server client runs against a fake
ComfyUI; and, when ``COMFYUI_DIR`` names a ComfyUI with its venv, the whole command runs end to end on
the CPU with the tiny models folder and must write an mp4 with sound.
"""

from __future__ import annotations

import ast
import filecmp
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.error
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup_and_run.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("setup_and_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sar = _load_script()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    from dicetalk_core.random_models import write_models_folder

    return write_models_folder(tmp_path_factory.mktemp("tiny") / "dice_talk")


def _fake_weights(folder: Path, entries=sar.MANIFEST, dice_talk_suffix: str = ".pth") -> dict[str, bytes]:
    """Small random files at every manifest target (DICE-Talk files with ``dice_talk_suffix``)."""
    rng = np.random.default_rng(1)
    written = {}
    for entry in entries:
        name = entry.target
        if entry.alternatives and entry.alternatives[0].endswith(".safetensors") and dice_talk_suffix != ".pth":
            name = entry.alternatives[0]
        data = rng.integers(0, 256, 1000 + 37 * len(written), dtype=np.uint8).tobytes()
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        written[name] = data
    return written


# ------------------------------------------------------------------------------------------- manifest


# ------------------------------------------------------------------------------- weights: local folder


def test_weights_from_the_tiny_models_folder_then_skipped(tiny_models, tmp_path, monkeypatch):
    from dicetalk_core.model_files import format_report, weight_files

    dest = tmp_path / "ComfyUI" / "models" / "dice_talk"
    report = sar.ensure_weights(dest, str(tiny_models))

    svd = "stable-video-diffusion-img2vid-xt"
    assert "emo_model.safetensors" in report.placed  # the .safetensors sibling of emo_model.pth
    assert f"{svd}/vae/diffusion_pytorch_model.safetensors" in report.placed  # the non-fp16 alternative
    assert sorted(report.missing_optional) == sorted(
        f"emotions/{e}.npy" for e in sar.EMOTIONS if e not in ("happy", "neutral")
    )
    assert len(report.placed) == len(sar.MANIFEST) - len(report.missing_optional)
    for name in report.placed:
        assert (dest / name).stat().st_size == (tiny_models / name).stat().st_size
        assert filecmp.cmp(dest / name, tiny_models / name, shallow=False), name
    assert not (dest / svd / "unet" / "diffusion_pytorch_model.safetensors").exists()  # not needed: unet.pth
    assert not list(dest.rglob("*.part"))
    assert "all required files found" in format_report(weight_files(dest))

    def no_copy(src, dst, link=False):
        raise AssertionError(f"{dst} was placed again")

    monkeypatch.setattr(sar, "place_local", no_copy)
    again = sar.ensure_weights(dest, str(tiny_models))
    assert again.placed == []
    assert set(again.skipped) == {e.target for e in sar.MANIFEST} - set(report.missing_optional)


def test_a_wrong_size_file_is_replaced_and_missing_required_files_are_named(tmp_path):
    source = tmp_path / "source"
    written = _fake_weights(source)
    dest = tmp_path / "dest"
    sar.ensure_weights(dest, str(source))
    (dest / "unet.pth").write_bytes(b"truncated")
    report = sar.ensure_weights(dest, str(source))
    assert report.placed == ["unet.pth"] and (dest / "unet.pth").read_bytes() == written["unet.pth"]

    (source / "pose_guider.pth").unlink()
    (source / "whisper-tiny" / "config.json").unlink()
    with pytest.raises(sar.SetupError) as err:
        sar.ensure_weights(tmp_path / "fresh", str(source))
    assert "pose_guider.pth" in str(err.value) and "whisper-tiny/config.json" in str(err.value)
    assert str(tmp_path / "fresh") in str(err.value)


def test_the_official_checkpoints_layout_is_accepted_and_files_can_be_linked(tmp_path):
    source = tmp_path / "checkpoints"
    written = _fake_weights(source)
    for name in ("unet.pth", "audio_linear.pth", "emo_model.pth", "pose_guider.pth"):
        (source / "DICE-Talk").mkdir(exist_ok=True)
        (source / name).rename(source / "DICE-Talk" / name)
    dest = tmp_path / "dest"
    report = sar.ensure_weights(dest, str(source), link=True)
    assert len(report.placed) == len(sar.MANIFEST)
    assert (dest / "unet.pth").read_bytes() == written["unet.pth"]
    assert (dest / "emo_model.pth").read_bytes() == written["emo_model.pth"]
    assert (dest / "unet.pth").stat().st_ino == (source / "DICE-Talk" / "unet.pth").stat().st_ino  # no copy
    assert (dest / "RIFE" / "flownet.pkl").samefile(source / "RIFE" / "flownet.pkl")


def test_not_a_folder_source_is_a_clear_error(tmp_path):
    with pytest.raises(sar.SetupError, match="no such folder"):
        sar.ensure_weights(tmp_path / "dest", str(tmp_path / "nowhere"))


# -------------------------------------------------------------------------------- weights: over HTTP


class FileServer:
    """Serves a folder on 127.0.0.1 with HTTP Range support; records what it was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.status: dict[str, int] = {}
        self.drop_after: int | None = None  # first full response stops after this many bytes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                rel = self.path.lstrip("/")
                if rel in outer.status:
                    self.send_error(outer.status[rel])
                    return
                path = outer.root / rel
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start, end = 0, len(data) - 1
                header = self.headers.get("Range")
                if header and not outer.ignore_range:
                    first, _, last = header.removeprefix("bytes=").partition("-")
                    start, end = int(first), int(last) if last else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start : end + 1]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drop_after is not None:
                    body, outer.drop_after = body[: outer.drop_after], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    yield server
    server.close()


@pytest.fixture
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(sar, "RETRY_DELAY", 0.0)


def test_download_resumes_a_partial_file_with_a_range_request(served, tmp_path):
    data = np.random.default_rng(2).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (served.root / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    dest.with_name("big.bin.part").write_bytes(data[:100_000])
    assert sar.download(f"{served.url}/big.bin", dest, "big.bin") == len(data)
    assert dest.read_bytes() == data and not dest.with_name("big.bin.part").exists()
    assert served.requests == [("/big.bin", "bytes=100000-")]


def test_download_restarts_when_the_server_ignores_range_or_the_part_is_wrong(served, tmp_path):
    data = np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    (served.root / "f.bin").write_bytes(data)
    part = tmp_path / "f.bin.part"

    served.ignore_range = True
    part.write_bytes(b"x" * 1000)
    sar.download(f"{served.url}/f.bin", tmp_path / "f.bin", "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data

    served.ignore_range = False
    part.write_bytes(b"y" * (len(data) + 10))  # longer than the file: 416, then from the start
    (tmp_path / "f.bin").unlink()
    sar.download(f"{served.url}/f.bin", tmp_path / "f.bin", "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert served.requests[-2:] == [("/f.bin", f"bytes={len(data) + 10}-"), ("/f.bin", None)]

    part.write_bytes(data)  # a complete .part (the rename did not happen): 416 with the same size
    (tmp_path / "f.bin").unlink()
    sar.download(f"{served.url}/f.bin", tmp_path / "f.bin", "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data and not part.exists()


def test_a_dropped_connection_is_resumed_on_retry(served, tmp_path, no_retry_delay):
    data = np.random.default_rng(4).integers(0, 256, 80_000, dtype=np.uint8).tobytes()
    (served.root / "d.bin").write_bytes(data)
    served.drop_after = 30_000
    sar.download(f"{served.url}/d.bin", tmp_path / "d.bin", "d.bin")
    assert (tmp_path / "d.bin").read_bytes() == data
    assert [r for _, r in served.requests] == [None, "bytes=30000-"]


def test_weights_from_a_url_base_resume_and_skip(served, tmp_path):
    written = _fake_weights(served.root, dice_talk_suffix=".safetensors")  # like the tiny folder: *.safetensors
    dest = tmp_path / "models" / "dice_talk"
    dest.mkdir(parents=True)
    half = len(written["unet.safetensors"]) // 2
    (dest / "unet.safetensors.part").write_bytes(written["unet.safetensors"][:half])
    report = sar.ensure_weights(dest, served.url + "/", accept_license=True)
    assert sorted(report.placed) == sorted(written)
    for name, data in written.items():
        assert (dest / name).read_bytes() == data, name
    assert ("/unet.safetensors", f"bytes={half}-") in served.requests
    assert ("/unet.pth", None) in served.requests  # the listed name first, its sibling after the 404

    served.requests.clear()
    again = sar.ensure_weights(dest, served.url, accept_license=True)
    assert again.placed == [] and len(again.skipped) == len(sar.MANIFEST)
    # only size probes for files under their listed name; nothing downloaded again
    assert {r for _, r in served.requests} <= {"bytes=0-0"}

    (dest / "whisper-tiny" / "config.json").write_bytes(b"{}")  # wrong size: fetched again
    third = sar.ensure_weights(dest, served.url, accept_license=True)
    assert third.placed == ["whisper-tiny/config.json"]
    assert (dest / "whisper-tiny" / "config.json").read_bytes() == written["whisper-tiny/config.json"]


def test_dice_talk_downloads_need_the_license_accepted(served, tmp_path, monkeypatch):
    _fake_weights(served.root)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(isatty=lambda: False))
    with pytest.raises(sar.SetupError, match="--accept-license"):
        sar.ensure_weights(tmp_path / "dest", served.url)
    assert served.requests == []
    assert "non-commercial" in sar.LICENSE_NOTICE and "CC BY-NC-SA 4.0" in sar.LICENSE_NOTICE


def test_gated_and_network_errors_say_what_to_do(served, tmp_path, no_retry_delay):
    headers = Message()
    url = "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/vae/config.json"
    failure = sar._http_failure(urllib.error.HTTPError(url, 401, "Unauthorized", headers, None), url, "vae")
    assert isinstance(failure, sar.SetupError)
    message = str(failure)
    assert "HTTP 401" in message and "HF_TOKEN" in message and "accept" in message
    assert "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt" in message

    (served.root / "x.bin").write_bytes(b"123")
    served.status["x.bin"] = 403
    with pytest.raises(sar.SetupError, match="Access denied \\(HTTP 403\\)"):
        sar.download(f"{served.url}/x.bin", tmp_path / "x.bin", "x.bin")

    port = served.httpd.server_address[1]
    served.close()  # nothing listens any more: a network error
    (tmp_path / "y.bin.part").write_bytes(b"abc")
    with pytest.raises(sar.SetupError) as err:
        sar.download(f"http://127.0.0.1:{port}/y.bin", tmp_path / "y.bin", "y.bin", attempts=2)
    assert "Network error" in str(err.value) and "Run the same command again to resume" in str(err.value)
    assert f"The partial download is kept in {tmp_path / 'y.bin.part'}" in str(err.value)
    assert (tmp_path / "y.bin.part").read_bytes() == b"abc"
    served.close = lambda: None  # already closed


def test_not_enough_disk_space_is_reported_before_writing(served, tmp_path, monkeypatch):
    (served.root / "big.bin").write_bytes(b"z" * 5000)
    monkeypatch.setattr(sar.shutil, "disk_usage", lambda path: SimpleNamespace(free=100))
    with pytest.raises(sar.SetupError, match="Not enough disk space"):
        sar.download(f"{served.url}/big.bin", tmp_path / "big.bin", "big.bin")
    assert not (tmp_path / "big.bin").exists()


# ---------------------------------------------------------------------------- ComfyUI with comfy-cli


class Recorder:
    """Stands in for ``subprocess.run``: records each call and fakes what the real command leaves behind."""

    def __init__(self, returncode: int = 0) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.returncode = returncode

    def __call__(self, argv, env=None, check=False):
        self.calls.append((list(argv), dict(env or {})))
        if self.returncode == 0:
            if argv[1:3] == ["-m", "venv"]:
                python = sar.venv_python(Path(argv[3]))
                python.parent.mkdir(parents=True, exist_ok=True)
                python.touch()
            elif "comfy-cli" in " ".join(argv) and "pip" in argv:
                script = sar.venv_script(Path(argv[0]).parent.parent, "comfy")
                script.touch()
            elif "install" in argv and "--workspace" in argv:
                workspace = Path(argv[argv.index("--workspace") + 1])
                workspace.mkdir(parents=True, exist_ok=True)
                (workspace / "main.py").touch()
        return SimpleNamespace(returncode=self.returncode)


def test_comfy_cli_install_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(sar.shutil, "which", lambda name: f"/usr/bin/{name}")
    root = tmp_path / "comfy"
    run = Recorder()
    comfy_dir, python = sar.install_comfyui(root, cpu=False, run=run)
    assert comfy_dir == root / "ComfyUI" and python == str(sar.venv_python(root / "venv"))
    argvs = [argv for argv, _ in run.calls]
    assert argvs[:3] == [
        [sys.executable, "-m", "venv", str(root / "comfy-cli")],
        [str(sar.venv_python(root / "comfy-cli")), "-m", "pip", "install", "comfy-cli==1.23.0"],
        [sys.executable, "-m", "venv", str(root / "venv")],
    ]
    # global options before the subcommand, as comfy-cli's typer app wants them
    assert argvs[3] == [
        str(sar.venv_script(root / "comfy-cli", "comfy")),
        "--workspace",
        str(root / "ComfyUI"),
        "--skip-prompt",
        "--no-enable-telemetry",
        "install",
        "--nvidia",
        "--version",
        "latest",
        "--skip-manager",
    ]
    env = run.calls[3][1]
    assert env["VIRTUAL_ENV"] == str(root / "venv") and env["DO_NOT_TRACK"] == "1"
    assert (root / sar.INSTALLED_MARKER).is_file()

    again = Recorder()
    assert sar.install_comfyui(root, cpu=False, run=again) == (comfy_dir, python) and again.calls == []

    (root / sar.INSTALLED_MARKER).unlink()  # an install that stopped half way: finished with --restore
    resumed = Recorder()
    sar.install_comfyui(root, cpu=True, run=resumed)
    assert len(resumed.calls) == 1
    assert resumed.calls[0][0][-5:] == ["--cpu", "--version", "latest", "--skip-manager", "--restore"]


def test_comfy_cli_failure_and_bad_folders_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(sar.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(sar.SetupError, match="exit code 1"):
        sar.install_comfyui(tmp_path / "a", cpu=False, run=Recorder(returncode=1))
    assert not (tmp_path / "a" / sar.INSTALLED_MARKER).exists()

    (tmp_path / "b" / "ComfyUI").mkdir(parents=True)
    with pytest.raises(sar.SetupError, match=r"no main\.py"):
        sar.install_comfyui(tmp_path / "b", cpu=False, run=Recorder())

    monkeypatch.setattr(sar.shutil, "which", lambda name: None)
    with pytest.raises(sar.SetupError, match="needs git"):
        sar.install_comfyui(tmp_path / "c", cpu=False, run=Recorder())

    args = sar.parse_args(["--image", "i.png", "--audio", "a.wav", "--comfyui", str(tmp_path)])
    with pytest.raises(sar.SetupError, match="not a ComfyUI folder"):
        sar.resolve_comfyui(args, run=Recorder())


def test_existing_comfyui_and_its_venv_are_found(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    (comfy / "main.py").touch()
    python = sar.venv_python(tmp_path / "venv")
    python.parent.mkdir(parents=True)
    python.touch()
    monkeypatch.setenv("COMFYUI_DIR", str(comfy))
    args = sar.parse_args(["--image", "i.png", "--audio", "a.wav"])
    run = Recorder()
    assert sar.resolve_comfyui(args, run=run) == (comfy.resolve(), str(python))
    assert run.calls == []  # nothing installed


# ------------------------------------------------------------------------------------------ the pack


def test_pack_is_linked_and_its_requirements_installed(tmp_path, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    run = Recorder()
    target = sar.install_pack(comfy, "/venv/bin/python", run=run)
    assert target == comfy / "custom_nodes" / "comfyui-dicetalk"
    assert target.is_symlink() and target.resolve() == ROOT
    assert run.calls[0][0] == ["/venv/bin/python", "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.txt")]
    assert sar.install_pack(comfy, "/venv/bin/python", run=run) == target  # again: fine

    target.unlink()
    target.mkdir()
    with pytest.raises(sar.SetupError, match="already exists and is not this checkout"):
        sar.install_pack(comfy, "/venv/bin/python", run=run)
    target.rmdir()

    def refuse(self, *args, **kwargs):
        raise OSError("symlinks not allowed")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    copied = sar.install_pack(comfy, "/venv/bin/python", run=run)
    assert not copied.is_symlink() and (copied / "nodes" / "__init__.py").is_file()
    assert (copied / "scripts" / "setup_and_run.py").is_file() and not (copied / ".git").exists()
    (copied / "stale.txt").touch()
    sar.install_pack(comfy, "/venv/bin/python", run=run)  # a copy of an earlier run is refreshed
    assert not (copied / "stale.txt").exists()

    with pytest.raises(sar.SetupError, match="the pack's requirements"):
        sar.install_pack(comfy, "/venv/bin/python", run=Recorder(returncode=1))


# ------------------------------------------------------------------------------------------ workflow

CORE_OUTPUTS = {"LoadImage": ("IMAGE", "MASK"), "LoadAudio": ("AUDIO",), "CreateVideo": ("VIDEO",), "SaveVideo": ()}
CORE_INPUTS = {
    "LoadImage": {"image": "COMBO"},
    "LoadAudio": {"audio": "COMBO"},
    "CreateVideo": {"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO"},
    "SaveVideo": {"video": "VIDEO", "filename_prefix": "STRING", "format": "COMBO", "codec": "COMBO"},
}


def _pack_node_specs() -> dict[str, tuple[dict[str, str], set[str], tuple[str, ...]]]:
    """class id -> (input name -> type, required input names, RETURN_TYPES), read from nodes/*.py."""
    init = ast.parse((ROOT / "nodes" / "__init__.py").read_text())
    mapping = next(
        node.value for node in init.body if isinstance(node, ast.Assign) and node.targets[0].id == "NODE_CLASS_MAPPINGS"
    )
    ids = {key.value: value.id for key, value in zip(mapping.keys, mapping.values, strict=True)}
    classes = {}
    for path in (ROOT / "nodes").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = node
    specs = {}
    for node_id, class_name in ids.items():
        cls = classes[class_name]
        returns = next(
            tuple(e.value for e in item.value.elts)
            for item in cls.body
            if isinstance(item, ast.Assign) and item.targets[0].id == "RETURN_TYPES"
        )
        func = next(item for item in cls.body if isinstance(item, ast.FunctionDef) and item.name == "INPUT_TYPES")
        spec = next(n.value for n in ast.walk(func) if isinstance(n, ast.Return))
        inputs, required = {}, set()
        for section, group in zip(spec.keys, spec.values, strict=True):
            if section.value not in ("required", "optional") or not isinstance(group, ast.Dict):
                continue  # e.g. inputs made by a comprehension: none of them are in the basic workflow
            for key, value in zip(group.keys, group.values, strict=True):
                first = value.elts[0] if isinstance(value, ast.Tuple) else None
                inputs[key.value] = first.value if isinstance(first, ast.Constant) else "COMBO"
                if section.value == "required":
                    required.add(key.value)
        specs[node_id] = (inputs, required, returns)
    return specs


def test_workflow_is_wired_to_the_pack_nodes_inputs_and_outputs():
    specs = _pack_node_specs()
    assert set(sar.PACK_NODES) <= set(specs)
    workflow = sar.build_workflow("face.png", "speech.wav", "happy", steps=3, resolution=128, seed=5, intensity=0.5)
    classes = {node_id: node["class_type"] for node_id, node in workflow.items()}
    assert set(classes.values()) == set(sar.PACK_NODES) | set(CORE_OUTPUTS)
    for node in workflow.values():
        kind = node["class_type"]
        inputs, required = (specs[kind][0], specs[kind][1]) if kind in specs else (CORE_INPUTS[kind], set())
        assert required <= set(node["inputs"]), f"{kind} misses {required - set(node['inputs'])}"
        for name, value in node["inputs"].items():
            assert name in inputs, f"{kind} has no input '{name}'"
            if isinstance(value, list):
                source, index = value
                source_kind = classes[source]
                outputs = specs[source_kind][2] if source_kind in specs else CORE_OUTPUTS[source_kind]
                assert outputs[index] == inputs[name], f"{kind}.{name} <- {source_kind}[{index}]"
    assert workflow["7"]["inputs"]["steps"] == 3 and workflow["7"]["inputs"]["resolution"] == 128
    assert workflow["7"]["inputs"]["seed"] == 5 and workflow["5"]["inputs"]["preset"] == "happy"
    assert workflow["5"]["inputs"]["intensity"] == 0.5
    assert workflow[sar.SAVE_NODE]["inputs"]["format"] == "mp4"


def test_inputs_are_staged_under_content_names(tmp_path):
    a, b = tmp_path / "Face.PNG", tmp_path / "other" / "Face.PNG"
    b.parent.mkdir()
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    input_dir = tmp_path / "input"
    name_a, name_b = sar.stage_input(a, input_dir), sar.stage_input(b, input_dir)
    assert name_a != name_b and name_a.endswith(".png") and name_a == sar.stage_input(a, input_dir)
    assert (input_dir / name_a).read_bytes() == b"one" and (input_dir / name_b).read_bytes() == b"two"


# ---------------------------------------------------------------------------------- the server client

FAKE_COMFY = textwrap.dedent(
    '''
    """A stand-in for ComfyUI's main.py: the few routes the setup script uses."""
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    MODE = os.environ["FAKE_COMFY_MODE"]
    if MODE == "crash":
        print("Traceback: ImportError: no module named torch")
        sys.exit(3)
    if MODE == "silent":
        import time
        print("loading forever", flush=True)
        time.sleep(120)
    port = int(sys.argv[sys.argv.index("--port") + 1])
    ERROR = {"node_id": "7", "node_type": "DICESampler", "exception_type": "InputError",
             "exception_message": "No face found in the portrait.", "traceback": ["line 1\\n"]}
    VIDEO = {"filename": "basic_00001_.mp4", "subfolder": "dicetalk", "type": "output"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body, kind="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/system_stats":
                self.reply(200, {"system": {}})
            elif self.path.startswith("/object_info/"):
                name = self.path.rsplit("/", 1)[1]
                self.reply(200, {} if MODE == "no_nodes" else {name: {}})
            elif self.path == "/history/p1":
                if MODE == "error":
                    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False,
                             "messages": [["execution_start", {}], ["execution_error", ERROR]]}}
                else:
                    entry = {"outputs": {"10": {"images": [VIDEO], "animated": [True]}},
                             "status": {"status_str": "success", "completed": True, "messages": []}}
                self.reply(200, {"p1": entry})
            elif self.path.startswith("/view?") and "basic_00001_.mp4" in self.path and "=dicetalk" in self.path:
                self.reply(200, b"MP4DATA", "video/mp4")
            else:
                self.reply(404, {})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if MODE == "rejected":
                self.reply(400, {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {
                    "5": {"class_type": "DICEEmotionPreset", "errors": [
                        {"message": "Value not in list", "details": "preset: 'joy' not in ['happy']"}]}}})
            else:
                self.reply(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})

    print("Starting server", flush=True)
    try:
        ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    except KeyboardInterrupt:
        pass
    '''
)


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    comfy = tmp_path / "FakeComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_COMFY)

    def start(mode: str) -> sar.ComfyServer:
        monkeypatch.setenv("FAKE_COMFY_MODE", mode)
        server = sar.ComfyServer(comfy, sys.executable, cpu=True, ready_timeout=30, log_path=tmp_path / f"{mode}.log")
        server.start()
        return server

    return start


def test_server_success_error_and_rejection(fake_comfy, tmp_path):
    workflow = sar.build_workflow("i.png", "a.wav", "happy")
    server = fake_comfy("ok")
    try:
        assert "--cpu" in server.command() and server.command()[1:3] == ["main.py", "--listen"]
        server.check_nodes(sar.PACK_NODES)
        out = sar.run_prompt(server, workflow, tmp_path / "out" / "video.mp4", timeout=30)
        assert out.read_bytes() == b"MP4DATA"
    finally:
        server.stop()
    assert server.proc is None

    server = fake_comfy("error")
    with pytest.raises(sar.SetupError) as err:
        sar.run_prompt(server, workflow, tmp_path / "x.mp4", timeout=30)
    server.stop()
    assert err.value.code == 6
    assert str(err.value) == "ComfyUI failed in node 7 (DICESampler): InputError: No face found in the portrait."

    server = fake_comfy("rejected")
    with pytest.raises(sar.SetupError) as err:
        sar.run_prompt(server, workflow, tmp_path / "x.mp4", timeout=30)
    server.stop()
    assert err.value.code == 5 and "preset: 'joy' not in ['happy']" in str(err.value)
    assert "node 5 (DICEEmotionPreset)" in str(err.value)

    server = fake_comfy("no_nodes")
    with pytest.raises(sar.SetupError) as err:
        server.check_nodes(sar.PACK_NODES)
    server.stop()
    assert err.value.code == 4 and "DICESampler" in str(err.value)


def _ws_frame(opcode: int, payload: bytes, final: bool = True) -> bytes:
    head = bytes([(0x80 if final else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + len(payload).to_bytes(2, "big") + payload


def test_progress_events_are_read_from_websocket_frames(capsys):
    import json

    listener = sar.ProgressListener(0, "client", {"7": "DICESampler"})
    started = json.dumps({"type": "executing", "data": {"node": "7", "prompt_id": "p1"}}).encode()
    progress = json.dumps({"type": "progress", "data": {"value": 3, "max": 4, "node": "7", "prompt_id": "p1"}})
    other = json.dumps({"type": "progress", "data": {"value": 1, "max": 9, "node": "2", "prompt_id": "other"}})
    long_text = json.dumps({"type": "status", "data": {"status": {"pad": "x" * 300}}}).encode()
    listener._buffer = b"".join(
        [
            _ws_frame(1, started[:10], final=False),  # one message in two fragments
            _ws_frame(0, started[10:]),
            _ws_frame(2, b"\x00\x01binary preview"),  # ignored
            _ws_frame(1, long_text),  # 16-bit length
            _ws_frame(1, other.encode()),  # another prompt: ignored
            _ws_frame(1, progress.encode()),
            _ws_frame(8, b""),
        ]
    )
    listener.set_prompt("p1")
    listener.run()
    assert [e["type"] for e in listener.events] == ["executing", "progress"]
    err = capsys.readouterr().err
    assert "node 7: DICESampler" in err and "3/4" in err and "1/9" not in err


def test_a_server_that_dies_shows_its_log(fake_comfy):
    with pytest.raises(sar.SetupError) as err:
        fake_comfy("crash")
    assert err.value.code == 3 and "exited (code 3)" in str(err.value)
    assert "no module named torch" in str(err.value)


def test_a_server_that_never_answers_is_stopped(tmp_path, monkeypatch):
    comfy = tmp_path / "Slow"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_COMFY)
    monkeypatch.setenv("FAKE_COMFY_MODE", "silent")
    started = []

    class Recording(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(sar.subprocess, "Popen", Recording)
    with pytest.raises(sar.SetupError) as err, sar.ComfyServer(comfy, sys.executable, ready_timeout=1.5):
        pass
    assert err.value.code == 3 and "did not answer within 2 s" in str(err.value)
    assert "loading forever" in str(err.value)
    assert len(started) == 1 and started[0].poll() is not None  # not left running


# ---------------------------------------------------------------------------------------- end to end


def _harness() -> tuple[Path, str]:
    given = os.environ.get("COMFYUI_DIR")
    if not given or not (Path(given) / "main.py").is_file():
        pytest.skip("COMFYUI_DIR is not set to a ComfyUI folder: the end-to-end run of the setup script is skipped")
    comfy = Path(given)
    python = os.environ.get("COMFYUI_PYTHON") or sar.find_comfy_python(comfy)
    check = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--no-index", "-r", str(ROOT / "requirements.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        pytest.skip(f"{python} lacks the pack's requirements; the test does not install into that venv")
    return comfy, python


def test_end_to_end_with_the_tiny_models_on_cpu(tiny_models, tmp_path, capsys):
    comfy_src, python = _harness()
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (astronaut portrait) is not installed")
    soundfile = pytest.importorskip("soundfile")
    from PIL import Image

    from dicetalk_core.video_io import read_video_info

    # a private copy of the ComfyUI sources: the pack link, weights, inputs and outputs stay out of COMFYUI_DIR
    comfy = tmp_path / "ComfyUI"
    skip = {"custom_nodes", "models", "input", "output", "user", "temp", ".git"}
    shutil.copytree(
        comfy_src, comfy, ignore=lambda folder, names: skip & set(names) if folder == str(comfy_src) else []
    )
    image, audio = tmp_path / "portrait.png", tmp_path / "speech.wav"
    Image.fromarray(skimage_data.astronaut()).resize((256, 256), Image.LANCZOS).save(image)
    rate, seconds = 16000, 1.5
    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(audio, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2), rate)
    out = tmp_path / "result" / "talking.mp4"

    code = sar.main(
        [
            "--image", str(image), "--audio", str(audio), "--emotion", "happy", "--out", str(out),
            "--comfyui", str(comfy), "--python", python, "--models-source", str(tiny_models),
            "--cpu", "--steps", "2", "--resolution", "64", "--timeout", "600", "--ready-timeout", "300",
            "--server-log", str(tmp_path / "comfyui.log"),
        ]
    )  # fmt: skip
    log = tmp_path / "comfyui.log"
    assert code == 0, log.read_text()[-3000:] if log.is_file() else "failed before ComfyUI started: see the log above"
    err = capsys.readouterr().err  # progress followed over ComfyUI's websocket
    assert re.search(r"node 7: DICESampler\n(?:\s+\d+/\d+\n)*?\s+(\d+)/\1\n", err), err  # ... up to N/N
    assert (comfy / "custom_nodes" / "comfyui-dicetalk").resolve() == ROOT
    assert (comfy / "models" / "dice_talk" / "unet.pth").is_file()
    info = read_video_info(out)
    generated = int(seconds * rate) // 640 // 2  # 25 audio frames per second, every other one generated
    assert info.n_frames == 2 * generated - 1  # RIFE x2
    assert math.isclose(info.fps, 25.0)
    assert info.audio_duration is not None and abs(info.audio_duration - info.n_frames / 25.0) < 0.05
