"""The main job without ComfyUI: ``python -m dicetalk_core`` on a tiny random-weight models folder."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from dicetalk_core.__main__ import main
from dicetalk_core.video_io import read_video_info

SECONDS = 1.5
RATE = 22050
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from dicetalk_core.random_models import write_models_folder

    return write_models_folder(tmp_path_factory.mktemp("dice_talk"))


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / "portrait.png"
    Image.fromarray(rng.integers(0, 255, (80, 64, 3), dtype=np.uint8)).save(image)
    t = np.arange(int(SECONDS * RATE)) / RATE
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    audio = tmp_path / "speech.wav"
    soundfile.write(audio, speech.astype(np.float32), RATE, subtype="PCM_16")
    return image, audio


def test_check_lists_found_and_missing_files(models, tmp_path, capsys):
    assert main(["--models", str(models), "--check"]) == 0
    assert "all required files found" in capsys.readouterr().out
    assert main(["--models", str(tmp_path / "empty"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and str(tmp_path / "empty" / "unet.pth") in out


@pytest.mark.parametrize("emotion", ["happy", "neutral, then very happy at 1s"])
def test_cli_writes_an_mp4_with_speech(models, inputs, tmp_path, emotion):
    image, audio = inputs
    out = tmp_path / "out.mp4"
    argv = [
        "--image",
        str(image),
        "--audio",
        str(audio),
        "--emotion",
        emotion,
        "--models",
        str(models),
        "--out",
        str(out),
        "--face-box",
        "16,20,32,36",
        "--resolution",
        "64",
        "--steps",
        "2",
    ]
    assert main(argv) == 0
    info = read_video_info(out)
    audio_frames = int(SECONDS * 16000) // 640
    generated = audio_frames // 2
    assert info.n_frames == 2 * generated - 1
    assert math.isclose(info.fps, 25.0)
    assert abs(info.audio_duration - info.n_frames / 25.0) < 0.05


def test_silent_audio_and_missing_face_are_clear_errors(models, inputs, tmp_path, capsys):
    image, _ = inputs
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(RATE, np.float32), RATE)
    base = [
        "--emotion",
        "happy",
        "--models",
        str(models),
        "--out",
        str(tmp_path / "x.mp4"),
        "--resolution",
        "64",
    ]
    assert main(["--image", str(image), "--audio", str(silent), "--face-box", "16,20,32,36", *base]) == 1
    assert "silent" in capsys.readouterr().err
    _, speech = inputs
    assert main(["--image", str(image), "--audio", str(speech), *base]) == 1
    assert "No face" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_check_imports_no_model_code(models):
    """``--check`` answers from the standard-library manifest alone: torch and the model libraries stay unloaded."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['dicetalk_core', '--models', {str(models)!r}, '--check']\n"
        "try:\n    runpy.run_module('dicetalk_core', run_name='__main__')\n"
        "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'diffusers', 'transformers'})\n"
        "print('heavy:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert "all required files found" in result.stdout
    assert "heavy: []" in result.stdout


def decoded_frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_the_same_emotion_written_differently_gives_the_same_video(models, inputs, tmp_path):
    """A preset by name, its file, a one-keyframe JSON timeline, a one-entry weighted mix and a timeline that
    holds it all take one path to the emotion tokens: the videos are identical; another emotion's is not.

    128 px: below that, x264's macroblock-tree lookahead gives slightly different encodes of the same frames.
    """
    image, audio = inputs
    spellings = {
        "name": "happy",
        "file": str(models / "emotions" / "happy.npy"),
        "json_keyframe": '[{"at": "0s", "emotion": "happy"}]',
        "mix_of_one": "100% happy",
        "held_timeline": "happy, then happy at 1s",
        "other_emotion": "neutral",
    }
    videos = {}
    for name, emotion in spellings.items():
        out = tmp_path / f"{name}.mp4"
        argv = ["--image", str(image), "--audio", str(audio), "--emotion", emotion, "--models", str(models)]
        argv += ["--out", str(out), "--face-box", "16,20,32,36", "--resolution", "128", "--steps", "1"]
        assert main([*argv, "--no-interpolate"]) == 0, name
        videos[name] = decoded_frames(out)
    for name in ("file", "json_keyframe", "mix_of_one", "held_timeline"):
        assert np.array_equal(videos[name], videos["name"]), name
    assert not np.array_equal(videos["other_emotion"], videos["name"])
