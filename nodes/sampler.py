"""DICE-Talk Sampler (portrait + audio features + emotion -> frames) and frame interpolation."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..dicetalk_core import defaults
from ..dicetalk_core.emotion.conditioning import EmotionConditioning
from ..dicetalk_core.errors import InputError
from ..dicetalk_core.face import prepare_portrait
from ..dicetalk_core.fast_mode import FastMode
from ..dicetalk_core.image_io import as_rgb_u8
from ..dicetalk_core.interpolation import IFNet, interpolate_frames
from ..dicetalk_core.loaders.rife import load_rife
from ..dicetalk_core.model_files import RIFE_FILE
from ..dicetalk_core.models.bundle import STAGE_MODULES
from ..dicetalk_core.pipeline import GenerationSettings, ReferenceInputs, generate
from ..dicetalk_core.rates import GENERATION_FPS, interpolated_fps
from ..dicetalk_core.sampler import SamplerSettings
from .audio import AudioFeatures
from .common import progress_bar, sampling_progress, stop_requested
from .face import FaceCropInfo
from .model_management import DiceTalkBundle, patcher_for
from .paths import find_dice_talk_dir

CATEGORY = "DICE-Talk"


def trim_audio(waveform: torch.Tensor, sample_rate: int, seconds: float) -> dict:
    """ComfyUI AUDIO of ``waveform (C, n)`` cut to ``seconds``."""
    return {"waveform": waveform[None, :, : round(seconds * sample_rate)].contiguous(), "sample_rate": sample_rate}


def mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """(x, y, w, h) bounding box of a ComfyUI MASK's region (values > 0.5)."""
    plane = mask[0] if mask.ndim == 3 else mask
    ys, xs = torch.nonzero(plane > 0.5, as_tuple=True)
    if ys.numel() == 0:
        raise InputError("The face mask is empty: paint the face region (white = face) or disconnect the mask.")
    return (
        xs.min().item(),
        ys.min().item(),
        xs.max().item() - xs.min().item() + 1,
        ys.max().item() - ys.min().item() + 1,
    )


