"""Emotion presets: reading the official pickled ``.npy`` files without running code, and our safetensors.

An official preset (``examples/emo/<name>.npy``) is a NumPy object array holding a pickled dict
``{'mu': float32 (1, 256)}``: the mean emotion prior of many videos of that emotion. ``np.load`` told to
accept pickles would execute whatever a crafted file contains, so the pickle stream is read
here by an unpickler that admits only NumPy's array-reconstruction globals; anything else is refused
before it is built.

Emotions we save ourselves (:func:`save_emotion`) are small safetensors files:

* a fixed emotion: the tensor ``mu`` ``(1, D)`` (so :func:`load_emotion_prior` reads it like any preset);
* a changing one: ``track<i>.priors`` ``(K_i, D)`` per track, the keyframe times/easing in the metadata;
* metadata (strings): ``format`` = ``dicetalk-emotion``, ``format_version``, ``kind`` (``prior`` or
  ``timeline``), ``description``, ``tracks`` (JSON: weight and keyframes ``at``/``ease``/``over``/
  ``label`` per track), ``provenance`` (JSON: where it came from, e.g. the text, the preset files and
  their SHA-256) and ``created_by``.

:func:`load_emotion` reads any of them (and the official ``.npy``) back as an ``Emotion``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, InputError
from ..model_files import OFFICIAL_PRESETS
from .text import SLOT_PATTERN, reserved_words
from .timeline import EASINGS, Keyframe, Timeline, TimeMark
from .value import Emotion

PRIOR_KEY = "mu"
PRESET_SUFFIXES = (".npy", ".safetensors")
MAX_PRESET_BYTES = 1 << 20
FORMAT_NAME = "dicetalk-emotion"
FORMAT_VERSION = "1"
CREATED_BY = "comfyui-dicetalk"
SAVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")  # usable as a word in the emotion text

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): None,
    ("numpy._core.multiarray", "_reconstruct"): None,
}


def _reconstruct(cls: type, shape: tuple, dtype: bytes | str) -> np.ndarray:
    """What NumPy's ``_reconstruct`` does: an empty array to be filled by ``__setstate__``."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return np.ndarray.__new__(cls, shape, dtype)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays, dtypes, dicts, lists, strings and numbers, and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' from an emotion preset")
        if name == "_reconstruct":
            return _reconstruct
        return _ALLOWED_GLOBALS[(module, name)]


def _read_pickled_npy(path: Path) -> object:
    data = path.read_bytes()
    if len(data) > MAX_PRESET_BYTES:
        raise CheckpointError(f"{path} is {len(data)} bytes; an emotion preset is about 1.4 KB.")
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except ValueError as err:
        raise CheckpointError(f"{path} is not a NumPy .npy file ({err}).") from err
    if dtype != np.dtype(object):
        return np.frombuffer(stream.read(), dtype=dtype).reshape(shape)
    try:
        return _NumpyOnlyUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{path} was refused: it is not a plain emotion preset ({err}). Only files holding "
            "{'mu': float array (1, 256)} are accepted; nothing in the file was executed."
        ) from err


def _prior_from_object(obj: object, path: Path) -> np.ndarray:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, dict):
        if PRIOR_KEY not in obj:
            raise CheckpointError(f"{path} has no '{PRIOR_KEY}' entry (keys: {sorted(map(str, obj))}).")
        obj = obj[PRIOR_KEY]
    if not isinstance(obj, np.ndarray) or obj.dtype.kind != "f":
        raise CheckpointError(f"{path} does not hold a float emotion prior (found {type(obj).__name__}).")
    return obj


def validate_prior(prior: torch.Tensor, source: str, dim: int | None = None) -> torch.Tensor:
    """Flatten to ``(D,)`` float32 and check size and finiteness."""
    flat = prior.reshape(-1).to(torch.float32)
    fix = "Use an official preset (re-download it) or save the emotion again with DICE-Talk Save Emotion."
    if dim is not None and flat.numel() != dim:
        raise InputError(f"{source}: the emotion prior has {flat.numel()} values; the model expects {dim}. {fix}")
    if flat.numel() == 0 or not torch.isfinite(flat).all():
        raise InputError(f"{source}: the emotion prior is empty or holds NaN/Inf values. {fix}")
    return flat


