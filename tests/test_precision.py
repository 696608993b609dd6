"""The whole pipeline runs in every supported precision policy, with the official fp32 islands kept."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from dicetalk_core.pipeline import GenerationSettings
from dicetalk_core.precision import Precision
from dicetalk_core.sampler import SamplerSettings


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from dicetalk_core.random_models import write_models_folder

    folder = tmp_path_factory.mktemp("precision")
    models = write_models_folder(folder / "dice_talk")
    t = np.arange(16000) / 16000
    soundfile.write(folder / "speech.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return models, folder / "speech.wav", image


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_pipeline_runs_in_precision(inputs, name):
    from dicetalk_core.session import DiceTalkSession

    models, speech, image = inputs
    precision = Precision.resolve(name, "cpu")
    session = DiceTalkSession.from_folder(models, precision=precision, interpolate=False)
    assert session.models.unet.dtype == precision.diffusion
    assert next(session.models.audio_projection.parameters()).dtype == torch.float32
    assert next(session.models.emotion_model.parameters()).dtype == torch.float32
    result = session.run(
        image,
        speech,
        models / "emotions" / "happy.npy",
        GenerationSettings(sampler=SamplerSettings(steps=1)),
        face_box=(16, 16, 32, 32),
        min_resolution=64,
    )
    assert result.frames.dtype == torch.float32 and result.frames.shape == (12, 3, 64, 64)
    assert torch.isfinite(result.frames).all() and result.frames.min() >= 0 and result.frames.max() <= 1
    assert session.models.vae.dtype == precision.diffusion  # restored after the fp32 reference encode


def test_auto_policy_and_unknown_names():
    assert Precision.resolve("auto", "cpu").diffusion == torch.float32
    assert Precision.resolve("fp16", "cpu").conditioning == torch.float32
    from dicetalk_core.errors import InputError

    with pytest.raises(InputError, match="fp64"):
        Precision.resolve("fp64", "cpu")
