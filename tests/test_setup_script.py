"""``scripts/setup_and_run.py`` and ``scripts/workflow_api.py``, with nothing from the internet.

* Weights from a local folder (the DICE-Talk layout and the official ``checkpoints/`` one, copied or hard-linked)
  in-process; the huggingface_hub downloads by running the script against a local server that answers like the
  Hub (``HF_ENDPOINT``): resume of a broken download, skipping what is there, the token, gated and missing files.
* The comfy-cli install commands, the pack link with its requirements installed by a real pip into a venv.
* The HTTP client against a stand-in ComfyUI ``main.py``: every exit code.
* With ``COMFYUI_DIR`` (the harness of ``../shared/comfyui``): every example workflow converted with the real
  server's ``/object_info`` equals its API twin in ``tests/comfy/workflows/`` (which the browser tests check
  against the frontend's own conversion), and the whole command makes an mp4 on the CPU with the tiny models.
"""

from __future__ import annotations

import copy
import filecmp
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from dicetalk_core import model_files as mf
from dicetalk_core.defaults import SEED

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup_and_run.py"
EXAMPLES = ROOT / "example_workflows"
TWINS = ROOT / "tests" / "comfy" / "workflows"


def _load_script():
    spec = importlib.util.spec_from_file_location("setup_and_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


sar = _load_script()
workflow_api = sar.workflow_api


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    from dicetalk_core.random_models import write_models_folder

    return write_models_folder(tmp_path_factory.mktemp("tiny") / "dice_talk")


def _random_bytes(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _fake_weights(folder: Path, names: list[str]) -> dict[str, bytes]:
    written = {}
    for i, name in enumerate(names):
        written[name] = _random_bytes(i, 1000 + 37 * i)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(written[name])
    return written


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------ weights: a local folder


def test_weights_from_the_tiny_models_folder_then_skipped(tiny_models, tmp_path):
    dest = tmp_path / "ComfyUI" / "models" / "dice_talk"
    placed = sar.ensure_weights(dest, tiny_models)

    svd = mf.SVD_FOLDER
    assert "emo_model.safetensors" in placed  # the .safetensors sibling of emo_model.pth
    assert f"{svd}/vae/diffusion_pytorch_model.safetensors" in placed  # the non-fp16 alternative
    presets_there = {"emotions/happy.npy", "emotions/neutral.npy"}
    assert len(placed) == len(mf.MANIFEST) - len(mf.PRESETS) + len(presets_there)
    for name in placed:
        assert filecmp.cmp(dest / name, tiny_models / name, shallow=False), name
    assert not (dest / svd / "unet" / "diffusion_pytorch_model.safetensors").exists()  # the UNet comes from unet.pth
    assert "all required files found" in mf.format_report(mf.weight_files(dest))

    before = _state(dest)
    assert sar.ensure_weights(dest, tiny_models) == []
    assert _state(dest) == before  # nothing written again


def test_a_wrong_size_file_is_replaced_and_missing_required_files_are_named(tmp_path):
    source = tmp_path / "source"
    written = _fake_weights(source, [entry.path for entry in mf.MANIFEST])
    dest = tmp_path / "dest"
    sar.ensure_weights(dest, source)
    (dest / "unet.pth").write_bytes(b"truncated")
    assert sar.ensure_weights(dest, source) == ["unet.pth"]
    assert (dest / "unet.pth").read_bytes() == written["unet.pth"]

    (source / "pose_guider.pth").unlink()
    (source / "whisper-tiny" / "config.json").unlink()
    with pytest.raises(sar.SetupError) as err:
        sar.ensure_weights(tmp_path / "fresh", source)
    assert err.value.code == 1
    assert "pose_guider.pth" in str(err.value) and "whisper-tiny/config.json" in str(err.value)
    assert str(source) in str(err.value) and str(tmp_path / "fresh") in str(err.value)

    with pytest.raises(sar.SetupError, match="no such folder"):
        sar.ensure_weights(tmp_path / "dest", tmp_path / "nowhere")


def test_the_official_checkpoints_layout_with_a_safetensors_sibling_hard_linked(tmp_path):
    source = tmp_path / "checkpoints"
    names = [entry.official_path or entry.path for entry in mf.MANIFEST]
    names[names.index("DICE-Talk/emo_model.pth")] = "DICE-Talk/emo_model.safetensors"
    written = _fake_weights(source, names)
    dest = tmp_path / "dest"
    placed = sar.ensure_weights(dest, source, link=True)
    assert len(placed) == len(mf.MANIFEST) and "emo_model.safetensors" in placed
    assert (dest / "unet.pth").read_bytes() == written["DICE-Talk/unet.pth"]
    assert (dest / "unet.pth").samefile(source / "DICE-Talk" / "unet.pth")  # a hard link, no copy
    assert (dest / "emo_model.safetensors").samefile(source / "DICE-Talk" / "emo_model.safetensors")
    assert (dest / "RIFE" / "flownet.pkl").samefile(source / "RIFE" / "flownet.pkl")
    assert not (dest / "emo_model.pth").exists()


# ------------------------------------------------------------------------------------ weights: the Hub


class FakeHub:
    """Answers ``/{repo}/resolve/{revision}/{path}`` like the Hub (HEAD and ranged GET, its error headers), and
    any other path from ``root`` as a plain file server; records each request."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: Path) -> None:
        self.root, self.requests = root, []
        self.gated: dict[str, str] = {}  # repo -> the token it accepts
        self.missing: set[str] = set()
        self.drop: dict[str, int] = {}  # file -> how many more GETs of it break after half of it
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def fail(self, code: int, error_code: str) -> None:
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def answer(self, body: bool) -> None:
                path = self.path.split("?")[0].lstrip("/")
                headers = self.headers
                outer.requests.append((self.command, path, headers.get("Range"), headers.get("Authorization")))
                repo, _, rest = path.partition("/resolve/")
                name = rest.partition("/")[2] if rest else path
                file = outer.root / (f"{repo}/{name}" if rest else path)
                token = outer.gated.get(repo)
                if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                    return self.fail(401, "GatedRepo")
                if f"{repo}/{name}" in outer.missing or not file.is_file():
                    return self.fail(404, "EntryNotFound")
                data = file.read_bytes()
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", outer.COMMIT)
                self.end_headers()
                if body:
                    breaks = outer.drop.get(f"{repo}/{name}", 0) > 0
                    outer.drop[f"{repo}/{name}"] = outer.drop.get(f"{repo}/{name}", 0) - 1
                    self.wfile.write(data[start : (start + len(data)) // 2 if breaks else len(data)])
                    self.close_connection = breaks

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def gets(self) -> list[tuple[str, str | None]]:
        return [(path, ranged) for method, path, ranged, _ in self.requests if method == "GET"]


@pytest.fixture
def hub(tmp_path):
    server = FakeHub(tmp_path / "hub")
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _publish(hub: FakeHub) -> dict[str, bytes]:
    """Random files at every Hub source of the manifest; returns them by their path in the DICE-Talk folder."""
    hub_files = [entry for entry in mf.MANIFEST if entry.source.host == "huggingface"]
    written = {}
    for i, entry in enumerate(hub_files):
        written[entry.path] = _random_bytes(100 + i, 3000 + 1000 * i)
        target = hub.root / entry.source.repo / entry.source.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(written[entry.path])
    return written


def _fake_comfyui(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text("raise SystemExit('not run by these tests')\n")
    return folder


def _setup_only(comfy: Path, hub: FakeHub, *extra: str, python: str = sys.executable, steps_3_4_only: bool = True,
                token: str | None = "hf_secret") -> subprocess.CompletedProcess:  # fmt: skip
    """The script with ``--setup-only`` against ``hub`` (by default only its weights step, as ComfyUI's Python runs
    it), with no terminal to ask on."""
    image = comfy.parent / "face.png"
    image.write_bytes(b"png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(comfy.parent / "hf_home"), PYTHONUNBUFFERED="1")
    if token:
        env["HF_TOKEN"] = token
    argv = [python, str(SCRIPT), "--image", str(image), "--audio", str(image), "--setup-only", "--comfyui", str(comfy)]
    argv += ["--python", python, *(["--in-comfyui-python"] if steps_3_4_only else []), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)


def _with_presets(models: Path) -> None:
    """The emotion presets already in place: they come from GitHub, which these tests do not reach."""
    for entry in mf.PRESETS:
        (models / entry.path).parent.mkdir(parents=True, exist_ok=True)
        (models / entry.path).write_bytes(b"p" * mf.PRESET_BYTES)


def test_hub_downloads_retry_broken_connections_and_a_stopped_run_goes_on_where_it_stopped(hub, tmp_path):
    written = _publish(hub)
    hub.gated[mf.SVD_HF_REPO] = "hf_secret"
    whisper = f"{mf.WHISPER_HF_REPO}/{mf.WHISPER_WEIGHTS}"
    hub.drop[whisper] = 1000  # every answer breaks: huggingface_hub's own retries give up
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    models = comfy / "models" / "dice_talk"
    _with_presets(models)

    stopped = _setup_only(comfy, hub, "--accept-license")
    assert stopped.returncode == 1, stopped.stderr
    assert f"Downloading whisper-tiny/{mf.WHISPER_WEIGHTS} failed" in stopped.stderr
    assert "the Hub could not be reached or failed" in stopped.stderr and "run the same command again" in stopped.stderr
    assert "CC BY-NC-SA 4.0" in stopped.stderr and "non-commercial" in stopped.stderr  # the licence is shown
    before = [entry.path for entry in mf.MANIFEST[: mf.MANIFEST.index(mf.WHISPER_WEIGHTS_FILES[2])]]
    assert all((models / name).read_bytes() == written[name] for name in before if name in written)
    assert not (models / "whisper-tiny" / mf.WHISPER_WEIGHTS).exists()  # never a partial file in place

    hub.drop[whisper] = 1  # one broken connection, which huggingface_hub retries
    hub.requests.clear()
    done = _setup_only(comfy, hub, "--accept-license")
    assert done.returncode == 0, done.stderr
    fetched = {path.split("/resolve/main/")[1] for path, _ in hub.gets() if "/resolve/" in path}
    assert fetched == {entry.source.path for entry in (*mf.WHISPER_WEIGHTS_FILES[2:], *mf.SVD_FOLDER_FILES)}
    assert [path for path, _ in hub.gets()].count(f"{mf.WHISPER_HF_REPO}/resolve/main/{mf.WHISPER_WEIGHTS}") == 2
    for name, data in written.items():
        assert (models / name).read_bytes() == data, name
    assert all(auth == "Bearer hf_secret" for _, path, _, auth in hub.requests if path.startswith(mf.SVD_HF_REPO))
    assert not (models / ".download").exists()
    assert "all required files found" in mf.format_report(mf.weight_files(models))

    state = _state(models)
    hub.requests.clear()
    again = _setup_only(comfy, hub)  # no --accept-license: nothing left to download, so nothing to accept
    assert again.returncode == 0, again.stderr
    assert hub.requests == [] and _state(models) == state


def test_hub_errors_say_what_to_do(hub, tmp_path):
    _publish(hub)
    hub.gated[mf.SVD_HF_REPO] = "hf_secret"
    hub.missing.add(f"{mf.WHISPER_HF_REPO}/{mf.WHISPER_WEIGHTS}")
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    _with_presets(comfy / "models" / "dice_talk")
    missing = _setup_only(comfy, hub, "--accept-license")
    assert missing.returncode == 1
    assert f"{mf.WHISPER_WEIGHTS} is not in {mf.WHISPER_HF_REPO} at main" in missing.stderr
    assert "--models-source" in missing.stderr

    hub.missing.clear()
    gated = _setup_only(comfy, hub, "--accept-license", token=None)  # goes on to SVD-xt, without a token
    assert gated.returncode == 1
    assert f"Downloading {mf.SVD_FOLDER_FILES[0].path} failed" in gated.stderr
    assert f"open https://huggingface.co/{mf.SVD_HF_REPO} while logged in" in gated.stderr
    assert "accept its licence" in gated.stderr and "export HF_TOKEN" in gated.stderr


def test_downloads_wait_for_the_licence(hub, tmp_path, monkeypatch):
    _publish(hub)
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    refused = _setup_only(comfy, hub)  # no terminal to ask on, no --accept-license
    assert refused.returncode == 1 and "--accept-license" in refused.stderr
    assert hub.requests == []

    monkeypatch.setattr(sys, "stdin", type("Terminal", (), {"isatty": lambda self: True})())
    sar.confirm_licence(False, ask=lambda question: "y")
    with pytest.raises(sar.SetupError, match="accept"):
        sar.confirm_licence(False, ask=lambda question: "n")
    sar.confirm_licence(True, ask=lambda question: pytest.fail("asked although accepted"))


def test_a_preset_is_kept_only_at_its_pinned_size(hub, tmp_path):
    preset = hub.root / "toto222" / "happy.npy"
    preset.parent.mkdir(parents=True)
    preset.write_bytes(b"x" * mf.PRESET_BYTES)
    dest = tmp_path / "emotions" / "happy.npy"
    sar.fetch_small(f"{hub.url}/toto222/happy.npy", dest, mf.PRESET_BYTES)
    assert dest.read_bytes() == preset.read_bytes()
    with pytest.raises(sar.SetupError, match=f"where {mf.PRESET_BYTES + 1} were expected"):
        sar.fetch_small(f"{hub.url}/toto222/happy.npy", tmp_path / "other.npy", mf.PRESET_BYTES + 1)
    assert not (tmp_path / "other.npy").exists()
    with pytest.raises(sar.SetupError, match="check the connection"):
        sar.fetch_small(f"{hub.url}/toto222/gone.npy", tmp_path / "gone.npy", mf.PRESET_BYTES)
    assert all(entry.size == mf.PRESET_BYTES and entry.source.host == "github" for entry in mf.PRESETS)
    assert all(mf.DICE_TALK_CODE_COMMIT in entry.source.url for entry in mf.PRESETS)


# ---------------------------------------------------------------------------------- ComfyUI and the pack


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> str:
    """A venv that sees this interpreter's packages (so pip finds the requirements met and installs nothing)."""
    folder = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    return str(sar.venv_python(folder))


def test_the_whole_setup_links_the_pack_and_runs_the_weights_step_with_comfyuis_python(hub, tmp_path, venv):
    written = _publish(hub)
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    _with_presets(comfy / "models" / "dice_talk")
    done = _setup_only(comfy, hub, "--accept-license", python=venv, steps_3_4_only=False)
    assert done.returncode == 0, done.stderr
    link = comfy / "custom_nodes" / "comfyui-dicetalk"
    assert link.is_symlink() and link.resolve() == ROOT
    assert f"{venv} -m pip install -q -r {ROOT / 'requirements.txt'}" in done.stderr
    assert all((comfy / "models" / "dice_talk" / name).read_bytes() == data for name, data in written.items())

    link.unlink()
    link.mkdir()
    other = _setup_only(comfy, hub, python=venv, steps_3_4_only=False)
    assert other.returncode == 1 and "exists and is not this checkout" in other.stderr


def test_an_existing_comfyui_its_venv_and_bad_folders(tmp_path, monkeypatch):
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    python = sar.venv_python(tmp_path / "venv")
    python.parent.mkdir(parents=True)
    python.touch()
    monkeypatch.setenv("COMFYUI_DIR", str(comfy))
    assert sar.resolve_comfyui(sar.parse_args(["--image", "i", "--audio", "a"])) == (comfy.resolve(), str(python))
    args = sar.parse_args(["--image", "i", "--audio", "a", "--comfyui", str(tmp_path)])
    with pytest.raises(sar.SetupError, match="no ComfyUI there"):
        sar.resolve_comfyui(args)
    with pytest.raises(sar.SetupError, match="Could not run"):
        sar.install_pack(comfy, str(tmp_path / "no-python"))


def test_comfyui_is_installed_with_comfy_cli_once(tmp_path, monkeypatch):
    calls = []

    def run_checked(argv, what, env=None):
        """Records each command and leaves what the real one leaves."""
        calls.append((argv, env))
        if argv[1:3] == ["-m", "venv"]:
            sar.venv_python(Path(argv[3])).parent.mkdir(parents=True)
            sar.venv_python(Path(argv[3])).touch()
        elif "install" in argv and "comfy_cli" in argv:
            (tmp_path / "comfy" / "ComfyUI").mkdir(parents=True, exist_ok=True)
            (tmp_path / "comfy" / "ComfyUI" / "main.py").touch()

    monkeypatch.setattr(sar, "run_checked", run_checked)
    monkeypatch.setattr(sar.shutil, "which", lambda name: f"/usr/bin/{name}")
    root = tmp_path / "comfy"
    assert sar.install_comfyui(root, cpu=False) == (root / "ComfyUI", str(sar.venv_python(root / "venv")))
    cli = str(sar.venv_python(root / "comfy-cli"))
    assert [argv for argv, _ in calls] == [
        [sys.executable, "-m", "venv", str(root / "comfy-cli")],
        [sys.executable, "-m", "venv", str(root / "venv")],
        [cli, "-m", "pip", "install", "-q", sar.COMFY_CLI_SPEC],
        [cli, "-m", "comfy_cli", f"--workspace={root / 'ComfyUI'}", "--skip-prompt", "--no-enable-telemetry",
         "install", "--nvidia", "--version=latest", "--skip-manager"],
    ]  # fmt: skip
    assert calls[-1][1] == {"VIRTUAL_ENV": str(root / "venv"), "DO_NOT_TRACK": "1"}

    calls.clear()
    sar.install_comfyui(root, cpu=False)
    assert calls == []  # done: nothing runs

    (root / sar.INSTALLED_MARKER).unlink()  # an install that stopped half way is finished with --restore
    sar.install_comfyui(root, cpu=True)
    assert calls[-1][0][-4:] == ["--cpu", "--version=latest", "--skip-manager", "--restore"]

    monkeypatch.setattr(sar.shutil, "which", lambda name: None)
    with pytest.raises(sar.SetupError, match="needs git"):
        sar.install_comfyui(tmp_path / "other", cpu=False)


# --------------------------------------------------------------------------- the server client (stand-in)

FAKE_COMFY = '''
"""A stand-in for ComfyUI's main.py: the routes the setup script uses, behaving as FAKE_COMFY_MODE says."""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ["FAKE_COMFY_MODE"]
if MODE == "crash":
    sys.exit("Traceback (most recent call last):\\nImportError: no module named torch")
if MODE == "silent":
    print("loading forever", flush=True)
    time.sleep(120)
if MODE == "no_nodes":
    print("Traceback (most recent call last):\\nModuleNotFoundError: No module named 'soxr'", flush=True)
    print("Cannot import /x/custom_nodes/comfyui-dicetalk module for custom nodes", flush=True)
port = int(sys.argv[sys.argv.index("--port") + 1])
ERROR = {"node_id": "7", "node_type": "DICESampler", "exception_type": "InputError",
         "exception_message": "No face found in the portrait.", "traceback": ["line 1"]}
VIDEO = {"filename": "basic_00001_.mp4", "subfolder": "dicetalk", "type": "output"}
interrupted = []

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
        elif self.path == "/object_info":
            self.reply(200, {"LoadImage": {}})
        elif self.path == "/history/p1":
            if MODE == "slow":
                return self.reply(200, {})
            status = {"status_str": "error" if MODE == "error" else "success", "messages": [
                ["execution_start", {}], *([["execution_error", ERROR]] if MODE == "error" else [])]}
            self.reply(200, {"p1": {"outputs": {"10": {"images": [VIDEO], "animated": [True]}}, "status": status}})
        elif self.path.startswith("/view?") and "basic_00001_.mp4" in self.path and "subfolder=dicetalk" in self.path:
            self.reply(200, b"MP4DATA", "video/mp4")
        else:
            self.reply(404, {})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/interrupt":
            print("interrupt received", flush=True)
            self.reply(200, {})
        elif MODE == "rejected":
            self.reply(400, {"error": {"message": "Prompt outputs failed validation"}, "node_errors": {
                "4": {"class_type": "DICEEmotionPreset", "errors": [
                    {"message": "Value not in list", "details": "preset: 'joy' not in ['happy']"}]}}})
        else:
            self.reply(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})

print("Starting server", flush=True)
try:
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
except KeyboardInterrupt:
    pass
'''


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    comfy = tmp_path / "FakeComfyUI"
    comfy.mkdir()
    (comfy / "main.py").write_text(FAKE_COMFY)

    def server(mode: str, ready_timeout: float = 30) -> sar.Server:
        monkeypatch.setenv("FAKE_COMFY_MODE", mode)
        return sar.Server(comfy, sys.executable, ["--cpu"], tmp_path / f"{mode}.log", ready_timeout)

    return server


def _args(*more: str):
    return sar.parse_args(["--image", "i.png", "--audio", "a.wav", *more])


def test_a_run_that_succeeds_and_runs_that_fail_with_their_exit_codes(fake_comfy, tmp_path):
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "i.png"}}}
    with fake_comfy("ok") as server:
        assert server.argv[1:] == ["main.py", "--listen", "127.0.0.1", "--port", str(server.port),
                                   "--disable-auto-launch", "--cpu"]  # fmt: skip
        assert sar.run_prompt(server, prompt, tmp_path / "out" / "video.mp4").read_bytes() == b"MP4DATA"
        proc = server.proc
    assert proc.poll() is not None  # stopped on leaving

    failures = {"error": 6, "rejected": 5, "slow": 7}
    for mode, code in failures.items():
        with fake_comfy(mode) as server, pytest.raises(sar.SetupError) as err:
            sar.run_prompt(server, prompt, tmp_path / "x.mp4", timeout=1.5)
        assert err.value.code == code, mode
        failures[mode] = str(err.value)
    assert failures["error"] == "ComfyUI failed in node 7 (DICESampler): InputError: No face found in the portrait."
    assert "node 4 (DICEEmotionPreset): Value not in list: preset: 'joy' not in ['happy']" in failures["rejected"]
    assert "did not finish within 2 s" in failures["slow"]
    assert "interrupt received" in (tmp_path / "slow.log").read_text()


