"""Long speech (40 s, 21 windows per step) runs end to end with tiny weights in bounded memory."""

from __future__ import annotations

import resource

import numpy as np
import soundfile
from PIL import Image

from dicetalk_core.pipeline import GenerationSettings
from dicetalk_core.precision import Precision
from dicetalk_core.sampler import SamplerSettings

SECONDS = 40
RATE = 16000


def test_forty_seconds_of_speech(tmp_path):
    from dicetalk_core.random_models import write_models_folder
    from dicetalk_core.session import DiceTalkSession

    models = write_models_folder(tmp_path / "dice_talk")
    t = np.arange(SECONDS * RATE) / RATE
    speech = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2).astype(np.float32)
    soundfile.write(tmp_path / "speech.wav", speech, RATE, subtype="PCM_16")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    session = DiceTalkSession.from_folder(models, precision=Precision.resolve("fp32", "cpu"), interpolate=False)
    calls = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = session.run(
        image,
        tmp_path / "speech.wav",
        models / "emotions" / "happy.npy",
        GenerationSettings(sampler=SamplerSettings(steps=1)),
        face_box=(16, 16, 32, 32),
        min_resolution=64,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.frames.shape == (SECONDS * 25 // 2, 3, 64, 64)
    assert result.fps == 12.5
    denoise = [c for c in calls if c[0] == "denoise"]
    assert denoise[-1] == ("denoise", 21, 21)  # ceil((500 + 25) / 25) windows x 1 step
    assert grown_mb < 1024, f"peak memory grew by {grown_mb:.0f} MB for 40 s of tiny-model video"
