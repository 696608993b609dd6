"""Emotion presets: the official files load exactly, crafted or broken files are refused safely."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from pickle_payload import MarkerPayload

from dicetalk_core.emotion import find_preset, load_emotion_prior, save_emotion_prior
from dicetalk_core.errors import CheckpointError, InputError
from dicetalk_core.model_files import OFFICIAL_PRESETS

PRESETS = Path(__file__).resolve().parents[2] / "shared" / "presets"


def npy_with_pickle(path: Path, payload: object) -> None:
    """Write an object-array .npy whose pickle stream is ``pickle.dumps(payload)``."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(stream.getvalue() + pickle.dumps(payload, protocol=3))


@pytest.mark.parametrize("name", OFFICIAL_PRESETS)
def test_official_presets_load_exactly(name):
    path = PRESETS / f"{name}.npy"
    if not path.is_file():
        pytest.skip(f"official presets not found in {PRESETS}")
    trusted = np.load(path, allow_pickle=True).item()["mu"]  # test data we trust, as the reference
    prior = load_emotion_prior(path)
    assert prior.shape == (256,) and prior.dtype == torch.float32
    assert np.array_equal(prior.numpy(), trusted.reshape(-1))


def test_crafted_preset_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.npy"
    npy_with_pickle(path, {"mu": MarkerPayload(str(marker))})
    with pytest.raises(CheckpointError, match="refused"):
        load_emotion_prior(path)
    assert not marker.exists()


def test_wrong_shape_and_non_finite_presets_are_refused(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((1, 10), np.float32))
    with pytest.raises(InputError, match="10 values"):
        load_emotion_prior(tmp_path / "short.npy")
    bad = np.zeros((1, 256), np.float32)
    bad[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="NaN"):
        load_emotion_prior(tmp_path / "nan.npy")
    npy_with_pickle(tmp_path / "nokey.npy", {"sigma": np.zeros((1, 256), np.float32)})
    with pytest.raises(CheckpointError, match="no 'mu'"):
        load_emotion_prior(tmp_path / "nokey.npy")


def test_safetensors_preset_round_trip(tmp_path):
    prior = torch.randn(256)
    path = save_emotion_prior(tmp_path / "mine", prior)
    assert path.suffix == ".safetensors"
    assert torch.equal(load_emotion_prior(path), prior)


def test_find_preset_stays_inside_its_folders(tmp_path):
    np.save(tmp_path / "happy.npy", np.zeros((1, 256), np.float32))
    assert find_preset("happy", [tmp_path]) == tmp_path / "happy.npy"
    for name in ("../../etc/passwd", "/etc/passwd", "..", "sub/happy"):
        with pytest.raises(InputError):
            find_preset(name, [tmp_path])
    with pytest.raises(CheckpointError, match=r"angry\.npy"):
        find_preset("sad", [tmp_path])
