"""Low-memory sessions: each stage holds only its own models, and the video is the same as with everything loaded."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from torch import nn

from dicetalk_core.errors import CancelledError
from dicetalk_core.loaders.stages import SESSION_STAGES, StageLoader, is_released, release
from dicetalk_core.pipeline import GenerationSettings
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.sampler import SamplerSettings
from dicetalk_core.session import DiceTalkSession

RATE = 16000
ALL_MODULES = {"whisper", "unet", "vae", "image_encoder", "pose_guider", "audio_projection", "emotion_model", "rife"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage_loading")
    models = write_models_folder(folder / "dice_talk")
    t = np.arange(RATE) / RATE
    soundfile.write(folder / "speech.wav", (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), RATE)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return models, folder / "speech.wav", image


def run(session: DiceTalkSession, inputs, **kwargs) -> torch.Tensor:
    models, speech, image = inputs
    settings = GenerationSettings(sampler=SamplerSettings(steps=1), adapter_scales=(0.7, 1.3))
    emotion = models / "emotions" / "happy.npy"
    result = session.run(image, speech, emotion, settings, face_box=(16, 16, 32, 32), min_resolution=64, **kwargs)
    return result.frames


def low_memory_session(models) -> DiceTalkSession:
    return DiceTalkSession.from_folder(models, precision=Precision.resolve("fp32", "cpu"), low_memory=True)


def test_each_stage_holds_only_its_models_and_the_video_is_unchanged(inputs):
    models = inputs[0]
    full = DiceTalkSession.from_folder(models, precision=Precision.resolve("fp32", "cpu"))
    expected = run(full, inputs)

    session = low_memory_session(models)
    loader = session.stage_loader
    assert loader.loaded() == []  # checked at load, then released
    held: list[tuple[str, set[str]]] = []
    enter = loader.enter

    def recording_enter(stage: str) -> None:
        enter(stage)
        held.append((stage, set(loader.loaded())))

    loader.enter = recording_enter
    frames = run(session, inputs)
    assert held == [(stage, set(names)) for stage, names in SESSION_STAGES.items()]
    assert set().union(*(names for _, names in held)) == ALL_MODULES
    assert loader.loaded() == []
    assert torch.equal(frames, expected)  # the adapter scales reached the UNet read at the sampling stage
    assert torch.equal(run(session, inputs), expected)  # a second run reads the files again


def test_a_cancelled_run_releases_every_model(inputs):
    session = low_memory_session(inputs[0])
    calls = []

    def stop_in_sampling() -> bool:
        calls.append(session.stage_loader.loaded())
        return "unet" in calls[-1]

    with pytest.raises(CancelledError):
        run(session, inputs, should_stop=stop_in_sampling)
    assert ["unet"] in calls
    assert session.stage_loader.loaded() == []


def test_release_frees_the_weights_and_keeps_the_structure():
    layer = nn.Linear(4, 3)
    release(layer)
    assert is_released(layer) and layer.weight.shape == (3, 4) and layer.in_features == 4
    assert not is_released(nn.Linear(4, 3))


def test_stage_loader_refuses_mismatched_names_and_unknown_stages():
    holder = type("Holder", (), {})()
    holder.unet = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="differ"):
        StageLoader({"unet": lambda: nn.Linear(2, 2)}, {"vae": (holder, "unet")})
    loader = StageLoader({"unet": lambda: nn.Linear(2, 2)}, {"unet": (holder, "unet")})
    with pytest.raises(KeyError, match="unknown stage"):
        loader.enter("upscale")
    loader.enter("decode")
    assert is_released(holder.unet)
    loader.enter("sampling")
    assert not is_released(holder.unet)
