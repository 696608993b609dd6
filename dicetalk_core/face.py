"""Image and face front end: portrait -> reference image, CLIP input and face mask at model size.

Data flow, all rounding as in the official release:

1. Face box ``(x, y, w, h)`` in source pixels: given by the caller, or the largest face found by a
   detector (:class:`HaarFaceDetector`, see :func:`select_largest_face`).
2. Face region: a box ``area`` times the face size around the floored box centre, clipped to the
   image, truncated to integers (:func:`face_region`); it is painted 255 into a black source-size mask.
3. Model size: the shorter side becomes ``min_resolution``, both sides rounded to multiples of 64
   (:func:`model_size`); image and mask are resized with PIL LANCZOS, so the mask gets soft edges.
4. Tensors: reference image in [-1, 1], mask in [0, 1], CLIP input = the resized image squashed to
   224x224 with LANCZOS and normalised like ``CLIPImageProcessor()`` (:func:`clip_pixel_values`).

The optional square crop of the demo (``--crop``) is :func:`square_crop_box` / :func:`crop_around_face`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from . import defaults
from .errors import DiceTalkError, InputError
from .image_io import as_rgb_u8

DEFAULT_MIN_RESOLUTION = defaults.RESOLUTION
DEFAULT_AREA = 1.1
DEFAULT_EXPAND_RATIO = 0.5
SIZE_MULTIPLE = defaults.RESOLUTION_MULTIPLE
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BoxXYXY = tuple[float, float, float, float]
RegionXYXY = tuple[int, int, int, int]


@dataclass(frozen=True)
class FaceBox:
    """A face box in source pixels: top-left corner ``(x, y)``, size ``(w, h)``, detector score."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return self.w * self.h

    @property
    def xyxy(self) -> BoxXYXY:
        """(x1, y1, x2, y2) with x2 = x + w and y2 = y + h."""
        return self.x, self.y, self.x + self.w, self.y + self.h


class FaceDetector(Protocol):
    """Anything that finds faces: ``detect(image)`` -> boxes in source pixels (any order)."""

    def detect(self, image: Any) -> list[FaceBox]: ...


def as_face_box(box: FaceBox | Sequence[float], width: int, height: int) -> FaceBox:
    """Validate a caller box, a :class:`FaceBox` or ``(x, y, w, h)``, against a width x height image.

    Raises:
        InputError: not four finite numbers, a non-positive size, or no overlap with the image.
    """
    if not isinstance(box, FaceBox):
        try:
            values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError) as err:
            raise InputError(f"A face box needs 4 numbers (x, y, width, height); got {box!r}.") from err
        if len(values) != 4:
            raise InputError(f"A face box needs 4 numbers (x, y, width, height); got {len(values)}.")
        box = FaceBox(*values)
    if not all(math.isfinite(v) for v in (box.x, box.y, box.w, box.h)) or box.w <= 0 or box.h <= 0:
        raise InputError(
            f"Face box {box.x, box.y, box.w, box.h} is not (x, y, width, height) with finite values and a "
            "positive width and height."
        )
    x1, y1, x2, y2 = box.xyxy
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InputError(
            f"Face box (x1, y1, x2, y2) = {x1, y1, x2, y2} lies outside the {width}x{height} image: give "
            "the box in the pixel coordinates of this image."
        )
    return box


def select_largest_face(boxes: Sequence[FaceBox]) -> FaceBox:
    """The face of largest area; ties go to the higher score, then the topmost, then the leftmost.

    The official selection loop never updates its running maximum, so it returns the last
    face larger than the first-ranked one; this function returns the truly largest, whatever the order.

    Raises:
        InputError: ``boxes`` is empty.
    """
    if not boxes:
        raise InputError(
            "No face was found in the portrait. Use a photo with one clear, frontal, well-lit face "
            "(not tiny, not cut off), or give the face yourself: a face_mask (white = face) on DICE-Talk "
            "Sampler in ComfyUI, --face-box x,y,w,h on the command line."
        )
    return min(boxes, key=lambda b: (-b.area, -b.score, b.y, b.x, -b.h, -b.w))


