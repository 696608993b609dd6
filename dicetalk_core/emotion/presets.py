"""Emotion presets: reading the official pickled ``.npy`` files without running code, and our safetensors.

An official preset (``examples/emo/<name>.npy``) is a NumPy object array holding a pickled dict
``{'mu': float32 (1, 256)}``: the mean emotion prior of many videos of that emotion. ``np.load`` with
``allow_pickle=True`` would execute whatever a crafted file contains, so the pickle stream is read
here by an unpickler that admits only NumPy's array-reconstruction globals; anything else is refused
before it is built. Priors we save ourselves are plain safetensors with the single tensor ``mu``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, InputError

OFFICIAL_PRESETS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
PRIOR_KEY = "mu"
PRESET_SUFFIXES = (".npy", ".safetensors")
MAX_PRESET_BYTES = 1 << 20

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
    if dim is not None and flat.numel() != dim:
        raise InputError(f"{source}: the emotion prior has {flat.numel()} values; the model expects {dim}.")
    if flat.numel() == 0 or not torch.isfinite(flat).all():
        raise InputError(f"{source}: the emotion prior is empty or holds NaN/Inf values.")
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
