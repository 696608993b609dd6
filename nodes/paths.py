"""The pack's model folders in ComfyUI, and names from workflows resolved only inside them."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import folder_paths

from ..dicetalk_core.errors import CheckpointError, InputError
from ..dicetalk_core.model_files import EMOTIONS_FOLDER, WHISPER_FOLDER, accepted_names

DICE_TALK = "dice_talk"
SVD_PARTS = ("vae", "image_encoder")
NO_SVD = "(no SVD-xt found: see the README's weights table)"


def register_folders() -> None:
    """Register ``models/dice_talk`` (merged with any ``extra_model_paths.yaml`` entries for it)."""
    folder_paths.add_model_folder_path(DICE_TALK, os.path.join(folder_paths.models_dir, DICE_TALK))


def dice_talk_dirs() -> list[Path]:
    return [Path(p) for p in folder_paths.get_folder_paths(DICE_TALK)]


def primary_dir() -> Path:
    """Where the README tells users to put the files (first registered ``dice_talk`` folder)."""
    dirs = dice_talk_dirs()
    return dirs[0] if dirs else Path(folder_paths.models_dir) / DICE_TALK


def find_dice_talk_dir(required: str) -> Path:
    """The registered ``dice_talk`` folder that holds ``required`` (a file or folder name)."""
    for folder in dice_talk_dirs():
        if any((folder / name).exists() for name in accepted_names(required)):
            return folder
    raise CheckpointError(f"Missing DICE-Talk file '{required}': put it in {primary_dir().resolve()}.")


def whisper_dir() -> Path:
    return find_dice_talk_dir(WHISPER_FOLDER) / WHISPER_FOLDER


def _svd_folders() -> list[str]:
    options = []
    for kind in (DICE_TALK, "diffusers"):
        for root in folder_paths.get_folder_paths(kind):
            if not os.path.isdir(root):
                continue
            for entry in sorted(Path(root).iterdir()):
                if all((entry / part).is_dir() for part in SVD_PARTS):
                    options.append(f"{kind}/{entry.name}")
    return options


def svd_options() -> list[str]:
    """SVD-xt diffusers folders (in ``dice_talk`` or ``diffusers``) and ``checkpoints`` safetensors files."""
    files = [f"checkpoints/{n}" for n in folder_paths.get_filename_list("checkpoints") if n.endswith(".safetensors")]
    return _svd_folders() + files or [NO_SVD]


def resolve_svd(option: str) -> Path:
    """Path of an :func:`svd_options` entry; anything else (e.g. ``../``) is refused."""
    kind, _, name = option.partition("/")
    if kind == "checkpoints":
        path = folder_paths.get_full_path("checkpoints", name)
        if path is not None:
            return Path(path)
    elif option in _svd_folders():
        for root in folder_paths.get_folder_paths(kind):
            if (Path(root) / name).is_dir():
                return Path(root) / name
    raise InputError(
        f"SVD-xt model '{option}' not found. Put the stable-video-diffusion-img2vid-xt folder in "
        f"{primary_dir().resolve()} or models/diffusers, or svd_xt.safetensors in models/checkpoints."
    )


def loader_paths(svd_option: str) -> list[Path]:
    """Where DICE-Talk Model Loader reads from: the files of the ``dice_talk`` folders, whisper-tiny, the SVD-xt."""
    paths = []
    for folder in dice_talk_dirs():
        if folder.is_dir():
            paths += [entry for entry in folder.iterdir() if entry.is_file()]
            paths.append(folder / WHISPER_FOLDER)
    with contextlib.suppress(InputError):
        paths.append(resolve_svd(svd_option))
    return paths


def files_stamp(paths: Iterable[Path]) -> str:
    """A digest of the name, size and modification time of every file at or under ``paths``.

    It changes when a file is replaced, added or removed; paths that do not exist are skipped.
    """
    digest = hashlib.sha256()
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def preset_options() -> list[str]:
    """Emotion presets found in ``dice_talk/emotions`` (names without extension)."""
    names = set()
    for folder in dice_talk_dirs():
        emotions = folder / EMOTIONS_FOLDER
        if emotions.is_dir():
            names |= {p.stem for p in emotions.iterdir() if p.suffix in (".npy", ".safetensors")}
    return sorted(names) or ["(no presets: see README)"]


def preset_dirs() -> list[Path]:
    return [folder / EMOTIONS_FOLDER for folder in dice_talk_dirs()]