def test_a_pack_that_did_not_load_shows_its_import_error(fake_comfy):
    with fake_comfy("no_nodes") as server, pytest.raises(sar.SetupError) as err:
        server.prompt_for(_args(), "i.png", "a.wav")
    assert err.value.code == 4 and "DICESampler" in str(err.value) and "the pack did not load" in str(err.value)
    assert "No module named 'soxr'" in str(err.value)


def test_a_server_that_dies_or_never_answers(fake_comfy):
    with pytest.raises(sar.SetupError) as err, fake_comfy("crash"):
        pass
    assert err.value.code == 3 and "exited (code 1)" in str(err.value) and "no module named torch" in str(err.value)

    server = fake_comfy("silent", ready_timeout=1.5)
    with pytest.raises(sar.SetupError) as err, server:
        pass
    assert err.value.code == 3 and "did not answer within 2 s" in str(err.value) and "loading forever" in str(err.value)
    assert server.proc.poll() is not None  # not left running


def test_bad_inputs_and_settings_exit_with_code_1(tmp_path, caplog):
    assert sar.main(["--image", str(tmp_path / "none.png"), "--audio", "a.wav"]) == 1
    assert f"--image {tmp_path / 'none.png'}: no such file" in caplog.text
    image = tmp_path / "i.png"
    image.touch()
    assert sar.main(["--image", str(image), "--audio", str(image), "--resolution", "100"]) == 1
    assert "a multiple of 64" in caplog.text


