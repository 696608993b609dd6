#!/usr/bin/env python3
"""One command: ComfyUI, this node pack and the weights set up, then a talking-portrait video made headless.

    python scripts/setup_and_run.py --image face.png --audio speech.wav --emotion happy --out out.mp4

Steps, each skipped when done (the same command resumes): 1. ComfyUI, given or installed with comfy-cli; 2. this
pack linked into its ``custom_nodes``, requirements installed with ComfyUI's Python, which runs the rest (it has
huggingface_hub); 3. the weights of ``dicetalk_core/model_files.py``, from ``--models-source`` or downloaded;
4. ``example_workflows/basic.json`` converted with the server's ``/object_info`` and run through ComfyUI's HTTP API.
Exit codes: 1 setup error, 3 ComfyUI did not start, 4 the pack did not load, 5 workflow rejected, 6 a node
failed, 7 timeout, 130 interrupted. Standard library only up to step 3 (Python >= 3.10).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(Path(__file__).resolve().parent)]

import workflow_api  # noqa: E402

from dicetalk_core import defaults  # noqa: E402
from dicetalk_core import model_files as mf  # noqa: E402

LOG = logging.getLogger("dicetalk.setup")
COMFY_CLI_SPEC = "comfy-cli==1.23.0"  # the version whose `install` options were checked
INSTALLED_MARKER = ".dicetalk-comfyui-installed"
EXAMPLE = REPO_ROOT / "example_workflows" / "basic.json"
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never through a proxy


class SetupError(Exception):
    """A failure the user can act on; ``code`` becomes the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run_checked(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    LOG.info("  $ %s", " ".join(argv))
    try:
        done = subprocess.run(list(argv), env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})
    except OSError as err:
        raise SetupError(f"Could not run {argv[0]} for {what}: {err}") from err
    if done.returncode:
        raise SetupError(f"Installing {what} failed (exit code {done.returncode}); see the output above.")


def install_comfyui(install_dir: Path, cpu: bool) -> tuple[Path, str]:
    """ComfyUI installed with comfy-cli (in its own venv) into ``install_dir/ComfyUI``, or finished when an install
    stopped half way; its packages go into ``install_dir/venv``, which comfy-cli uses as ``VIRTUAL_ENV``."""
    comfy_dir, cli, venv = install_dir / "ComfyUI", install_dir / "comfy-cli", install_dir / "venv"
    if (install_dir / INSTALLED_MARKER).is_file():
        return comfy_dir, str(venv_python(venv))
    if shutil.which("git") is None:
        raise SetupError("comfy-cli needs git to install ComfyUI: install git, or pass --comfyui DIR.")
    for folder in (cli, venv):
        if not venv_python(folder).exists():
            run_checked([sys.executable, "-m", "venv", str(folder)], f"a venv in {folder}")
    run_checked([str(venv_python(cli)), "-m", "pip", "install", "-q", COMFY_CLI_SPEC], "comfy-cli")
    comfy = [str(venv_python(cli)), "-m", "comfy_cli", f"--workspace={comfy_dir}", "--skip-prompt"]
    install = ["--no-enable-telemetry", "install", "--cpu" if cpu else "--nvidia", "--version=latest", "--skip-manager"]
    env = {"VIRTUAL_ENV": str(venv), "DO_NOT_TRACK": "1"}  # comfy-cli installs into the venv it finds there
    run_checked([*comfy, *install, *["--restore"] * (comfy_dir / "main.py").is_file()], "ComfyUI with comfy-cli", env)
    (install_dir / INSTALLED_MARKER).write_text(COMFY_CLI_SPEC + "\n", encoding="utf-8")
    return comfy_dir, str(venv_python(venv))


