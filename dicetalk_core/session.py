"""The main job in one place: load every model from a folder, then portrait + speech + emotion -> video.

Used by the CLI; the ComfyUI nodes call the same rooms one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import audio as audio_frontend
from . import defaults
from .emotion.conditioning import emotion_conditioning
from .emotion.presets import load_emotion
from .emotion.value import Emotion
from .errors import InputError
from .face import FaceBox, prepare_portrait
from .interpolation import IFNet, interpolate_frames
from .loaders.dice_talk import ModelFiles, read_dice_talk_models
from .loaders.rife import load_rife
from .loaders.stages import StageLoader, release
from .loaders.whisper import check_whisper_fits, load_whisper
from .model_files import RIFE_FILE, WHISPER_FOLDER, default_svd_path
from .models.bundle import DiceTalkModels
from .pipeline import GenerationSettings, ReferenceInputs, generate
from .precision import Precision
from .rates import GENERATION_FPS, interpolated_fps
from .sampler import WindowResult

ProgressFn = Callable[[str, int, int], None]


@dataclass
class VideoResult:
    """A finished clip: ``frames`` ``(T, 3, H, W)`` float32 in [0, 1], its true ``fps``, and the speech."""

    frames: torch.Tensor
    fps: float
    audio: np.ndarray
    sample_rate: int


@dataclass
class DiceTalkSession:
    """Every model of a run, reusable for many clips.

    Attributes:
        stage_loader: None (default) keeps every model loaded; with one (``from_folder(low_memory=True)``)
            only the running stage's models are loaded and the others are read again from their files
            when needed (see ``loaders.stages``).
    """

    models: DiceTalkModels
    whisper: audio_frontend.WhisperAudioEncoder
    rife: IFNet | None
    precision: Precision
    stage_loader: StageLoader | None = None

    @classmethod
    def from_folder(
        cls,
        models_dir: str | Path,
        svd: str | Path | None = None,
        precision: Precision | None = None,
        interpolate: bool = True,
        low_memory: bool = False,
    ) -> DiceTalkSession:
        """Load the DICE-Talk files, whisper-tiny, SVD-xt and (optionally) RIFE; see ``model_files``.

        With ``low_memory`` every file is read and checked here, then released; each run reads the
        models of each stage again when it starts and releases them when it ends (see ``loaders.stages``).
        """
        models_dir = Path(models_dir)
        precision = precision or Precision.resolve("auto")
        files = ModelFiles.find(models_dir, svd if svd is not None else default_svd_path(models_dir), precision)
        whisper_folder = models_dir / WHISPER_FOLDER
        loaders: dict[str, Callable[[], nn.Module]] = {
            name: functools.partial(files.load, name) for name in DiceTalkModels.MODULES
        }
        loaders["whisper"] = lambda: _load_whisper(whisper_folder, precision).encoder
        if interpolate:
            loaders["rife"] = lambda: load_rife(models_dir / RIFE_FILE, device=precision.device)

        def read(name: str) -> nn.Module:  # one at a time: with low_memory, at most one module is loaded here
            module = loaders[name]()
            if low_memory:
                release(module)
            return module

        models = read_dice_talk_models(files, read)
        whisper = _load_whisper(whisper_folder, precision)
        check_whisper_fits(models.audio_projection, whisper, whisper_folder)
        if low_memory:
            release(whisper.encoder)
        rife = read("rife") if interpolate else None
        session = cls(models, whisper, rife, precision)
        if low_memory:
            holders = {name: (models, name) for name in DiceTalkModels.MODULES}
            holders["whisper"] = (whisper, "encoder")
            if interpolate:
                holders["rife"] = (session, "rife")
            session.stage_loader = StageLoader(loaders, holders)
        return session

    def _enter(self, stage: str) -> None:
        if self.stage_loader is not None:
            self.stage_loader.enter(stage)

    def run(
        self,
        image: object,
        audio_path: str | Path,
        emotion: Emotion | torch.Tensor | str | Path,
        settings: GenerationSettings | None = None,
        *,
        seed: int = defaults.SEED,
        retrieval: bool = False,
        face_box: FaceBox | tuple[float, float, float, float] | None = None,
        min_resolution: int = defaults.RESOLUTION,
        progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> VideoResult:
        """Portrait (file path, PIL or array) + speech file + emotion -> video.

        The emotion is an :class:`~dicetalk_core.emotion.value.Emotion` (fixed, mix or timeline), a prior
        tensor, or a preset file path.
        """
        settings = settings or GenerationSettings()
        try:
            return self._run(
                image, audio_path, emotion, settings, seed, retrieval, face_box, min_resolution, progress, should_stop
            )
        finally:
            if self.stage_loader is not None:
                self.stage_loader.release_all()

    def _run(
        self,
        image: object,
        audio_path: str | Path,
        emotion: Emotion | torch.Tensor | str | Path,
        settings: GenerationSettings,
        seed: int,
        retrieval: bool,
        face_box: FaceBox | tuple[float, float, float, float] | None,
        min_resolution: int,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> VideoResult:
        portrait = prepare_portrait(_open_image(image), face_box, min_resolution=min_resolution)
        samples, rate = audio_frontend.load_audio_file(audio_path)
        self._enter("audio")
        windows = audio_frontend.audio_windows(
            self.whisper,
            samples,
            rate,
            should_stop=should_stop,
            progress=None if progress is None else lambda d, t: progress("audio", d, t),
        )
        if isinstance(emotion, (str, Path)):
            emotion = load_emotion(emotion)
        self._enter("emotion")
        tokens = emotion_conditioning(self.models.emotion_model, emotion, windows.windows.shape[0], retrieval=retrieval)
        reference = ReferenceInputs(portrait.ref_image, portrait.clip_image, portrait.face_mask)
        total = settings.sampler.window_count(windows.windows.shape[0])
        done = [0]

        def on_window(_: WindowResult) -> None:
            done[0] += 1
            if progress is not None:
                progress("denoise", done[0], total)

        frames, _ = generate(
            self.models,
            reference,
            windows.windows,
            tokens,
            settings,
            self.precision,
            seed=seed,
            on_window=on_window,
            should_stop=should_stop,
            on_stage=lambda stage, _memory: self._enter(stage),
        )
        fps = GENERATION_FPS  # the frame rate of the frames, not the fps micro-condition
        if self.rife is not None and frames.shape[0] > 1:
            self._enter("interpolation")
            frames = interpolate_frames(
                frames,
                self.rife,
                batch_size=settings.fast.interpolation_batch,
                autocast=settings.fast.interpolation_autocast,
                should_stop=should_stop,
                progress=None if progress is None else lambda d, t: progress("interpolate", d, t),
            )
            fps = interpolated_fps(fps)
        mono = audio_frontend.as_channels_first(samples)
        return VideoResult(frames, fps, mono, rate)


def _load_whisper(folder: Path, precision: Precision) -> audio_frontend.WhisperAudioEncoder:
    return load_whisper(folder, device=precision.device, dtype=precision.conditioning)


def _open_image(image: object) -> object:
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                return opened.copy()
        except (OSError, ValueError) as err:
            raise InputError(f"Could not read the portrait image {image}: {err}") from err
    return image
