"""``generate`` announces its stages, and each stage runs exactly the modules ``STAGE_MODULES`` names.

The ComfyUI sampler loads only those modules before each stage (and, under ``--lowvram``, offloads
every other model), so a module missing from a stage's list would run wherever it happened to be.
"""

from __future__ import annotations

import numpy as np
import torch

from dicetalk_core import audio as audio_frontend
from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.emotion.presets import load_emotion
from dicetalk_core.face import prepare_portrait
from dicetalk_core.models.bundle import STAGE_MODULES
from dicetalk_core.pipeline import GenerationSettings, ReferenceInputs, generate
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.sampler import SamplerSettings
from dicetalk_core.session import DiceTalkSession

RATE = 16000
MODULES = ("unet", "vae", "image_encoder", "pose_guider", "audio_projection", "emotion_model")


def test_each_stage_runs_exactly_its_modules(tmp_path):
    folder = write_models_folder(tmp_path / "dice_talk")
    session = DiceTalkSession.from_folder(folder, precision=Precision.resolve("fp32", "cpu"), interpolate=False)
    models = session.models
    speech = 0.3 * np.sin(2 * np.pi * 180 * np.arange(RATE // 2) / RATE).astype(np.float32)
    windows = audio_frontend.audio_windows(session.whisper, speech, RATE).windows
    tokens = emotion_conditioning(models.emotion_model, load_emotion(folder / "emotions" / "happy.npy"), len(windows))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    portrait = prepare_portrait(image, (16, 16, 32, 32), min_resolution=64)

    stages: list[tuple[str, int]] = []
    used: set[tuple[str, str]] = set()
    for name in MODULES:
        for module in getattr(models, name).modules():
            module.register_forward_pre_hook(lambda *_, name=name: used.add((stages[-1][0], name)))
    frames, _ = generate(
        models,
        ReferenceInputs(portrait.ref_image, portrait.clip_image, portrait.face_mask),
        windows,
        tokens,
        GenerationSettings(sampler=SamplerSettings(steps=1)),
        session.precision,
        seed=1,
        on_stage=lambda stage, memory: stages.append((stage, memory)),
    )

    assert [stage for stage, _ in stages] == list(STAGE_MODULES)
    memory = dict(stages)
    assert memory["conditioning"] == 0
    vae = models.vae.config
    pixels = frames.shape[-2] * frames.shape[-1]
    latent_positions = pixels // 64  # the VAE's 8x down-sampling
    call_frames = 3 * SamplerSettings().window  # every CFG branch of one window
    unet_width = models.unet.config.block_out_channels[0]
    assert memory["sampling"] >= call_frames * latent_positions * unet_width * torch.finfo(models.unet.dtype).bits // 8
    assert memory["decode"] >= 10 * pixels * vae.block_out_channels[0] * torch.finfo(models.vae.dtype).bits // 8
    for stage, names in STAGE_MODULES.items():
        assert {name for seen, name in used if seen == stage} == set(names), stage
