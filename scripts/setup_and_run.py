#!/usr/bin/env python3
"""One command: ComfyUI, this node pack and the weights set up, then a talking-portrait video made headless.

    python scripts/setup_and_run.py --image face.png --audio speech.wav --emotion happy --out out.mp4

Steps (each is skipped when already done, so running the same command again resumes where it stopped):

1. ComfyUI: the folder given with ``--comfyui`` or ``COMFYUI_DIR`` (it must hold ``main.py``); otherwise
   installed with comfy-cli into ``--install-dir`` (default ``~/comfy``), which then holds ``ComfyUI/``,
   ``venv/`` (ComfyUI's Python) and ``comfy-cli/`` (comfy-cli's own environment).
2. This pack: linked (copied where links are not allowed) into ``ComfyUI/custom_nodes/comfyui-dicetalk``,
   and its ``requirements.txt`` installed with ComfyUI's Python.
3. Weights into ``ComfyUI/models/dice_talk/`` (the manifest below lists every file, where it goes and where
   it comes from): downloaded with resumable ``.part`` files and sizes shown, or taken from
   ``--models-source`` (a local folder laid out like ``models/dice_talk`` or like the official ``checkpoints/``
   folder, or an http(s) URL base with that layout). Files already there with the right size are skipped.
4. Run: the image and the audio are copied into ``ComfyUI/input``, the basic workflow (API form, built below
   from the pack's node ids) is queued on a headless ComfyUI on 127.0.0.1, its progress shown, and the mp4
   (video + the speech) copied to ``--out``. The server is stopped at the end.

Licenses. The DICE-Talk weights (``EEEELY/DICE-Talk`` on Hugging Face) and the emotion presets
(``examples/emo`` of the official repository) are licensed **CC BY-NC-SA 4.0** by their authors
(non-commercial use, attribution, share-alike): the script downloads them only after you accept that license
(``--accept-license``, or answering the prompt). SVD-xt is a gated repository under the Stability AI Community
License: accept it on https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt while logged in,
then make a read token available (``HF_TOKEN=...`` or ``hf auth login``). Whisper-tiny is Apache-2.0.

Standard library only, so it runs before anything is installed (Python >= 3.10).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

LOG = logging.getLogger("dicetalk.setup")

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER = "comfyui-dicetalk"
COMFY_CLI_SPEC = "comfy-cli==1.23.0"  # the version whose `install` options were checked
DEFAULT_INSTALL_DIR = Path.home() / "comfy"
INSTALLED_MARKER = ".dicetalk-comfyui-installed"
MODELS_SUBDIR = Path("models") / "dice_talk"
PACK_NODES = (
    "DICEModelLoader",
    "DICEAudioEncoder",
    "DICEEmotionPreset",
    "DICEEmotionBank",
    "DICESampler",
    "DICEFrameInterpolation",
)
SVD_OPTION = "dice_talk/stable-video-diffusion-img2vid-xt"
OFFICIAL_SEED = 72589
SAVE_NODE = "10"
USER_AGENT = "comfyui-dicetalk-setup/0.1"
CHUNK = 1 << 20
RETRY_DELAY = 2.0  # seconds, times the attempt number


class SetupError(Exception):
    """A failure the user can act on; ``code`` becomes the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------------------- manifest

HF_URL = "https://huggingface.co/{repo}/resolve/main/{path}"
DICE_TALK_REPO = "EEEELY/DICE-Talk"  # what the official README downloads with `huggingface-cli download`
DICE_TALK_COMMIT = "a8a92b164a3f552414d06a463a2b2e8eeb92db0b"  # github.com/toto222/DICE-Talk, pinned
PRESET_URL = "https://raw.githubusercontent.com/toto222/DICE-Talk/{commit}/examples/emo/{name}.npy"
PRESET_BYTES = 1403  # every official preset file (npy header + pickled {'mu': (1, 256) float32})
SVD_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
WHISPER_REPO = "openai/whisper-tiny"
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
CC_BY_NC_SA = "CC BY-NC-SA 4.0"
SVD_LICENSE = "Stability AI Community License (gated repository)"
LICENSE_NOTICE = (
    "The DICE-Talk weights (huggingface.co/EEEELY/DICE-Talk) and emotion presets (github.com/toto222/DICE-Talk) "
    "are licensed CC BY-NC-SA 4.0 by their authors: non-commercial use only, with attribution, and derivatives "
    "under the same license (https://creativecommons.org/licenses/by-nc-sa/4.0/)."
)


@dataclass(frozen=True)
class WeightEntry:
    """One weight file: where it goes (under ``models/dice_talk``), where it comes from, its size."""

    target: str
    url: str
    license: str
    size: int | None = None  # exact bytes, only where the source is immutable (pinned commit)
    approx: str = ""  # shown before downloading; the exact size comes from the server
    required: bool = True
    alternatives: tuple[str, ...] = ()  # other accepted names, e.g. the .safetensors sibling
    official_path: str = ""  # its path in the official ``checkpoints/`` folder when that differs

    @property
    def names(self) -> tuple[str, ...]:
        return (self.target, *self.alternatives)


def _dice_talk(name: str) -> WeightEntry:
    stem = name.rsplit(".", 1)[0]
    return WeightEntry(
        name,
        HF_URL.format(repo=DICE_TALK_REPO, path=f"DICE-Talk/{name}"),
        CC_BY_NC_SA,
        alternatives=(f"{stem}.safetensors",),  # as dicetalk_core.loaders.dice_talk.find_weight_file accepts
        official_path=f"DICE-Talk/{name}",
    )


