"""Emotion from a reference clip's faces, with any transformers face-expression image classifier.

Frames are sampled evenly (at most ``max_frames``), the largest face of each is cropped square (the
whole frame is used when none is found), the classifier's softmax is averaged over the frames, and
the average is mapped to the presets (``labels``): the prior is the probability-weighted mix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DiceTalkError, InputError
from ..face import FaceDetector, crop_around_face, default_detector
from .classifiers import (
    EXPRESSION_FOLDER,
    ClassEstimate,
    PretrainedClassifier,
    estimate_from_probabilities,
)
from .presets import PresetLibrary
from .value import Emotion

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 16


class ExpressionClassifier(PretrainedClassifier):
    """A transformers image-classification model (face expressions) and its image processor."""

    KIND = EXPRESSION_FOLDER
    MODEL_CLASS = "AutoModelForImageClassification"
    PREPROCESSOR_CLASS = "AutoImageProcessor"

    def probabilities(self, images: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """RGB uint8 images ``(H, W, 3)`` -> softmax ``(len(images), C)`` float32 on the CPU."""
        return self.softmax(self.preprocessor(images=images, return_tensors="pt"), device)


def sample_indices(count: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` indices spread evenly over ``count`` frames (first and last included)."""
    if count < 1:
        raise InputError("The reference clip has no frames.")
    if max_frames < 1:
        raise InputError(f"max_frames must be at least 1, got {max_frames}.")
    if count <= max_frames:
        return list(range(count))
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)}) if max_frames > 1 else [0]


def to_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(F, H, W, 3)`` float in [0, 1] (ComfyUI IMAGE) or uint8 -> uint8 ``(F, H, W, 3)``."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"Frames must be (frames, height, width, channels), got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def face_crops(frames: np.ndarray, detector: FaceDetector | None) -> tuple[list[np.ndarray], int]:
    """The largest face of each frame, cropped square; the whole frame where none is found. Returns (crops, faces)."""
    crops, faces = [], 0
    for frame in frames:
        try:
            crops.append(crop_around_face(frame, detector=detector).image)
            faces += 1
        except DiceTalkError:
            crops.append(frame)
    return crops, faces


@dataclass(frozen=True)
class FaceEmotion:
    """The estimate and a report (frames used, faces found, probabilities, mapping)."""

    emotion: Emotion
    estimate: ClassEstimate
    report: str


def emotion_from_frames(
    classifier: ExpressionClassifier,
    frames: torch.Tensor | np.ndarray,
    library: PresetLibrary,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    crop_faces: bool = True,
    detector: FaceDetector | None = None,
    device: torch.device | str = "cpu",
) -> FaceEmotion:
    """Reference frames ``(F, H, W, 3)`` -> a fixed emotion (probability-weighted preset mix)."""
    images = to_uint8_frames(frames)
    picked = images[sample_indices(images.shape[0], max_frames)]
    if crop_faces:
        crops, faces = face_crops(picked, detector or default_detector())
    else:
        crops, faces = list(picked), 0
    if crop_faces and faces < len(crops):
        logger.warning(
            "No face found in %d of %d reference frames; used the whole frame.", len(crops) - faces, len(crops)
        )
    probabilities = classifier.probabilities(crops, device).mean(dim=0)
    estimate = estimate_from_probabilities(probabilities, classifier.labels, library)
    faces_text = f", a face found in {faces}" if crop_faces else ", whole frames"
    report = f"face ({classifier.folder.name}): {len(crops)} frames{faces_text}; {estimate.report()}"
    description = "face: " + ", ".join(
        f"{p} {w:.2f}" for p, w in sorted(estimate.mapping.weights.items(), key=lambda x: -x[1])[:3]
    )
    provenance = {
        "source": "face",
        "classifier": classifier.folder.name,
        "frames": len(crops),
        "probabilities": estimate.probabilities,
        "presets": {p: library.record(p) for p in estimate.mapping.weights},
    }
    return FaceEmotion(Emotion.constant(estimate.prior, description, provenance), estimate, report)