class HaarFaceDetector:
    """Frontal-face detector on the Haar cascades that ship inside the OpenCV wheel (XML, no pickle).

    Needs ``opencv-python-headless`` (or another OpenCV 4 build) with ``cv2.data``. Detection runs on
    the equalised gray image, downscaled (INTER_AREA) so its longer side is at most ``max_side``.
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face_px: int = 24,
        max_side: int = 1024,
    ) -> None:
        self._cv2 = _import_cv2()
        path = Path(self._cv2.data.haarcascades) / cascade
        self._cascade = self._cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DiceTalkError(f"OpenCV could not load the face cascade {path}: reinstall 'opencv-python-headless<5'.")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_px = min_face_px
        self.max_side = max_side

    def detect(self, image: Any) -> list[FaceBox]:
        """All faces in ``image`` (any input :func:`as_rgb_u8` takes), largest first, in source pixels.

        Scores are the cascade's final-stage sums (higher = more face-like), not probabilities.
        """
        rgb = as_rgb_u8(image)
        gray, scale_x, scale_y = self._working_gray(rgb)
        found, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face_px, self.min_face_px),
            outputRejectLevels=True,
        )
        boxes = [
            FaceBox(float(x) / scale_x, float(y) / scale_y, float(w) / scale_x, float(h) / scale_y, float(s))
            for (x, y, w, h), s in zip(np.asarray(found).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True)
        ]
        return sorted(boxes, key=lambda b: (-b.area, -b.score, b.y, b.x))

    def _working_gray(self, rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(H, W, 3) uint8 -> equalised gray (h, w) uint8 at working size, and the scales w/W, h/H."""
        cv2 = self._cv2
        height, width = rgb.shape[:2]
        shrink = min(1.0, self.max_side / max(height, width))
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        if size != (width, height):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        return gray, size[0] / width, size[1] / height


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise DiceTalkError(
            "Face detection needs OpenCV: run 'pip install \"opencv-python-headless<5\"', or give the "
            "face box yourself."
        ) from err
    if not hasattr(cv2, "data"):
        raise DiceTalkError(
            "This OpenCV build ships no face cascades (cv2.data is missing): install "
            "'opencv-python-headless<5', or give the face box yourself."
        )
    return cv2


@functools.cache
def default_detector() -> HaarFaceDetector:
    """One shared :class:`HaarFaceDetector` with default settings (loaded on first use)."""
    return HaarFaceDetector()


def find_face(image: Any, detector: FaceDetector | None = None) -> FaceBox:
    """The largest face in ``image`` (see :func:`select_largest_face`); InputError if there is none."""
    return select_largest_face((detector or default_detector()).detect(image))


def face_region(box: FaceBox, area: float, width: int, height: int) -> RegionXYXY:
    """The mask rectangle (x1, y1, x2, y2) in source pixels, with the official rounding.

    Centre = floor of the box centre; half sizes = floor(area * size / 2); corners clipped to the
    image, then truncated with ``int``.
    """
    x1, y1, x2, y2 = box.xyxy
    half_w, half_h = ((x2 - x1) * area) // 2, ((y2 - y1) * area) // 2
    centre_x, centre_y = (x2 + x1) // 2, (y2 + y1) // 2
    left, top = max(centre_x - half_w, 0), max(centre_y - half_h, 0)
    right, bottom = min(centre_x + half_w, width), min(centre_y + half_h, height)
    return int(left), int(top), int(right), int(bottom)