class DICESampler:
    """Makes the talking-head frames: lips follow the audio features, expression follows the emotion."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("frames", "audio", "fps")
    OUTPUT_TOOLTIPS = (
        "Generated frames at 12.5 per second of speech.",
        "The speech, trimmed to the video's length.",
        "Frame rate true to the frames (12.5; 25 after DICE-Talk Frame Interpolation).",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("DICE_TALK_MODEL", {"tooltip": "From DICE-Talk Model Loader."}),
                "image": ("IMAGE", {"tooltip": "The portrait (one image). A face must be visible."}),
                "audio_features": ("DICE_AUDIO_FEATURES", {"tooltip": "From DICE-Talk Audio Encoder."}),
                "emotion_cond": ("DICE_EMOTION_COND", {"tooltip": "From DICE-Talk Emotion Bank."}),
                "seed": (
                    "INT",
                    {
                        "default": defaults.SEED,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "tooltip": f"Same seed, same video (on any device). Official {defaults.SEED}.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": defaults.STEPS,
                        "min": 1,
                        "max": 100,
                        "tooltip": f"Denoising steps (official {defaults.STEPS}).",
                    },
                ),
                "ref_guidance": (
                    "FLOAT",
                    {
                        "default": defaults.REF_GUIDANCE,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.1,
                        "tooltip": f"How strongly the video sticks to the portrait (official {defaults.REF_GUIDANCE}).",
                    },
                ),
                "audio_guidance": (
                    "FLOAT",
                    {
                        "default": defaults.AUDIO_GUIDANCE,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.1,
                        "tooltip": "How strongly lips and expression follow the audio and the emotion together "
                        f"(official {defaults.AUDIO_GUIDANCE}; the release has no separate emotion scale).",
                    },
                ),
                "motion_bucket_id": (
                    "INT",
                    {
                        "default": defaults.MOTION_BUCKET_ID,
                        "min": 0,
                        "max": 255,
                        "tooltip": f"SVD motion bucket (official {defaults.MOTION_BUCKET_ID}).",
                    },
                ),
                "motion_bucket_id_exp": (
                    "INT",
                    {
                        "default": defaults.MOTION_BUCKET_ID_EXP,
                        "min": 0,
                        "max": 255,
                        "tooltip": f"DICE-Talk's expression motion bucket (official {defaults.MOTION_BUCKET_ID_EXP}).",
                    },
                ),
                "overlap": (
                    "INT",
                    {
                        "default": defaults.OVERLAP,
                        "min": 0,
                        "max": defaults.WINDOW - 1,
                        "tooltip": f"Frames shared by neighbouring {defaults.WINDOW}-frame windows "
                        f"(official {defaults.OVERLAP}).",
                    },
                ),
                "fps_condition": (
                    "FLOAT",
                    {
                        "default": GENERATION_FPS,
                        "min": 1.0,
                        "max": 60.0,
                        "step": 0.5,
                        "tooltip": f"The fps value the UNet is conditioned on (official {GENERATION_FPS:g}). It does "
                        f"not change the output rate: the video always has {GENERATION_FPS:g} frames per second "
                        "of speech.",
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": defaults.RESOLUTION,
                        "min": defaults.RESOLUTION_MULTIPLE,
                        "max": 2048,
                        "step": defaults.RESOLUTION_MULTIPLE,
                        "tooltip": f"Short side of the generated video (official {defaults.RESOLUTION}).",
                    },
                ),
            },
            "optional": {
                "face": ("DICE_FACE", {"tooltip": "From DICE-Talk Face Crop: skips face detection."}),
                "face_mask": ("MASK", {"tooltip": "White = face region: its bounding box is used as the face."}),
                "fast_mode": (
                    "DICE_FAST_MODE",
                    {
                        "tooltip": "From DICE-Talk Fast Mode: speed-ups that change the video a little. "
                        "Not connected = the exact, official result.",
                    },
                ),
            },
        }

    def sample(
        self,
        model: DiceTalkBundle,
        image,
        audio_features: AudioFeatures,
        emotion_cond: EmotionConditioning,
        seed: int,
        steps: int,
        ref_guidance: float,
        audio_guidance: float,
        motion_bucket_id: int,
        motion_bucket_id_exp: int,
        overlap: int,
        fps_condition: float,
        resolution: int,
        face: FaceCropInfo | None = None,
        face_mask=None,
        fast_mode: FastMode | None = None,
    ):
        rgb = as_rgb_u8(image)
        if face_mask is not None and tuple(face_mask.shape[-2:]) != rgb.shape[:2]:
            raise InputError(
                f"The face mask is {face_mask.shape[-1]}x{face_mask.shape[-2]} pixels but the portrait is "
                f"{rgb.shape[1]}x{rgb.shape[0]}: use a mask of the portrait's size (white = face)."
            )
        box = face.face_box if face is not None else (mask_box(face_mask) if face_mask is not None else None)
        portrait = prepare_portrait(rgb, box, min_resolution=resolution)
        settings = GenerationSettings(
            sampler=SamplerSettings(
                steps=steps,
                overlap=overlap,
                ref_guidance=(ref_guidance,) * 2,
                audio_guidance=(audio_guidance,) * 2,
                fps=fps_condition,
                motion_bucket_id=motion_bucket_id,
                motion_bucket_id_exp=motion_bucket_id_exp,
            ),
            fast=fast_mode or FastMode(),
        )
        progress = sampling_progress(settings.sampler.window_count(audio_features.num_frames))
        frames, _ = generate(
            model.models,
            ReferenceInputs(portrait.ref_image, portrait.clip_image, portrait.face_mask),
            audio_features.windows,
            emotion_cond,
            settings,
            model.precision,
            seed=seed,
            on_window=progress,
            should_stop=stop_requested,
            on_stage=lambda stage, memory: model.load(*STAGE_MODULES[stage], memory_required=memory),
        )
        mm.soft_empty_cache()
        video = frames.permute(0, 2, 3, 1).to(mm.intermediate_device())
        seconds = frames.shape[0] / GENERATION_FPS
        return (video, trim_audio(audio_features.waveform, audio_features.sample_rate, seconds), GENERATION_FPS)


_RIFE_CACHE: dict[str, comfy.model_patcher.ModelPatcher] = {}


def rife_patcher() -> comfy.model_patcher.ModelPatcher:
    """RIFE from ``dice_talk/RIFE/flownet.pkl``, loaded once per file and managed by ComfyUI."""
    path = find_dice_talk_dir(str(RIFE_FILE)) / RIFE_FILE
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _RIFE_CACHE:
        _RIFE_CACHE.clear()
        _RIFE_CACHE[key] = patcher_for(load_rife(path, device=mm.unet_offload_device()))
    return _RIFE_CACHE[key]


class DICEFrameInterpolation:
    """Doubles the frame rate with RIFE (12.5 -> 25 fps), as the official release does."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("frames", "fps", "audio")
    OUTPUT_TOOLTIPS = ("2N-1 frames.", "Twice the input fps.", "The audio trimmed to the new length.")
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Frames, e.g. from DICE-Talk Sampler."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 12.5,
                        "min": 0.1,
                        "max": 240.0,
                        "forceInput": True,
                        "tooltip": "Their frame rate (connect the sampler's fps).",
                    },
                ),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Audio to trim to the interpolated video."}),
                "fast_mode": (
                    "DICE_FAST_MODE",
                    {
                        "tooltip": "From DICE-Talk Fast Mode: its interpolation options (half precision, frame "
                        "pairs per call). Not connected = one pair per call in the model's precision, as official.",
                    },
                ),
            },
        }

    def interpolate(
        self, frames: torch.Tensor, fps: float, audio: dict | None = None, fast_mode: FastMode | None = None
    ):
        fast = fast_mode or FastMode()
        patcher = rife_patcher()
        mm.load_models_gpu([patcher], force_full_load=True)
        model: IFNet = patcher.model.module
        out = interpolate_frames(
            frames.permute(0, 3, 1, 2),
            model,
            batch_size=fast.interpolation_batch,
            autocast=fast.interpolation_autocast,
            progress=progress_bar(max(frames.shape[0] - 1, 1)),
            should_stop=stop_requested,
        ).permute(0, 2, 3, 1)
        new_fps = interpolated_fps(fps) if frames.shape[0] > 1 else fps
        if audio is not None:
            waveform = audio["waveform"][0]
            audio = trim_audio(waveform, int(audio["sample_rate"]), out.shape[0] / new_fps)
        return (out.to(mm.intermediate_device()), new_fps, audio)