def _hub(repo: str, path: str, target: str, terms: str, approx: str, alternatives: tuple[str, ...] = ()) -> WeightEntry:
    return WeightEntry(target, HF_URL.format(repo=repo, path=path), terms, approx=approx, alternatives=alternatives)


def _svd(path: str, approx: str, alternative: str = "") -> WeightEntry:
    folder = "stable-video-diffusion-img2vid-xt"
    alternatives = (f"{folder}/{alternative}",) if alternative else ()
    return _hub(SVD_REPO, path, f"{folder}/{path}", SVD_LICENSE, approx, alternatives)


def _whisper(name: str, approx: str, alternative: str = "") -> WeightEntry:
    alternatives = (f"whisper-tiny/{alternative}",) if alternative else ()
    return _hub(WHISPER_REPO, name, f"whisper-tiny/{name}", "Apache-2.0", approx, alternatives)


MANIFEST: tuple[WeightEntry, ...] = (
    _dice_talk("unet.pth"),
    _dice_talk("audio_linear.pth"),
    _dice_talk("emo_model.pth"),
    _dice_talk("pose_guider.pth"),
    _hub(DICE_TALK_REPO, "RIFE/flownet.pkl", "RIFE/flownet.pkl", CC_BY_NC_SA, ""),
    *(
        WeightEntry(
            f"emotions/{name}.npy",
            PRESET_URL.format(commit=DICE_TALK_COMMIT, name=name),
            CC_BY_NC_SA,
            size=PRESET_BYTES,
            required=False,
        )
        for name in EMOTIONS
    ),
    _whisper("config.json", "2 kB"),
    _whisper("preprocessor_config.json", "185 kB"),
    _whisper("model.safetensors", "151 MB", "pytorch_model.bin"),
    _svd("vae/config.json", "607 B"),
    _svd("vae/diffusion_pytorch_model.fp16.safetensors", "196 MB", "vae/diffusion_pytorch_model.safetensors"),
    _svd("image_encoder/config.json", "685 B"),
    _svd("image_encoder/model.fp16.safetensors", "1.26 GB", "image_encoder/model.safetensors"),
    _svd("scheduler/scheduler_config.json", "1 kB"),
    _svd("unet/config.json", "1 kB"),  # only the config: the UNet weights come from DICE-Talk's unet.pth
)


# ------------------------------------------------------------------------------------------ small helpers