def face_mask_u8(region: RegionXYXY, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 mask: 255 inside ``region`` (x1, y1, x2, y2), 0 elsewhere."""
    mask = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = region
    mask[y1:y2, x1:x2] = 255
    return mask


def model_size(width: int, height: int, min_resolution: int = DEFAULT_MIN_RESOLUTION) -> tuple[int, int]:
    """(width, height) at model resolution: shorter side -> ``min_resolution``, sides rounded to 64."""
    scale = min_resolution / min(width, height)
    return (
        round(width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE,
        round(height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE,
    )


def resize_lanczos(image_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (size[1], size[0], C) uint8 with PIL LANCZOS; same size = unchanged."""
    if (image_u8.shape[1], image_u8.shape[0]) == size:
        return image_u8
    return np.asarray(Image.fromarray(image_u8).resize(size, Image.LANCZOS))


def _chw_unit(image_u8: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (C, H, W) float32 in [0, 1], computed as x / 255 in float32."""
    return torch.from_numpy(np.array(image_u8)).permute(2, 0, 1).float().div(255)


def reference_tensor(image_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]: (x / 255 - 0.5) / 0.5."""
    return _chw_unit(image_u8).sub(0.5).div(0.5)


def mask_tensor(mask_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return _chw_unit(mask_u8)


def clip_pixel_values(image_u8: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, 224, 224) float32 CLIP input.

    LANCZOS squash to 224x224 (aspect not kept), then the arithmetic of ``CLIPImageProcessor()``
    defaults, whose resize and centre crop are no-ops at 224x224: x * (1/255) in float64 cast to
    float32, then (x - mean) / std in float32 with the OpenAI CLIP mean and std.
    """
    squashed = resize_lanczos(image_u8, (CLIP_SIZE, CLIP_SIZE))
    unit = (squashed.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(CLIP_MEAN, dtype=np.float32), np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((unit - mean) / std).transpose(2, 0, 1)))


@dataclass(frozen=True)
class PortraitInputs:
    """Everything the pipeline needs from the portrait (H, W = model size)."""

    ref_image: torch.Tensor  # (3, H, W) float32 in [-1, 1]
    clip_image: torch.Tensor  # (3, 224, 224) float32, CLIP-normalised
    face_mask: torch.Tensor  # (3, H, W) float32 in [0, 1], soft edges
    face_box: FaceBox  # the face box used, source pixels
    face_region: RegionXYXY  # the mask rectangle before resizing, source pixels
    source_hw: tuple[int, int]  # (height, width) of the source image
    model_hw: tuple[int, int]  # (H, W)

    def pose_guider_input(self, num_frames: int) -> torch.Tensor:
        """The mask repeated over time: (1, 3, num_frames, H, W), as the PoseGuider takes it."""
        return self.face_mask[None, :, None].expand(1, -1, num_frames, -1, -1).contiguous()

    def ip_adapter_mask(self) -> torch.Tensor:
        """Channel 0 of the mask, (1, 1, H, W): the spatial mask of the audio/emotion adapters."""
        return self.face_mask[None, :1].clone()


def prepare_portrait(
    image: Any,
    face_box: FaceBox | Sequence[float] | None = None,
    *,
    detector: FaceDetector | None = None,
    min_resolution: int = DEFAULT_MIN_RESOLUTION,
    area: float = DEFAULT_AREA,
) -> PortraitInputs:
    """Portrait -> :class:`PortraitInputs`. A given ``face_box`` (x, y, w, h) skips detection.

    Raises:
        InputError: unusable image, no face found, a bad box, or settings out of range.
    """
    _check_settings(min_resolution, area)
    rgb = as_rgb_u8(image)
    height, width = rgb.shape[:2]
    box = as_face_box(face_box, width, height) if face_box is not None else find_face(rgb, detector)
    region = face_region(box, area, width, height)
    if region[0] >= region[2] or region[1] >= region[3]:
        raise InputError(
            f"The face region {region} (x1, y1, x2, y2) is empty: the face box lies (almost) outside the "
            f"{width}x{height} image or the area factor {area} is too small."
        )
    size = model_size(width, height, min_resolution)
    resized = resize_lanczos(rgb, size)
    return PortraitInputs(
        ref_image=reference_tensor(resized),
        clip_image=clip_pixel_values(resized),
        face_mask=mask_tensor(resize_lanczos(face_mask_u8(region, height, width), size)),
        face_box=box,
        face_region=region,
        source_hw=(height, width),
        model_hw=(size[1], size[0]),
    )


def _check_settings(min_resolution: int, area: float) -> None:
    if min_resolution < SIZE_MULTIPLE:
        raise InputError(f"min_resolution must be at least {SIZE_MULTIPLE}; got {min_resolution}.")
    if not (math.isfinite(area) and area > 0):
        raise InputError(f"The face-mask area factor must be a positive number (official 1.1); got {area}.")


def square_crop_box(box_xyxy: Sequence[float], expand_ratio: float, width: int, height: int) -> RegionXYXY:
    """Square crop (x1, y1, x2, y2), integers, around a face box (x1, y1, x2, y2), as the demo crop does.

    The box grows by ``expand_ratio`` times its width/height on every side (clipped to the image);
    the square has the shorter side of that, sits centred on it and is moved along the longer side
    toward the face centre by at most the overhang; coordinates are rounded half to even.
    """
    if not (math.isfinite(expand_ratio) and expand_ratio >= 0):
        raise InputError(f"expand_ratio must be a number >= 0 (official 0.5); got {expand_ratio}.")
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    ex1, ey1, ex2, ey2 = _expand(x1, y1, x2, y2, expand_ratio, width, height)
    span_w, span_h = ex2 - ex1, ey2 - ey1
    centre_x, centre_y = (ex1 + ex2) / 2, (ey1 + ey2) / 2
    overhang = abs((span_h - span_w) / 2)
    if span_w < span_h:
        centre_y += _shift_toward(centre_y, (y1 + y2) / 2, overhang)
    else:
        centre_x += _shift_toward(centre_x, (x1 + x2) / 2, overhang)
    half = min(span_h, span_w) / 2
    sx1, sy1, sx2, sy2 = centre_x - half, centre_y - half, centre_x + half, centre_y + half
    side = min(sx2 - sx1, sy2 - sy1)
    mid_x, mid_y = (sx1 + sx2) / 2, (sy1 + sy2) / 2
    return round(mid_x - side / 2), round(mid_y - side / 2), round(mid_x + side / 2), round(mid_y + side / 2)


def _expand(x1: float, y1: float, x2: float, y2: float, ratio: float, width: int, height: int) -> BoxXYXY:
    grow_w, grow_h = ratio * (x2 - x1), ratio * (y2 - y1)
    return max(x1 - grow_w, 0), max(y1 - grow_h, 0), min(x2 + grow_w, width), min(y2 + grow_h, height)


def _shift_toward(centre: float, target: float, limit: float) -> float:
    """Signed step from ``centre`` toward ``target``, at most ``limit`` long."""
    step = min(limit, abs(target - centre))
    return step if target > centre else -step


@dataclass(frozen=True)
class FaceCrop:
    """A square crop around the face: its box (x1, y1, x2, y2) in source pixels and its pixels."""

    box: RegionXYXY
    image: np.ndarray  # (y2 - y1, x2 - x1, 3) uint8


def crop_around_face(
    image: Any,
    face_box: FaceBox | Sequence[float] | None = None,
    *,
    detector: FaceDetector | None = None,
    expand_ratio: float = DEFAULT_EXPAND_RATIO,
) -> FaceCrop:
    """Square crop of ``image`` around its face (or the given (x, y, w, h) box), as the demo's --crop."""
    rgb = as_rgb_u8(image)
    height, width = rgb.shape[:2]
    box = as_face_box(face_box, width, height) if face_box is not None else find_face(rgb, detector)
    x1, y1, x2, y2 = square_crop_box(box.xyxy, expand_ratio, width, height)
    return FaceCrop((x1, y1, x2, y2), np.ascontiguousarray(rgb[y1:y2, x1:x2]))