def resolve_comfyui(args: argparse.Namespace) -> tuple[Path, str]:
    """ComfyUI's folder and Python: given (its Python: a venv in or beside it, else this one), or installed."""
    given = args.comfyui or os.environ.get("COMFYUI_DIR")
    if not given:
        comfy_dir, python = install_comfyui(Path(args.install_dir).expanduser().resolve(), args.cpu)
        return comfy_dir, args.python or python
    comfy_dir = Path(given).expanduser().resolve()
    if not (comfy_dir / "main.py").is_file():
        raise SetupError(f"{'--comfyui' if args.comfyui else 'COMFYUI_DIR'}={given}: no main.py, so no ComfyUI there.")
    venvs = [venv_python(folder / name) for folder in (comfy_dir, comfy_dir.parent) for name in (".venv", "venv")]
    return comfy_dir, args.python or next((str(path) for path in venvs if path.exists()), sys.executable)


def install_pack(comfy_dir: Path, python: str) -> Path:
    """This checkout linked as ``custom_nodes/comfyui-dicetalk`` (unless it is inside it), and its requirements."""
    custom_nodes = comfy_dir / "custom_nodes"
    target = REPO_ROOT if REPO_ROOT.parent == custom_nodes.resolve() else custom_nodes / "comfyui-dicetalk"
    if target.is_symlink() and not target.exists():
        target.unlink()  # a link to a checkout that is gone
    if target.exists() and target.resolve() != REPO_ROOT:
        raise SetupError(f"{target} exists and is not this checkout: remove it, or run the script in it.")
    if not target.exists():
        custom_nodes.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(REPO_ROOT, target_is_directory=True)
        except OSError as err:  # e.g. Windows without the right to make links
            raise SetupError(f"Cannot link {target} ({err}): clone the pack there and run its script.") from err
    LOG.info("[2/4] The pack: %s -> %s, its requirements with ComfyUI's Python %s", target, REPO_ROOT, python)
    run_checked([python, "-m", "pip", "install", "-q", "-r", str(REPO_ROOT / "requirements.txt")], "the requirements")
    return target


def confirm_licence(accepted: bool, ask=input) -> None:
    """Show the DICE-Talk licence; go on only when the user accepted it (the flag, or an answer on a terminal)."""
    LOG.info("%s", mf.LICENCE_NOTICE)
    question = "Do you accept the CC BY-NC-SA 4.0 licence of these files? [y/N] "
    if not accepted and not (sys.stdin and sys.stdin.isatty() and ask(question).strip().lower() in ("y", "yes")):
        raise SetupError("Accept the DICE-Talk weights' licence to download them: answer y, or add --accept-license.")


