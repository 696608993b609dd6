"""Saving any emotion as a small safetensors preset with provenance, and loading it back as a preset."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_emotion_mixing import random_library

from dicetalk_core.emotion import (
    Emotion,
    PresetLibrary,
    emotion_from_spec,
    find_preset,
    load_emotion,
    load_emotion_prior,
    mix_emotions,
    save_emotion,
    saved_emotion_path,
)
from dicetalk_core.errors import CheckpointError, InputError


def test_fixed_mix_round_trip_loads_like_any_preset(tmp_path):
    lib = random_library(tmp_path / "emotions")
    emotion = emotion_from_spec("very happy and slightly surprised", lib)
    path = save_emotion(tmp_path / "emotions" / "cheeky", emotion)
    assert path.suffix == ".safetensors" and path.stat().st_size < 4096
    assert torch.equal(load_emotion_prior(path), emotion.prior())  # the plain preset reader takes it
    assert find_preset("cheeky", [tmp_path / "emotions"]) == path
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "dicetalk-emotion" and meta["kind"] == "prior"
    provenance = json.loads(meta["provenance"])
    assert provenance["spec"] == "very happy and slightly surprised"
    assert provenance["presets"]["happy"]["sha256"] == lib.record("happy")["sha256"]
    loaded = PresetLibrary([tmp_path / "emotions"]).emotion("cheeky")
    assert loaded.provenance["saved"]["spec"] == "very happy and slightly surprised"


def test_timeline_and_mixed_tracks_round_trip(tmp_path):
    lib = random_library(tmp_path / "emotions")
    timeline = emotion_from_spec(
        '[{"emotion": "sad"}, {"at": "30f", "emotion": "happy", "ease": "linear"},'
        ' {"at": "80%", "emotion": "angry", "ease": "smooth", "over": "0.5s"}]',
        lib,
    )
    both = mix_emotions([(timeline, 2.0), (Emotion.constant(lib.prior("fear"), "fear"), 1.0)])
    for name, emotion in (("timeline", timeline), ("both", both)):
        path = save_emotion(tmp_path / "emotions" / name, emotion)
        loaded = load_emotion(path)
        assert not loaded.is_static
        for frames in (1, 40, 77):
            assert torch.equal(loaded.priors(frames), emotion.priors(frames))
        with pytest.raises(InputError, match="changes over time"):
            load_emotion_prior(path)
    assert {"timeline", "both"} <= set(PresetLibrary([tmp_path / "emotions"]).names())


def test_broken_saved_timelines_are_refused(tmp_path):
    good = {"format": "dicetalk-emotion", "kind": "timeline"}
    priors = {"track0.priors": torch.zeros(2, 256)}
    cases = {
        "not_json": {**good, "tracks": "[{"},
        "count": {
            **good,
            "tracks": json.dumps([{"weight": 1, "keyframes": [{"at": None, "ease": "hold", "over": None}]}]),
        },
        "ease": {
            **good,
            "tracks": json.dumps([{"weight": 1, "keyframes": [{"at": None, "ease": "wobble", "over": None}] * 2}]),
        },
    }
    for name, meta in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(priors, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match="not a readable DICE-Talk emotion timeline"):
            load_emotion(path)
    (tmp_path / "big.safetensors").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(CheckpointError, match="at most"):
        load_emotion(tmp_path / "big.safetensors")


def test_save_names_stay_usable_in_the_text(tmp_path):
    folder = tmp_path / "emotions"
    lib = random_library(folder, ("happy", "neutral"))
    np_preset = folder / "grumpy.npy"
    np_preset.write_bytes((folder / "happy.npy").read_bytes())
    assert saved_emotion_path("my-smirk", folder, lib) == folder / "my-smirk.safetensors"
    save_emotion(folder / "smirk", Emotion.constant(lib.prior("happy")))
    for name, fragment in [
        ("2happy", "start with a letter"),
        ("my smirk", "start with a letter"),
        ("../evil", "start with a letter"),
        ("joyful", "word of the emotion text"),
        ("very", "word of the emotion text"),
        ("emotion_2", "word of the emotion text"),
        ("Grumpy", "cannot be replaced"),
        ("SMIRK", "turn on overwrite"),
    ]:
        with pytest.raises(InputError, match=fragment):
            saved_emotion_path(name, folder, lib)
    assert saved_emotion_path("smirk", folder, lib, overwrite=True) == folder / "smirk.safetensors"
    emotion = emotion_from_spec("smirk then very happy", lib)  # a saved name is a word of the text
    assert torch.equal(emotion.priors(10)[0], lib.prior("smirk"))