# ------------------------------------------------------------------- the real ComfyUI of the test harness


@pytest.fixture(scope="module")
def harness(tmp_path_factory, tiny_models):
    """A private copy of the harness's ComfyUI (so the pack link, weights, inputs and outputs stay out of
    ``COMFYUI_DIR``) with the tiny models set up by the script's own weights step, and its venv's Python."""
    sys.path.insert(0, str(ROOT / "tests" / "comfy"))
    from dicetalk_harness import harness_dest

    dest = harness_dest()
    comfy = tmp_path_factory.mktemp("harness") / "ComfyUI"
    skip = {"custom_nodes", "models", "input", "output", "user", "temp", ".git"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        return skip & set(names) if Path(folder) == dest / "ComfyUI" else set()

    shutil.copytree(dest / "ComfyUI", comfy, ignore=ignore)
    (comfy / "custom_nodes").mkdir()
    (comfy / "custom_nodes" / "comfyui-dicetalk").symlink_to(ROOT)
    sar.ensure_weights(comfy / "models" / "dice_talk", tiny_models)
    return comfy, str(dest / "venv" / "bin" / "python")


@pytest.fixture(scope="module")
def server(harness, tmp_path_factory):
    comfy, python = harness
    with sar.Server(comfy, python, ["--cpu"], tmp_path_factory.mktemp("log") / "comfyui.log") as server:
        yield server


@pytest.fixture(scope="module")
def object_info(server):
    return server.call("/object_info")


def test_every_example_converts_to_its_api_twin(object_info):
    twins = sorted(path.name.removesuffix("_api.json") for path in TWINS.glob("*_api.json"))
    assert twins, f"no API twin in {TWINS}"
    for name in twins:
        workflow = json.loads((EXAMPLES / f"{name}.json").read_text())
        assert workflow_api.to_api(workflow, object_info) == json.loads((TWINS / f"{name}_api.json").read_text()), name
    for path in EXAMPLES.glob("*.json"):  # the examples without a twin yet convert too, with every node
        workflow = json.loads(path.read_text())
        converted = workflow_api.to_api(workflow, object_info)
        kept = [n for n in workflow["nodes"] if n["type"] not in workflow_api.UI_ONLY]
        assert sorted(converted) == sorted(str(n["id"]) for n in kept), path.name


def test_reroutes_muted_nodes_and_unknown_nodes(object_info):
    workflow = json.loads((EXAMPLES / "basic.json").read_text())
    twin = json.loads((TWINS / "basic_api.json").read_text())
    (sampler,) = [node for node in workflow["nodes"] if node["type"] == "DICESampler"]
    image_input = next(entry for entry in sampler["inputs"] if entry["name"] == "image")
    link = next(link for link in workflow["links"] if link[0] == image_input["link"])
    reroute = {"id": 50, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 900}],
               "outputs": [{"name": "", "type": "IMAGE", "links": [link[0]]}]}  # fmt: skip
    muted = {"id": 51, "type": "PreviewAny", "mode": 2, "inputs": [{"name": "source", "type": "*", "link": 901}]}
    (encoder,) = copy.deepcopy([node for node in workflow["nodes"] if node["type"] == "DICEAudioEncoder"])
    encoder.update(id=52, mode=2)  # a muted encoder into the bank's optional audio_features: left out with it
    (bank,) = [node for node in workflow["nodes"] if node["type"] == "DICEEmotionBank"]
    next(entry for entry in bank["inputs"] if entry["name"] == "audio_features")["link"] = 902
    workflow["links"] += [[900, link[1], link[2], 50, 0, "IMAGE"], [901, 7, 0, 51, 0, "IMAGE"]]
    workflow["links"].append([902, 52, 0, bank["id"], 2, "DICE_AUDIO_FEATURES"])
    link[1:3] = [50, 0]
    workflow["nodes"] += [reroute, muted, encoder]
    assert workflow_api.to_api(workflow, object_info) == twin

    info = copy.deepcopy(object_info)
    del info["DICESampler"]
    with pytest.raises(workflow_api.WorkflowError, match="no node type 'DICESampler'"):
        workflow_api.to_api(workflow, info)
    sampler["widgets_values"].append(1)
    with pytest.raises(workflow_api.WorkflowError, match="11 widget values"):
        workflow_api.to_api(workflow, object_info)