def load_emotion_prior(path: str | Path, dim: int | None = 256) -> torch.Tensor:
    """Read a preset (official pickled ``.npy``, plain ``.npy``, or our ``.safetensors``) -> ``(dim,)`` float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Emotion preset not found: {path}")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
        if PRIOR_KEY not in tensors:
            if any(k.startswith("track") for k in tensors):
                raise InputError(
                    f"{path} is an emotion that changes over time, not a single prior; load it with "
                    "load_emotion (DICE-Talk Emotion Preset does)."
                )
            raise CheckpointError(f"{path} has no '{PRIOR_KEY}' tensor (keys: {sorted(tensors)}).")
        prior = tensors[PRIOR_KEY]
    elif path.suffix == ".npy":
        prior = torch.from_numpy(np.array(_prior_from_object(_read_pickled_npy(path), path)))
    else:
        raise CheckpointError(f"{path}: emotion presets are .npy or .safetensors files.")
    return validate_prior(prior, str(path), dim)


def save_emotion_prior(path: str | Path, prior: torch.Tensor) -> Path:
    """Save a prior as a small safetensors preset (``mu``: ``(1, D)`` float32) that loads everywhere."""
    path = Path(path).with_suffix(".safetensors")
    flat = validate_prior(prior, "save_emotion_prior")
    save_file({PRIOR_KEY: flat[None].contiguous()}, str(path))
    return path


def find_preset(name: str, folders: list[Path] | tuple[Path, ...]) -> Path:
    """The preset file called ``name`` (``happy``, ``happy.npy``, ...) in the first folder holding it.

    Only plain file names are accepted: a name with a path separator or ``..`` is refused, so a
    workflow cannot make us read outside the preset folders.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise InputError(f"'{name}' is not a preset name; give a plain name such as 'happy'.")
    candidates = [name] if name.endswith(PRESET_SUFFIXES) else [name + s for s in PRESET_SUFFIXES]
    for folder in folders:
        for candidate in candidates:
            if (Path(folder) / candidate).is_file():
                return Path(folder) / candidate
    where = ", ".join(str(Path(f).resolve()) for f in folders) or "(no folder given)"
    raise CheckpointError(
        f"Emotion preset '{name}' not found in {where}. Put the official presets there "
        f"({', '.join(p + '.npy' for p in OFFICIAL_PRESETS)}) from the DICE-Talk release (examples/emo/)."
    )


def file_record(path: Path) -> dict:
    """``{"file": name, "sha256": hex}`` of a preset file, for provenance."""
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _timeline_record(timeline: Timeline) -> list[dict]:
    return [
        {
            "at": None if k.at is None else str(k.at),
            "ease": k.ease,
            "over": None if k.over is None else str(k.over),
            "label": k.label,
        }
        for k in timeline.keyframes
    ]


def save_emotion(path: str | Path, emotion: Emotion, extra: dict | None = None) -> Path:
    """Save any emotion (fixed, mix, timeline) as a small safetensors preset with its provenance.

    The file lands at ``path`` with the suffix ``.safetensors``; see the module docstring for the layout.
    """
    path = Path(path).with_suffix(".safetensors")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "description": emotion.describe(),
        "provenance": json.dumps({**dict(emotion.provenance), **(extra or {})}, default=str),
        "created_by": CREATED_BY,
    }
    if emotion.is_static:
        prior = validate_prior(emotion.prior(), "save_emotion")
        metadata["kind"] = "prior"
        tensors = {PRIOR_KEY: prior[None].contiguous()}
    else:
        metadata["kind"] = "timeline"
        metadata["tracks"] = json.dumps([{"weight": w, "keyframes": _timeline_record(t)} for w, t in emotion.tracks])
        tensors = {
            f"track{i}.priors": torch.stack([validate_prior(k.prior, "save_emotion") for k in t.keyframes]).contiguous()
            for i, (_, t) in enumerate(emotion.tracks)
        }
    save_file(tensors, str(path), metadata=metadata)
    return path