def place_local(src: Path, dest: Path, link: bool) -> None:
    """``src`` at ``dest``, hard-linked with ``link`` (when on the same disk) or copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    if link:
        with contextlib.suppress(OSError):  # another disk, or a file system without hard links: copied
            return os.link(src, dest)
    shutil.copyfile(src, dest)


def fetch_hub(entry: mf.WeightFile, models_dir: Path) -> None:
    """One file with huggingface_hub (which retries broken connections) into a staging folder, then into place."""
    from huggingface_hub import hf_hub_download, utils

    repo, staging = entry.source.repo, models_dir / ".download" / entry.source.repo
    try:
        got = hf_hub_download(repo, entry.source.path, revision=entry.source.revision, local_dir=staging)
    except Exception as err:  # huggingface_hub's HTTP, network and file errors
        why = "the Hub could not be reached or failed; check the connection (or HF_ENDPOINT)"
        absent = isinstance(err, (utils.EntryNotFoundError, utils.RevisionNotFoundError))
        if isinstance(err, utils.RepositoryNotFoundError):  # what gated or private repositories answer without login
            why = f"the Hub refused {repo}: it is gated; open https://huggingface.co/{repo} while logged in, accept "
            why += "its licence, create a read token (huggingface.co/settings/tokens), `export HF_TOKEN=<token>`"
        elif absent and not isinstance(err, utils.LocalEntryNotFoundError):  # that one is a network failure
            why = f"{entry.source.path} is not in {repo} at {entry.source.revision}; give it with --models-source"
        raise SetupError(f"Downloading {entry.path} failed: {why}, then run the same command again.\n({err})") from err
    (models_dir / entry.path).parent.mkdir(parents=True, exist_ok=True)
    os.replace(got, models_dir / entry.path)


def fetch_small(url: str, dest: Path, size: int) -> None:
    """A small file of known ``size`` (an emotion preset at a pinned commit) to ``dest``, kept when it has that size."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read(size + 1)
    except OSError as err:
        raise SetupError(f"Downloading {url} failed ({err}); check the connection and run again.") from err
    if len(data) != size:
        raise SetupError(f"{url} sent {len(data)} bytes where {size} were expected; run the same command again.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def ensure_weights(models_dir: Path, source: Path | None, *, accept: bool = False, link: bool = False) -> list[str]:
    """Every manifest file into ``models_dir`` from ``source`` or its download location; returns what was placed."""
    if source is not None and not source.is_dir():
        raise SetupError(f"--models-source {source}: no such folder.")
    placed, missing, absent, licence_ok = [], [], [], False
    for entry in mf.MANIFEST:
        present = entry.find(models_dir)
        if source is not None:
            src, name = next(((source / s, n) for s, n in entry.forms() if (source / s).is_file()), (None, ""))
            if src is None and present is None:
                (missing if entry.required else absent).append(entry.path)
            elif src and (not present or (present.name == src.name and present.stat().st_size != src.stat().st_size)):
                place_local(src, models_dir / name, link)
                placed.append(name)
        elif present is None or (entry.size is not None and present.stat().st_size != entry.size):
            if entry.licence == mf.CC_BY_NC_SA and not licence_ok:
                confirm_licence(accept)
                licence_ok = True
            LOG.info("  %s (%s) from %s", entry.path, entry.approx_size or "size shown below", entry.source.url)
            if entry.source.host == "github":
                fetch_small(entry.source.url, models_dir / entry.path, entry.size)
            else:
                fetch_hub(entry, models_dir)
            placed.append(entry.path)
    shutil.rmtree(models_dir / ".download", ignore_errors=True)
    if missing:
        raise SetupError(f"Missing required weight files in {source} (or in {models_dir}):\n  " + "\n  ".join(missing))
    optional = ", ".join(absent) or "none"
    LOG.info("Weights ready in %s: %d placed now; optional, not in the source: %s", models_dir, len(placed), optional)
    return placed


class Server:
    """A headless ComfyUI on 127.0.0.1 in its own process session, used through its HTTP API."""

    def __init__(self, comfy_dir: Path, python: str, args: Sequence[str], log: Path, ready_timeout: float = 300):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.argv = [python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch"]
        self.argv, self.comfy_dir, self.log, self.ready_timeout = [*self.argv, *args], comfy_dir, log, ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        LOG.info("Starting ComfyUI: %s (log: %s)", " ".join(self.argv), self.log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1"}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.comfy_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=os.name != "nt",
            )  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                self.check_alive("before it was ready (no GPU? add --cpu)")
                try:
                    self.call("/system_stats", timeout=2)
                    return self
                except OSError:
                    time.sleep(0.5)
            raise SetupError(f"ComfyUI did not answer within {self.ready_timeout:.0f} s:\n{self.tail()}", 3)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)  # ComfyUI's clean stop
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])

    def check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise SetupError(f"ComfyUI exited (code {self.proc.returncode}) {when}:\n{self.tail()}", 3)

    def call(self, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """GET ``path``, or POST ``body`` as JSON, and return the JSON answer."""
        data, url = None if body is None else json.dumps(body).encode(), f"http://127.0.0.1:{self.port}{path}"
        with LOCAL.open(urllib.request.Request(url, data, {"Content-Type": "application/json"}), timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def prompt_for(self, args: argparse.Namespace, image: str, audio: str) -> dict[str, Any]:
        """The basic example as an API prompt for this server, with the user's inputs and settings."""
        workflow, info = json.loads(EXAMPLE.read_text(encoding="utf-8")), self.call("/object_info")
        missing = sorted({node["type"] for node in workflow["nodes"]} - set(info) - workflow_api.UI_ONLY)
        if missing:
            log = self.log.read_text(encoding="utf-8", errors="replace")
            error = log[max(0, log.rfind("Traceback")) :][:4000]  # the pack's import error, when there is one
            raise SetupError(f"ComfyUI has no {', '.join(missing)}: the pack did not load.\n{error}\n({self.log})", 4)
        prompt = workflow_api.to_api(workflow, info)
        settings = {"LoadImage": {"image": image}, "LoadAudio": {"audio": audio}}
        settings["DICEEmotionPreset"] = {"preset": args.emotion, "intensity": args.intensity}
        settings["DICESampler"] = {"seed": args.seed, "steps": args.steps, "resolution": args.resolution}
        for class_type, values in settings.items():
            nodes = [node for node in prompt.values() if node["class_type"] == class_type]
            if len(nodes) != 1:
                raise SetupError(f"{EXAMPLE} must hold one {class_type} node; it holds {len(nodes)}.")
            nodes[0]["inputs"].update(values)
        return prompt


def run_prompt(server: Server, prompt: dict[str, Any], out: Path, timeout: float = 0) -> Path:
    """Queue ``prompt``, poll its history until it has finished, and copy its mp4 to ``out``."""
    try:
        prompt_id = server.call("/prompt", {"prompt": prompt})["prompt_id"]
    except urllib.error.HTTPError as err:
        body = json.loads(err.read() or b"{}")
        lines = [str(body.get("error", {}).get("message", f"HTTP {err.code}"))]
        for node, info in body.get("node_errors", {}).items():
            lines += [f"  node {node} ({info['class_type']}): {e['message']}: {e['details']}" for e in info["errors"]]
        raise SetupError("ComfyUI rejected the workflow:\n" + "\n".join(lines), 5) from err
    LOG.info("Queued prompt %s; waiting for it (Ctrl-C stops the run and the server)", prompt_id)
    started = shown = time.monotonic()
    while (entry := server.call(f"/history/{prompt_id}").get(prompt_id)) is None:  # listed once it has finished
        server.check_alive("while running the workflow")
        if timeout and time.monotonic() - started > timeout:
            server.call("/interrupt", {})
            raise SetupError(f"The workflow did not finish within {timeout:.0f} s; it was interrupted.", 7)
        if time.monotonic() - shown >= 30:
            shown = time.monotonic()
            LOG.info("  running for %.0f s", shown - started)
        time.sleep(1.0)
    status = entry.get("status", {})
    if status.get("status_str", "success") != "success":
        error = dict(status.get("messages", [])).get("execution_error")
        if error is None:
            raise SetupError(f"The workflow stopped without an error message; see {server.log}.", 6)
        LOG.debug("ComfyUI traceback:\n%s", "".join(error.get("traceback") or []))
        where = f"node {error['node_id']} ({error['node_type']})"
        raise SetupError(f"ComfyUI failed in {where}: {error['exception_type']}: {error['exception_message']}", 6)
    outputs = entry.get("outputs", {})
    videos = [v for o in outputs.values() for k in ("images", "videos") for v in o.get(k, []) if ".mp4" in str(v)]
    if not videos:
        raise SetupError(f"The workflow finished without an mp4 (outputs: {json.dumps(outputs)[:500]}).", 6)
    query = urllib.parse.urlencode({key: videos[0].get(key, "") for key in ("filename", "subfolder", "type")})
    out.parent.mkdir(parents=True, exist_ok=True)
    with LOCAL.open(f"http://127.0.0.1:{server.port}/view?{query}", timeout=120) as response, open(out, "wb") as f:
        shutil.copyfileobj(response, f)
    LOG.info("Finished in %.0f s: %s (%.1f MB)", time.monotonic() - started, out, out.stat().st_size / 1e6)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Set up ComfyUI + comfyui-dicetalk + weights, then render a talking-portrait mp4 headless.",
        epilog=mf.LICENCE_NOTICE,
    )
    add, flag = parser.add_argument, {"action": "store_true"}
    add("--image", required=True, type=Path, help="The portrait (a face must be visible).")
    add("--audio", required=True, type=Path, help="The speech (wav, mp3, flac, ...).")
    add("--emotion", default="neutral", help=f"Preset: {', '.join(mf.OFFICIAL_PRESETS)} or a saved one (neutral).")
    add("--intensity", type=float, default=1.0, help="Emotion intensity: 0 neutral, 1 the preset (default), to 1.5.")
    add("--out", type=Path, help="Output mp4 (default: <image name>_<emotion>.mp4 here).")
    add("--comfyui", help="An existing ComfyUI folder (default: env COMFYUI_DIR; else one installed with comfy-cli).")
    add("--python", help="The Python ComfyUI runs with (default: its venv, found next to it).")
    add("--install-dir", default=str(Path.home() / "comfy"), help="Where comfy-cli installs ComfyUI (~/comfy).")
    add("--models-source", type=Path, help="Take the weights from this folder (models/dice_talk or checkpoints/).")
    add("--link", **flag, help="Hard-link the --models-source files instead of copying them.")
    add("--accept-license", **flag, help="Accept the CC BY-NC-SA 4.0 licence of the DICE-Talk weights.")
    add("--cpu", **flag, help="Run (and install) for the CPU: very slow, for testing.")
    add("--steps", type=int, default=defaults.STEPS, help=f"Denoising steps (official {defaults.STEPS}).")
    add("--resolution", type=int, default=defaults.RESOLUTION, help=f"Short side (official {defaults.RESOLUTION}).")
    add("--seed", type=int, default=defaults.SEED, help=f"Seed (official {defaults.SEED}).")
    add("--server-arg", action="append", default=[], help="Extra ComfyUI flag, e.g. --server-arg=--lowvram (repeat).")
    add("--timeout", type=float, default=0, help="Stop the run after this many seconds (0 = none).")
    add("--setup-only", **flag, help="Stop after the weights step.")
    add("-v", "--verbose", **flag, help="Debug output (e.g. ComfyUI tracebacks).")
    add("--in-comfyui-python", **flag, help=argparse.SUPPRESS)  # steps 3-4, run by the script with ComfyUI's Python
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, argv: Sequence[str]) -> int:
    for what, path in (("--image", args.image), ("--audio", args.audio)):
        if not path.is_file():
            raise SetupError(f"{what} {path}: no such file.")
    if args.steps < 1 or args.resolution <= 0 or args.resolution % defaults.RESOLUTION_MULTIPLE:
        raise SetupError(f"--steps must be >= 1 and --resolution a multiple of {defaults.RESOLUTION_MULTIPLE}.")
    if not args.in_comfyui_python:
        LOG.info("[1/4] ComfyUI")
        comfy_dir, python = resolve_comfyui(args)
        install_pack(comfy_dir, python)
        more = ["--comfyui", str(comfy_dir), "--python", python, "--in-comfyui-python"]
        return subprocess.run([python, str(Path(__file__).resolve()), *argv, *more]).returncode
    comfy_dir, python = Path(args.comfyui), args.python
    LOG.info("[3/4] Weights")
    ensure_weights(comfy_dir / "models" / "dice_talk", args.models_source, accept=args.accept_license, link=args.link)
    if args.setup_only:
        LOG.info("Set up; --setup-only given, so no video was made.")
        return 0
    LOG.info("[4/4] The video")
    out = (args.out or Path(f"{args.image.stem}_{args.emotion}.mp4")).resolve()
    names = [f"dicetalk_setup_{path.name}" for path in (args.image, args.audio)]  # never over a user's own file
    (comfy_dir / "input").mkdir(parents=True, exist_ok=True)
    for path, name in zip((args.image, args.audio), names, strict=True):
        shutil.copyfile(path, comfy_dir / "input" / name)
    log = comfy_dir / "user" / "dicetalk-setup.log"
    with Server(comfy_dir, python, ["--cpu"] * args.cpu + args.server_arg, log) as server:
        run_prompt(server, server.prompt_for(args, *names), out, args.timeout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not LOG.handlers:  # this script's messages as they are; the libraries keep their own handlers
        LOG.addHandler(logging.StreamHandler(sys.stderr))
    LOG.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return run_all(args, argv)
    except SetupError as err:
        LOG.error("ERROR: %s", err)
        return err.code
    except KeyboardInterrupt:
        LOG.error("Interrupted; what was finished is kept, and the same command goes on from there.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