def test_the_users_inputs_and_settings_go_into_the_basic_example(server):
    args = _args("--emotion", "happy", "--intensity", "0.5", "--steps", "3", "--resolution", "128", "--seed", "5")
    prompt = server.prompt_for(args, "face.png", "speech.wav")
    expected = json.loads((TWINS / "basic_api.json").read_text())
    for node in expected.values():
        node["inputs"].update(
            {"LoadImage": {"image": "face.png"}, "LoadAudio": {"audio": "speech.wav"},
             "DICEEmotionPreset": {"preset": "happy", "intensity": 0.5},
             "DICESampler": {"seed": 5, "steps": 3, "resolution": 128}}.get(node["class_type"], {})
        )  # fmt: skip
    assert prompt == expected
    assert sar.parse_args(["--image", "i", "--audio", "a"]).seed == SEED


def test_end_to_end_with_the_tiny_models_on_cpu(harness, tiny_models, tmp_path, capfd, monkeypatch):
    comfy, python = harness
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # OpenMP spin-waiting slows a shared 2-core machine many times
    sys.path.insert(0, str(ROOT / "tests" / "comfy"))
    from dicetalk_harness import GENERATED_FRAMES, write_portrait, write_speech

    from dicetalk_core.video_io import read_video_info

    image, audio = write_portrait(tmp_path / "portrait.png"), write_speech(tmp_path / "speech.wav")
    out = tmp_path / "result" / "talking.mp4"
    code = sar.main(
        ["--image", str(image), "--audio", str(audio), "--emotion", "happy", "--out", str(out), "--comfyui", str(comfy),
         "--python", python, "--models-source", str(tiny_models), "--cpu", "--steps", "2", "--resolution", "64",
         "--timeout", "600"]
    )  # fmt: skip
    err = capfd.readouterr().err
    assert code == 0, err[-3000:] + (comfy / "user" / "dicetalk-setup.log").read_text()[-3000:]
    assert "[3/4] Weights" in err and "0 placed now" in err  # the fixture placed them: skipped
    info = read_video_info(out)
    assert info.n_frames == 2 * GENERATED_FRAMES - 1  # RIFE x2
    assert math.isclose(info.fps, 25.0)
    assert info.audio_duration is not None and abs(info.audio_duration - info.n_frames / 25.0) < 0.05
    assert (comfy / "input" / "dicetalk_setup_portrait.png").read_bytes() == image.read_bytes()