def _read_timeline(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Emotion:
    try:
        tracks_meta = json.loads(metadata["tracks"])
        provenance = json.loads(metadata.get("provenance", "{}"))
        tracks = []
        for i, track in enumerate(tracks_meta):
            priors = tensors[f"track{i}.priors"]
            keys = track["keyframes"]
            if priors.ndim != 2 or priors.shape[0] != len(keys):
                raise ValueError(f"track {i} has {len(keys)} keyframes but priors of shape {tuple(priors.shape)}")
            keyframes = []
            for prior, key in zip(priors, keys, strict=True):
                if key["ease"] not in EASINGS:
                    raise ValueError(f"unknown easing {key['ease']!r}")
                keyframes.append(
                    Keyframe(
                        validate_prior(prior, str(path)),
                        None if key["at"] is None else TimeMark.parse(key["at"]),
                        key["ease"],
                        None if key["over"] is None else TimeMark.parse(key["over"]),
                        str(key.get("label", "")),
                    )
                )
            tracks.append((float(track["weight"]), Timeline(tuple(keyframes))))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not a readable DICE-Talk emotion timeline ({err}).") from err
    return Emotion(tuple(tracks), metadata.get("description", path.stem), provenance)


def load_emotion(path: str | Path, dim: int | None = 256) -> Emotion:
    """Any preset (official ``.npy``, plain ``.npy``, saved fixed or timeline ``.safetensors``) -> Emotion."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Emotion preset not found: {path}")
    if path.stat().st_size > MAX_PRESET_BYTES:
        raise CheckpointError(f"{path} is {path.stat().st_size} bytes; emotion presets are at most {MAX_PRESET_BYTES}.")
    record = {"source": "preset", "name": path.stem, **file_record(path)}
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
        if metadata.get("kind") == "timeline":
            emotion = _read_timeline(path, tensors, metadata)
            return Emotion(emotion.tracks, emotion.description, {**record, "saved": emotion.provenance})
        if metadata.get("provenance"):
            try:
                record["saved"] = json.loads(metadata["provenance"])
            except json.JSONDecodeError:
                record["saved"] = metadata["provenance"]
    return Emotion.constant(load_emotion_prior(path, dim), path.stem, record)


class PresetLibrary:
    """The preset folders: names, priors, emotions and provenance records, each file read once per change."""

    def __init__(self, folders: Sequence[str | Path]) -> None:
        self.folders = [Path(f) for f in folders]
        self._cache: dict[Path, tuple[int, Emotion]] = {}

    def names(self) -> list[str]:
        """Preset names (file stems) in all folders, sorted."""
        found = set()
        for folder in self.folders:
            if folder.is_dir():
                found |= {p.stem for p in folder.iterdir() if p.suffix in PRESET_SUFFIXES and p.is_file()}
        return sorted(found)

    def path(self, name: str) -> Path:
        return find_preset(name, self.folders)

    def emotion(self, name: str) -> Emotion:
        path = self.path(name)
        stamp = path.stat().st_mtime_ns
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_emotion(path))
            self._cache[path] = cached
        return cached[1]

    def prior(self, name: str) -> torch.Tensor:
        """``(D,)`` of a fixed preset; a saved timeline is refused with a clear message."""
        emotion = self.emotion(name)
        if not emotion.is_static:
            raise InputError(f"The preset '{name}' changes over time; it cannot be used as one fixed emotion here.")
        return emotion.prior()

    def neutral(self) -> torch.Tensor | None:
        """The neutral prior, or None when ``neutral`` is not installed."""
        return self.prior("neutral") if "neutral" in self.names() else None

    def record(self, name: str) -> dict:
        return file_record(self.path(name))


def saved_emotion_path(name: str, folder: Path, library: PresetLibrary, overwrite: bool = False) -> Path:
    """Where :func:`save_emotion` should write the emotion called ``name`` in ``folder``, after checking the name.

    A name must be usable as a word in the emotion text (a letter, then letters, digits, ``_`` or ``-``),
    must not be a word of the grammar, must not shadow an official ``.npy`` preset, and replaces an
    earlier saved emotion only with ``overwrite``.
    """
    name = name.strip().removesuffix(".safetensors")
    if not SAVE_NAME.match(name):
        raise InputError(
            f"'{name}' is not a usable name: start with a letter, then letters, digits, _ or - (at most 64), "
            "so the name can be used as a word in the emotion text."
        )
    if name.lower() in reserved_words() or SLOT_PATTERN.match(name.lower()):
        raise InputError(f"'{name}' is a word of the emotion text (an emotion, adverb or keyword); choose another.")
    for existing in library.names():
        if existing.lower() != name.lower():
            continue
        path = library.path(existing)
        if path.suffix != ".safetensors":
            raise InputError(f"'{name}' is a preset ({path.name}) that cannot be replaced; choose another name.")
        if not overwrite:
            raise InputError(f"An emotion called '{existing}' exists ({path}); turn on overwrite or rename.")
    return Path(folder) / f"{name}.safetensors"