def format_size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_script(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / (f"{name}.exe" if os.name == "nt" else name)


def _is_url(spec: str) -> bool:
    return urllib.parse.urlsplit(spec).scheme in ("http", "https")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(text[-lines:])


class Progress:
    """One progress line: ``label: done / total (pct) rate``; redrawn in place on a terminal."""

    def __init__(self, label: str, total: int | None, done: int = 0, stream: TextIO | None = None) -> None:
        self.label, self.total, self.done = label, total, done
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start_done, self.start = done, time.monotonic()
        self.last = 0.0

    def _line(self) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = format_size((self.done - self.start_done) / elapsed)
        return f"  {self.label}: {format_size(self.done)} / {format_size(self.total)}{pct}  {rate}/s"

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= (0.5 if self.tty else 10.0):
            self.last = now
            self.stream.write(("\r" + self._line() + "\x1b[K") if self.tty else self._line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        self.stream.write(("\r" + self._line() + "\x1b[K\n") if self.tty else self._line() + "\n")
        self.stream.flush()


# ------------------------------------------------------------------------------------------- downloading


class NotFoundError(Exception):
    """HTTP 404: the caller may try another name."""


class _Retryable(Exception):
    """A network failure worth retrying (the .part file keeps what arrived)."""


def _hf_token() -> str | None:
    """The Hugging Face token of the user running this (env, or the file ``hf auth login`` writes)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var].strip()
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    token_file = Path(os.environ.get("HF_TOKEN_PATH") or home / "token")
    try:
        return token_file.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "huggingface.co" or host.endswith(".huggingface.co"):
        token = _hf_token()
        if token:
            # unredirected: the token goes to the hub only, never to the CDN it redirects to
            req.add_unredirected_header("Authorization", f"Bearer {token}")
    return req


def _open(req: urllib.request.Request, timeout: float = 60.0) -> http.client.HTTPResponse:
    host = urllib.parse.urlsplit(req.full_url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    else:
        opener = urllib.request.build_opener()
    return opener.open(req, timeout=timeout)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = int(span.split("-")[0]) if span != "*" else None
    return start, int(total) if total.isdigit() else None


def _http_failure(err: urllib.error.HTTPError, url: str, label: str) -> Exception:
    if err.code == 404:
        return NotFoundError(url)
    if err.code in (401, 403):
        host = urllib.parse.urlsplit(url).hostname or ""
        if "huggingface.co" in host:
            repo = "/".join(urllib.parse.urlsplit(url).path.strip("/").split("/")[:2])
            hint = (
                f"The repository may be gated or need a login: open https://huggingface.co/{repo} while logged in, "
                "accept its license / access conditions, create a read token (huggingface.co/settings/tokens) and "
                "set HF_TOKEN=<token> (or run `hf auth login`), then run this command again."
            )
        else:
            hint = "The server refused access; check the URL and your permissions."
        return SetupError(f"Access denied (HTTP {err.code}) downloading {label} from {url}. {hint}")
    if err.code == 429 or err.code >= 500:
        return _Retryable(f"HTTP {err.code} {err.reason}")
    return SetupError(f"Download of {label} failed: HTTP {err.code} {err.reason} ({url}).")


def _check_space(folder: Path, needed: int | None, label: str) -> None:
    if needed is None or needed <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SetupError(
            f"Not enough disk space for {label}: it needs {format_size(needed)} more, {folder} has "
            f"{format_size(free)} free. Free some space (or point ComfyUI at a bigger disk) and run again."
        )


def remote_size(url: str) -> int | None:
    """The file's size on the server (a 1-byte range request, which survives redirects), or None."""
    try:
        with _open(_request(url, {"Range": "bytes=0-0"}), timeout=30) as resp:
            if resp.status == 206:
                return _content_range(resp.headers.get("Content-Range"))[1]
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
    except (OSError, http.client.HTTPException, ValueError) as err:
        LOG.debug("size of %s not available: %s", url, err)
        return None


def _download_once(url: str, part: Path, label: str) -> int:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = _open(_request(url, headers))
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            total = _content_range(err.headers.get("Content-Range"))[1]
            if total == have:
                return have  # the .part is already complete
            LOG.info("  %s: the partial file does not match the server's; downloading from the start", label)
            part.unlink()
            return _download_once(url, part, label)
        raise _http_failure(err, url, label) from err
    with resp:
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                raise _Retryable(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
            LOG.info("  %s: resuming at %s", label, format_size(have))
        else:
            if have:
                LOG.info("  %s: the server does not resume; downloading from the start", label)
            have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        _check_space(part.parent, None if total is None else total - have, label)
        progress = Progress(label, total, have)
        with open(part, mode) as out:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                progress.update(len(chunk))
        progress.finish()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retryable(f"connection closed after {format_size(size)} of {format_size(total)}")
    return size


def download(url: str, dest: Path, label: str, expected: int | None = None, attempts: int = 3) -> int:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed with an HTTP Range when present)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            size = _download_once(url, part, label)
            break
        except (_Retryable, urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            if attempt == attempts:
                kept = f" The partial download is kept in {part}." if part.exists() else ""
                raise SetupError(
                    f"Network error downloading {label} from {url}: {reason}.{kept} Run the same command again to "
                    "resume."
                ) from err
            LOG.warning("  %s: %s; retrying (%d/%d)", label, reason, attempt + 1, attempts)
            time.sleep(RETRY_DELAY * attempt)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise SetupError(
                    f"Disk full while writing {part}. Free some space and run the same command again to resume."
                ) from err
            raise
    if expected is not None and size != expected:
        part.unlink()
        raise SetupError(f"{label}: downloaded {size} bytes but {expected} were expected ({url}); try again.")
    os.replace(part, dest)
    return size


# ------------------------------------------------------------------------------------------ weights step


@dataclass
class WeightsReport:
    placed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)


def _present(models_dir: Path, entry: WeightEntry) -> Path | None:
    for name in entry.names:
        if (models_dir / name).is_file():
            return models_dir / name
    return None


def _find_local(source: Path, entry: WeightEntry) -> tuple[Path, str] | None:
    """(file in ``source``, its name under models/dice_talk) for the first accepted name found."""
    for name in entry.names:
        if (source / name).is_file():
            return source / name, name
    if entry.official_path:
        official = Path(entry.official_path)
        for candidate in (official, official.with_suffix(".safetensors")):
            if (source / candidate).is_file():
                return source / candidate, str(Path(entry.target).with_suffix(candidate.suffix).as_posix())
    return None


def place_local(src: Path, dest: Path, link: bool = False) -> str:
    """Copy ``src`` to ``dest`` through ``dest.part``; with ``link``, hard-link it when on the same disk."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    if link:
        try:
            os.link(src, dest)
            return "linked"
        except OSError as err:
            LOG.debug("cannot hard-link %s (%s): copying", src, err)
    _check_space(dest.parent, src.stat().st_size, dest.name)
    part = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(src, part)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise SetupError(f"Disk full while copying {src} to {dest}. Free some space and run again.") from err
        raise
    os.replace(part, dest)
    return "copied"


def _sources(entry: WeightEntry, base: str | None) -> list[tuple[str, str]]:
    """(url, name under models/dice_talk) to try, in order."""
    if base is None:
        return [(entry.url, entry.target)]
    root = base.rstrip("/") + "/"
    return [(root + urllib.parse.quote(name), name) for name in entry.names]


def confirm_license(accepted: bool, ask: Callable[[str], str] = input) -> None:
    """Print the DICE-Talk license notice; go on only when the user accepted it."""
    LOG.info("%s", LICENSE_NOTICE)
    if accepted:
        LOG.info("License accepted with --accept-license.")
        return
    if sys.stdin is not None and sys.stdin.isatty():
        if ask("Do you accept the CC BY-NC-SA 4.0 license of these files? [y/N] ").strip().lower() in ("y", "yes"):
            return
        raise SetupError("License not accepted: the DICE-Talk weights were not downloaded.")
    raise SetupError("Downloading the DICE-Talk weights needs your acceptance of their license: add --accept-license.")


def ensure_weights(
    models_dir: Path,
    source: str | None = None,
    *,
    entries: Sequence[WeightEntry] = MANIFEST,
    accept_license: bool = False,
    link: bool = False,
) -> WeightsReport:
    """Put every manifest file into ``models_dir``: from ``source`` (folder or URL base) or the official URLs."""
    local = None if source is None or _is_url(source) else Path(source).expanduser()
    if local is not None and not local.is_dir():
        raise SetupError(f"--models-source {source}: no such folder (give a folder or an http(s) URL base).")
    models_dir.mkdir(parents=True, exist_ok=True)
    where = source or "the official download locations"
    LOG.info("Weights: %d files into %s, from %s", len(entries), models_dir, where)
    report = WeightsReport()
    missing: list[str] = []
    license_ok = False
    for entry in entries:
        present = _present(models_dir, entry)
        if local is not None:
            found = _find_local(local, entry)
            if found is None:
                if present is not None:
                    report.skipped.append(entry.target)
                    LOG.info("  present  %s", entry.target)
                elif entry.required:
                    missing.append(f"{entry.target} (not in {local})")
                else:
                    report.missing_optional.append(entry.target)
                continue
            src, name = found
            size = src.stat().st_size
            if present is not None and (present.name != Path(name).name or present.stat().st_size == size):
                report.skipped.append(entry.target)
                LOG.info("  present  %s (%s)", present.relative_to(models_dir).as_posix(), format_size(size))
                continue
            how = place_local(src, models_dir / name, link)
            report.placed.append(name)
            LOG.info("  %s   %s (%s) from %s", how, name, format_size(size), src)
            continue

        candidates = _sources(entry, None if local is not None else source)
        if present is not None:
            if present.name != Path(entry.target).name:
                expected = None  # another accepted form (e.g. .safetensors): nothing to compare with
            else:
                expected = entry.size if source is None and entry.size else remote_size(candidates[0][0])
            have = present.stat().st_size
            if expected is None or have == expected:
                report.skipped.append(entry.target)
                checked = "" if expected is not None else ", size not checked"
                LOG.info("  present  %s (%s%s)", entry.target, format_size(have), checked)
                continue
            LOG.info("  %s has %d bytes, the source %d: fetching it again", entry.target, have, expected)
        if entry.license == CC_BY_NC_SA and not license_ok:
            confirm_license(accept_license)
            license_ok = True
        for url, name in candidates:
            LOG.info(
                "  download %s (%s) from %s",
                name,
                format_size(entry.size) if entry.size else entry.approx or "size shown when it starts",
                url,
            )
            try:
                download(url, models_dir / name, name, expected=entry.size if source is None else None)
            except NotFoundError:
                LOG.debug("  not found: %s", url)
                continue
            report.placed.append(name)
            break
        else:
            urls = ", ".join(url for url, _ in candidates)
            if entry.required:
                missing.append(f"{entry.target} (HTTP 404 at {urls})")
            else:
                report.missing_optional.append(entry.target)
    if report.missing_optional:
        LOG.warning("Optional files not found (skipped): %s", ", ".join(report.missing_optional))
    if missing:
        raise SetupError(
            "Missing required weight files; put them into " + str(models_dir) + ":\n  " + "\n  ".join(missing)
        )
    LOG.info("Weights ready: %d placed, %d already present.", len(report.placed), len(report.skipped))
    return report


def check_emotion(models_dir: Path, emotion: str) -> None:
    folder = models_dir / "emotions"
    if any((folder / f"{emotion}{suffix}").is_file() for suffix in (".npy", ".safetensors")):
        return
    names = (
        sorted({p.stem for p in folder.glob("*") if p.suffix in (".npy", ".safetensors")}) if folder.is_dir() else []
    )
    raise SetupError(f"Emotion preset '{emotion}' not found in {folder}. Available: {', '.join(names) or 'none'}.")


# ---------------------------------------------------------------------------------------- ComfyUI step

Runner = Callable[..., Any]


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    what: str = ""


def comfy_cli_commands(
    install_dir: Path, *, cpu: bool, restore: bool, base_python: str = sys.executable
) -> list[Command]:
    """The commands that install ComfyUI with comfy-cli into ``install_dir/ComfyUI``.

    comfy-cli gets its own venv (it pulls uv, ruff, gitpython...); ComfyUI's packages go into
    ``install_dir/venv``, which comfy-cli picks because ``VIRTUAL_ENV`` points at it.
    """
    cli_venv, comfy_venv = install_dir / "comfy-cli", install_dir / "venv"
    commands = []
    if not venv_script(cli_venv, "comfy").exists():
        if not venv_python(cli_venv).exists():
            commands.append(Command([base_python, "-m", "venv", str(cli_venv)], what="a venv for comfy-cli"))
        commands.append(Command([str(venv_python(cli_venv)), "-m", "pip", "install", COMFY_CLI_SPEC], what="comfy-cli"))
    if not venv_python(comfy_venv).exists():
        commands.append(Command([base_python, "-m", "venv", str(comfy_venv)], what="ComfyUI's venv"))
    install = [
        str(venv_script(cli_venv, "comfy")),
        "--workspace",
        str(install_dir / "ComfyUI"),
        "--skip-prompt",
        "--no-enable-telemetry",
        "install",
        "--cpu" if cpu else "--nvidia",
        "--version",
        "latest",
        "--skip-manager",
    ]
    if restore:
        install.append("--restore")
    env = {"VIRTUAL_ENV": str(comfy_venv), "DO_NOT_TRACK": "1"}
    commands.append(Command(install, env, "ComfyUI (latest release) with comfy-cli"))
    return commands


def _run(command: Command, run: Runner) -> None:
    LOG.info("  $ %s", " ".join(command.argv))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **command.env}
    try:
        result = run(command.argv, env=env, check=False)
    except OSError as err:
        raise SetupError(f"Could not run {command.argv[0]}: {err}") from err
    if result.returncode != 0:
        what = command.what or command.argv[0]
        raise SetupError(f"Installing {what} failed (exit code {result.returncode}); see the output above.")


def install_comfyui(install_dir: Path, *, cpu: bool, run: Runner = subprocess.run) -> tuple[Path, str]:
    """ComfyUI in ``install_dir/ComfyUI`` (installed when missing, finished when a previous install stopped)."""
    comfy_dir, marker = install_dir / "ComfyUI", install_dir / INSTALLED_MARKER
    python = venv_python(install_dir / "venv")
    if marker.is_file() and (comfy_dir / "main.py").is_file() and python.exists():
        LOG.info("ComfyUI: %s (installed by an earlier run)", comfy_dir)
        return comfy_dir, str(python)
    restore = (comfy_dir / "main.py").is_file()
    if comfy_dir.exists() and not restore:
        raise SetupError(f"{comfy_dir} exists but holds no ComfyUI (no main.py): remove it or choose --install-dir.")
    if shutil.which("git") is None:
        raise SetupError("comfy-cli needs git to install ComfyUI: install git, or pass --comfyui DIR.")
    LOG.info("ComfyUI: %s it into %s with comfy-cli", "finishing" if restore else "installing", comfy_dir)
    install_dir.mkdir(parents=True, exist_ok=True)
    for command in comfy_cli_commands(install_dir, cpu=cpu, restore=restore):
        _run(command, run)
    if not (comfy_dir / "main.py").is_file() or not python.exists():
        raise SetupError(f"comfy-cli finished but {comfy_dir / 'main.py'} or {python} is missing; see its output.")
    marker.write_text(COMFY_CLI_SPEC + "\n", encoding="utf-8")
    return comfy_dir, str(python)


def find_comfy_python(comfy_dir: Path) -> str:
    """ComfyUI's interpreter: a venv inside or beside the folder, the active venv/conda env, else this Python."""
    for folder in (comfy_dir, comfy_dir.parent):
        for name in (".venv", "venv"):
            if venv_python(folder / name).exists():
                return str(venv_python(folder / name))
    portable = comfy_dir.parent / "python_embeded" / "python.exe"  # Windows portable build
    if portable.exists():
        return str(portable)
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if os.environ.get(var) and venv_python(Path(os.environ[var])).exists():
            return str(venv_python(Path(os.environ[var])))
    LOG.warning("No venv found for %s: using %s (pass --python if ComfyUI uses another).", comfy_dir, sys.executable)
    return sys.executable


def resolve_comfyui(args: argparse.Namespace, run: Runner = subprocess.run) -> tuple[Path, str]:
    given = args.comfyui or os.environ.get("COMFYUI_DIR")
    if given:
        comfy_dir = Path(given).expanduser().resolve()
        if not (comfy_dir / "main.py").is_file():
            source = "--comfyui" if args.comfyui else "COMFYUI_DIR"
            raise SetupError(f"{source}={given}: no main.py there, so it is not a ComfyUI folder.")
        python = args.python or find_comfy_python(comfy_dir)
        LOG.info("ComfyUI: %s (Python: %s)", comfy_dir, python)
        return comfy_dir, python
    comfy_dir, python = install_comfyui(Path(args.install_dir).expanduser().resolve(), cpu=args.cpu, run=run)
    return comfy_dir, args.python or python


# ------------------------------------------------------------------------------------------- pack step


def install_pack(comfy_dir: Path, python: str, *, repo: Path = REPO_ROOT, run: Runner = subprocess.run) -> Path:
    """This checkout as ``custom_nodes/comfyui-dicetalk`` (symlink, or a copy) + its requirements."""
    custom_nodes = comfy_dir / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    repo = repo.resolve()
    if repo.parent == custom_nodes.resolve():
        target = repo  # already installed in place (git clone into custom_nodes, ComfyUI-Manager)
        LOG.info("Pack: %s (already in custom_nodes)", target)
    else:
        target = custom_nodes / PACK_FOLDER
        if target.is_symlink() and not target.exists():
            target.unlink()  # a link to a checkout that is gone
        if target.exists():
            if target.resolve() != repo and not (target / ".dicetalk-copy").is_file():
                raise SetupError(
                    f"{target} already exists and is not this checkout ({repo}). Remove it, or run the script "
                    f"from that copy: python {target / 'scripts' / 'setup_and_run.py'} ..."
                )
            if (target / ".dicetalk-copy").is_file():
                shutil.rmtree(target)  # a copy made by an earlier run: refresh it
        if not target.exists():
            try:
                target.symlink_to(repo, target_is_directory=True)
                LOG.info("Pack: linked %s -> %s", target, repo)
            except OSError as err:
                LOG.info("Pack: cannot link (%s); copying %s to %s", err, repo, target)
                ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
                shutil.copytree(repo, target, ignore=ignore)
                (target / ".dicetalk-copy").write_text("copied by scripts/setup_and_run.py\n", encoding="utf-8")
        else:
            LOG.info("Pack: %s -> %s", target, repo)
    requirements = repo / "requirements.txt"
    LOG.info("Pack: installing %s with %s", requirements, python)
    _run(Command([python, "-m", "pip", "install", "-q", "-r", str(requirements)], what="the pack's requirements"), run)
    return target


# ---------------------------------------------------------------------------------------- workflow step


def build_workflow(
    image: str,
    audio: str,
    emotion: str,
    *,
    intensity: float = 1.0,
    seed: int = OFFICIAL_SEED,
    steps: int = 25,
    resolution: int = 512,
    precision: str = "auto",
    prefix: str = "dicetalk/basic",
) -> dict[str, dict[str, Any]]:
    """The basic DICE-Talk graph in ComfyUI's API form: image + speech + emotion preset -> mp4 with sound."""

    def node(class_type: str, **inputs: Any) -> dict[str, Any]:
        return {"class_type": class_type, "inputs": inputs}

    return {
        "1": node("LoadImage", image=image),
        "2": node("LoadAudio", audio=audio),
        "3": node("DICEModelLoader", svd_model=SVD_OPTION, precision=precision),
        "4": node("DICEAudioEncoder", model=["3", 0], audio=["2", 0], duration=0.0),
        "5": node("DICEEmotionPreset", preset=emotion, intensity=intensity),
        "6": node("DICEEmotionBank", model=["3", 0], emotion=["5", 0], mode="full_bank"),
        "7": node(
            "DICESampler",
            model=["3", 0],
            image=["1", 0],
            audio_features=["4", 0],
            emotion_cond=["6", 0],
            seed=seed,
            steps=steps,
            ref_guidance=3.0,
            audio_guidance=6.0,
            motion_bucket_id=8,
            motion_bucket_id_exp=16,
            overlap=0,
            fps_condition=12.5,
            resolution=resolution,
        ),
        "8": node("DICEFrameInterpolation", frames=["7", 0], fps=["7", 2], audio=["7", 1]),
        "9": node("CreateVideo", images=["8", 0], fps=["8", 1], audio=["8", 2]),
        SAVE_NODE: node("SaveVideo", video=["9", 0], filename_prefix=prefix, format="mp4", codec="h264"),
    }


def stage_input(src: Path, input_dir: Path) -> str:
    """Copy ``src`` into ComfyUI's input folder under a content-hashed name (never overwrites other files)."""
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    name = f"dicetalk_{src.stem[:40]}_{digest}{src.suffix.lower()}"
    input_dir.mkdir(parents=True, exist_ok=True)
    if not (input_dir / name).is_file():
        shutil.copyfile(src, input_dir / name)
    return name


PROBE = (
    "import json, torch\n"
    "mps = getattr(torch.backends, 'mps', None)\n"
    "xpu = getattr(torch, 'xpu', None)\n"
    "cuda = torch.cuda.is_available()\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': cuda,\n"
    "    'gpu': torch.cuda.get_device_name(0) if cuda else None,\n"
    "    'mps': bool(mps and mps.is_available()), 'xpu': bool(xpu and xpu.is_available())}))\n"
)


def probe_accelerator(python: str) -> dict[str, Any]:
    """What ComfyUI's torch sees; a clear error when that interpreter cannot import torch."""
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SetupError(f"Could not run ComfyUI's Python {python}: {err}. Pass --python PATH.") from err
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise SetupError(
            f"ComfyUI's Python {python} cannot import torch:\n{tail}\n"
            "Pass --python with the interpreter ComfyUI runs with."
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A headless ComfyUI on 127.0.0.1 in its own process session, stopped on exit."""

    def __init__(
        self,
        comfy_dir: Path,
        python: str,
        *,
        cpu: bool = False,
        port: int = 0,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 300.0,
        log_path: Path | None = None,
    ) -> None:
        self.comfy_dir, self.python, self.cpu = comfy_dir, python, cpu
        self.port = port or _free_port()
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = log_path or Path(tempfile.gettempdir()) / "dicetalk-setup" / f"comfyui-{stamp}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch"]
        return cmd + (["--cpu"] if self.cpu else []) + self.extra_args

    def __enter__(self) -> ComfyServer:
        try:
            self.start()
        except BaseException:
            self.stop()  # e.g. it did not answer in time: do not leave it running
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        LOG.info("Starting ComfyUI: %s (log: %s)", " ".join(self.command()), self.log_path)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.comfy_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=os.name != "nt",
            )
        started = time.monotonic()
        while time.monotonic() - started < self.ready_timeout:
            self.check_alive("before it was ready")
            try:
                self.get("/system_stats", timeout=2)
                LOG.info("ComfyUI ready in %.0f s at %s", time.monotonic() - started, self.base)
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
        raise SetupError(
            f"ComfyUI did not answer within {self.ready_timeout:.0f} s. Last lines of {self.log_path}:\n"
            f"{_log_tail(self.log_path)}",
            code=3,
        )

    def check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise SetupError(
                f"ComfyUI exited (code {self.proc.returncode}) {when}. Last lines of {self.log_path}:\n"
                f"{_log_tail(self.log_path)}",
                code=3,
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        steps = ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0)) if os.name != "nt" else ((signal.SIGTERM, 5.0),)
        for sig, wait in steps:
            proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait(10)

    def get(self, path: str, timeout: float = 30) -> Any:
        with _open(urllib.request.Request(self.base + path), timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def post(self, path: str, body: dict[str, Any], timeout: float = 60) -> Any:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        with _open(req, timeout=timeout) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def check_nodes(self, names: Sequence[str]) -> None:
        missing = [name for name in names if name not in (self.get(f"/object_info/{name}") or {})]
        if not missing:
            return
        lines = _log_tail(self.log_path, 400).splitlines()
        errors = [i for i, line in enumerate(lines) if "Cannot import" in line and "custom nodes" in line]
        detail = "(no import error in the log)"
        if errors:
            detail = "\n".join(lines[max(0, errors[-1] - 25) : errors[-1] + 1])
        raise SetupError(
            f"ComfyUI started but the DICE-Talk nodes are missing ({', '.join(missing)}): the pack did not load.\n"
            f"{detail}\nFull log: {self.log_path}",
            code=4,
        )

    def download_output(self, item: dict[str, Any], out: Path) -> None:
        query = urllib.parse.urlencode(
            {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with _open(urllib.request.Request(f"{self.base}/view?{query}"), timeout=120) as resp, open(out, "wb") as f:
            shutil.copyfileobj(resp, f)


class ProgressListener(threading.Thread):
    """Follows ComfyUI's ``/ws`` for one prompt and prints node and step progress (best effort)."""

    def __init__(self, port: int, client_id: str, names: dict[str, str], stream: TextIO | None = None) -> None:
        super().__init__(daemon=True)
        self.port, self.client_id, self.names = port, client_id, names
        self.stream = stream or sys.stderr
        self.prompt_id: str | None = None
        self.sock: socket.socket | None = None
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._pending: list[dict[str, Any]] = []
        self._last = 0.0

    def connect(self) -> bool:
        key = base64.b64encode(os.urandom(16)).decode()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(
                (
                    f"GET /ws?clientId={self.client_id} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(1024)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                head += chunk
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            self._buffer = head.split(b"\r\n\r\n", 1)[1]
        except OSError as err:
            LOG.debug("no progress stream: %s", err)
            return False
        sock.settimeout(None)
        self.sock = sock
        return True

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536) if self.sock else b""
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else b""
        payload = self._read(length)
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return b0, payload

    def _pong(self, payload: bytes) -> None:
        mask = os.urandom(4)
        body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload[:125]))
        if self.sock:
            self.sock.sendall(bytes([0x8A, 0x80 | len(body)]) + mask + body)

    def run(self) -> None:
        message, text = b"", False
        try:
            while True:
                b0, payload = self._frame()
                opcode, final = b0 & 0x0F, bool(b0 & 0x80)
                if opcode == 8:
                    return
                if opcode == 9:
                    self._pong(payload)
                    continue
                if opcode in (1, 2):  # a new message: text (JSON events) or binary (previews, ignored)
                    message, text = b"", opcode == 1
                if opcode in (0, 1, 2) and text:
                    message += payload
                    if final:
                        self.handle(json.loads(message))
                        message = b""
        except (OSError, ValueError) as err:
            LOG.debug("progress stream ended: %s", err)

    def set_prompt(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        pending, self._pending = self._pending, []
        for event in pending:
            self.handle(event)

    def handle(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if not isinstance(data, dict) or "prompt_id" not in data:
            return
        if self.prompt_id is None:
            self._pending.append(event)
            return
        if data["prompt_id"] != self.prompt_id:
            return
        self.events.append(event)
        kind, node = event.get("type"), data.get("node")
        tty = self.stream.isatty()
        if kind == "executing" and node is not None:
            self.stream.write(f"{chr(10) if tty else ''}  node {node}: {self.names.get(str(node), '?')}\n")
        elif kind == "progress":
            value, total = data.get("value", 0), data.get("max", 0)
            now = time.monotonic()
            if tty:
                self.stream.write(f"\r    {value}/{total}\x1b[K")
            elif now - self._last >= 5 or value == total:
                self._last = now
                self.stream.write(f"    {value}/{total}\n")
        self.stream.flush()


def _execution_error(entry: dict[str, Any]) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            trace = "".join(data.get("traceback") or [])
            LOG.debug("ComfyUI traceback:\n%s", trace)
            return (
                f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
                f"{data.get('exception_type')}: {data.get('exception_message')}"
            )
        if kind == "execution_interrupted":
            return "The prompt was interrupted."
    return "ComfyUI reported an error without details; see its log."


def _rejected(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read() or b"{}")
    except ValueError:
        return f"HTTP {err.code} {err.reason}"
    lines = [str((body.get("error") or {}).get("message", ""))]
    for node_id, info in (body.get("node_errors") or {}).items():
        for problem in info.get("errors", []):
            message, details = problem.get("message"), problem.get("details")
            lines.append(f"  node {node_id} ({info.get('class_type')}): {message}: {details}")
    return "\n".join(line for line in lines if line)


def run_prompt(server: ComfyServer, workflow: dict[str, Any], out: Path, timeout: float = 0) -> Path:
    """Queue ``workflow``, follow it to the end, copy the SaveVideo mp4 to ``out``."""
    client_id = uuid.uuid4().hex
    names = {node_id: node["class_type"] for node_id, node in workflow.items()}
    listener = ProgressListener(server.port, client_id, names)
    if listener.connect():
        listener.start()
    try:
        try:
            queued = server.post("/prompt", {"prompt": workflow, "client_id": client_id})
        except urllib.error.HTTPError as err:
            raise SetupError(f"ComfyUI rejected the workflow:\n{_rejected(err)}", code=5) from err
        prompt_id = queued["prompt_id"]
        listener.set_prompt(prompt_id)
        LOG.info("Queued prompt %s; following it (Ctrl-C stops the run and the server)", prompt_id)
        started = time.monotonic()
        while True:
            server.check_alive("while running the workflow")
            entry = (server.get(f"/history/{prompt_id}") or {}).get(prompt_id)
            if entry is not None:  # a prompt enters the history when it has finished, well or not
                if entry.get("status", {}).get("status_str", "success") != "success":
                    raise SetupError(_execution_error(entry), code=6)
                break
            if timeout and time.monotonic() - started > timeout:
                server.post("/interrupt", {})
                raise SetupError(f"The workflow did not finish within {timeout:.0f} s; it was interrupted.", code=7)
            time.sleep(1.0)
    finally:
        listener.close()
    LOG.info("Finished in %.0f s", time.monotonic() - started)
    outputs = entry["outputs"]
    videos = [
        item
        for node_id in [SAVE_NODE, *outputs]
        for key in ("images", "videos", "gifs")
        for item in (outputs.get(node_id) or {}).get(key, [])
        if str(item.get("filename", "")).endswith(".mp4")
    ]
    if not videos:
        raise SetupError(f"The workflow finished without an mp4 output (outputs: {json.dumps(outputs)[:500]}).", code=6)
    server.download_output(videos[0], out)
    return out


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="setup_and_run.py",
        description="Set up ComfyUI + comfyui-dicetalk + weights, then render a talking-portrait mp4 headless.",
        epilog=LICENSE_NOTICE,
    )
    parser.add_argument("--image", required=True, type=Path, help="The portrait (a face must be visible).")
    parser.add_argument("--audio", required=True, type=Path, help="The speech (wav, mp3, flac, ...).")
    parser.add_argument("--emotion", default="neutral", help=f"Preset: {', '.join(EMOTIONS)} (default neutral).")
    parser.add_argument(
        "--intensity", type=float, default=1.0, help="Emotion intensity: 0 neutral, 1 the preset (default), to 1.5."
    )
    parser.add_argument("--out", type=Path, help="Output mp4 (default: <image name>_<emotion>.mp4 here).")
    parser.add_argument("--comfyui", help="An existing ComfyUI folder (default: env COMFYUI_DIR; else install one).")
    parser.add_argument("--python", help="The Python ComfyUI runs with (default: its venv, found next to it).")
    parser.add_argument(
        "--install-dir",
        default=str(DEFAULT_INSTALL_DIR),
        help="Where to install ComfyUI with comfy-cli when none is given (default ~/comfy).",
    )
    parser.add_argument(
        "--models-source",
        help="Take the weights from this folder (models/dice_talk or official checkpoints/ layout) or URL base "
        "instead of the official download locations.",
    )
    parser.add_argument(
        "--link", action="store_true", help="Hard-link the files of a local --models-source instead of copying them."
    )
    parser.add_argument("--accept-license", action="store_true", help="Accept the DICE-Talk CC BY-NC-SA 4.0 license.")
    parser.add_argument("--cpu", action="store_true", help="Run (and install) for the CPU: very slow, for testing.")
    parser.add_argument("--steps", type=int, default=25, help="Denoising steps (official 25).")
    parser.add_argument("--resolution", type=int, default=512, help="Short side of the video (official 512).")
    parser.add_argument("--seed", type=int, default=OFFICIAL_SEED, help=f"Seed (official {OFFICIAL_SEED}).")
    parser.add_argument("--port", type=int, default=0, help="Server port (default: a free one).")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="Extra ComfyUI flag, e.g. --server-arg=--lowvram (repeat)."
    )
    parser.add_argument("--timeout", type=float, default=0, help="Stop the run after this many seconds (0 = none).")
    parser.add_argument("--server-log", type=Path, help="ComfyUI's log file (default: in the temp folder).")
    parser.add_argument("--ready-timeout", type=float, default=300, help="Seconds to wait for ComfyUI to start.")
    parser.add_argument("--setup-only", action="store_true", help="Stop after the weights step.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug output (e.g. ComfyUI tracebacks).")
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, run: Runner = subprocess.run) -> Path | None:
    for what, path in (("--image", args.image), ("--audio", args.audio)):
        if not path.is_file():
            raise SetupError(f"{what} {path}: no such file.")
    if args.steps < 1 or args.resolution < 64 or args.resolution % 64:
        raise SetupError("--steps must be >= 1 and --resolution a multiple of 64 (>= 64).")
    out = (args.out or Path(f"{args.image.stem}_{args.emotion}.mp4")).resolve()

    LOG.info("[1/4] ComfyUI")
    comfy_dir, python = resolve_comfyui(args, run)
    LOG.info("[2/4] The DICE-Talk pack")
    install_pack(comfy_dir, python, run=run)
    LOG.info("[3/4] Weights")
    models_dir = comfy_dir / MODELS_SUBDIR
    ensure_weights(models_dir, args.models_source, accept_license=args.accept_license, link=args.link)
    check_emotion(models_dir, args.emotion)
    if args.setup_only:
        LOG.info("Set up; --setup-only given, so no video was made.")
        return None

    LOG.info("[4/4] Making the video")
    cpu = args.cpu
    if not cpu:
        found = probe_accelerator(python)
        if found.get("cuda") or found.get("mps") or found.get("xpu"):
            LOG.info("torch %s, GPU: %s", found.get("torch"), found.get("gpu") or "mps/xpu")
        else:
            LOG.warning("ComfyUI's torch %s sees no GPU: running on the CPU (--cpu), very slowly.", found.get("torch"))
            cpu = True
    input_dir = comfy_dir / "input"
    workflow = build_workflow(
        stage_input(args.image, input_dir),
        stage_input(args.audio, input_dir),
        args.emotion,
        intensity=args.intensity,
        seed=args.seed,
        steps=args.steps,
        resolution=args.resolution,
        prefix=f"dicetalk/setup_{time.strftime('%Y%m%d-%H%M%S')}",
    )
    with ComfyServer(
        comfy_dir,
        python,
        cpu=cpu,
        port=args.port,
        extra_args=args.server_arg,
        ready_timeout=args.ready_timeout,
        log_path=args.server_log,
    ) as server:
        server.check_nodes(PACK_NODES)
        run_prompt(server, workflow, out, timeout=args.timeout)
    LOG.info("Wrote %s (%s)", out, format_size(out.stat().st_size))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        run_all(args)
    except SetupError as err:
        LOG.error("ERROR: %s", err)
        return err.code
    except KeyboardInterrupt:
        LOG.error("Interrupted; partial downloads are kept and resume on the next run.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
