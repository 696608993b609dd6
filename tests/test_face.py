"""Image normalisation, face geometry, portrait preprocessing and face detection.

Detection tests use OpenCV's bundled Haar cascade and the astronaut photo bundled in scikit-image;
they skip (saying which package is missing) when either is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dicetalk_core.errors import DiceTalkError, InputError
from dicetalk_core.face import (
    FaceBox,
    HaarFaceDetector,
    as_face_box,
    crop_around_face,
    default_detector,
    face_region,
    find_face,
    model_size,
    prepare_portrait,
    select_largest_face,
    square_crop_box,
)
from dicetalk_core.image_io import as_rgb_u8

# Face box of the astronaut photo (skimage.data.astronaut, 512x512) and the crop holding it.
ASTRONAUT_FACE_CENTRE = (225, 114)
ASTRONAUT_FACE_CROP = (slice(40, 200), slice(150, 310))


def gradient(height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 colour ramp without any face."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 128)], -1).astype(np.uint8)


class NoDetector:
    """A detector that must not be asked."""

    def detect(self, image):
        raise AssertionError("detection ran although a face box was given")


class FixedDetector:
    """A detector returning fixed boxes."""

    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes = boxes

    def detect(self, image):
        return list(self.boxes)


# ---------------------------------------------------------------- image normalisation


def test_uint8_rgb_is_kept():
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    np.testing.assert_array_equal(as_rgb_u8(image), image)


def test_comfy_float_batch_of_one_round_trips_exactly():
    image = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    comfy = torch.from_numpy(image).float().div(255)[None]
    np.testing.assert_array_equal(as_rgb_u8(comfy), image)


def test_bfloat16_tensor_is_accepted():
    image = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    half = torch.from_numpy(image).to(torch.bfloat16).div(255)
    assert np.abs(as_rgb_u8(half).astype(int) - image).max() <= 1


def test_float_out_of_range_is_clipped():
    image = np.full((64, 64, 3), 1.2, dtype=np.float32)
    image[0, 0] = -0.3
    out = as_rgb_u8(image)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [255, 255, 255]


def test_rgba_drops_alpha_like_pil():
    rgba = np.random.default_rng(2).integers(0, 256, (64, 80, 4), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgba, "RGBA").convert("RGB"))
    np.testing.assert_array_equal(as_rgb_u8(rgba), expected)
    np.testing.assert_array_equal(as_rgb_u8(Image.fromarray(rgba, "RGBA")), expected)


def test_grayscale_becomes_three_channels():
    gray = np.random.default_rng(3).integers(0, 256, (64, 80), dtype=np.uint8)
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(as_rgb_u8(gray), expected)
    np.testing.assert_array_equal(as_rgb_u8(gray[:, :, None]), expected)
    np.testing.assert_array_equal(as_rgb_u8(Image.fromarray(gray, "L")), expected)


def test_16_bit_maps_to_nearest_8_bit_level():
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    image = np.tile(levels * 257, (4, 4))
    np.testing.assert_array_equal(as_rgb_u8(image)[:, :, 0], np.tile(levels, (4, 4)).astype(np.uint8))
    np.testing.assert_array_equal(as_rgb_u8(Image.fromarray(image)), as_rgb_u8(image))


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (np.zeros((63, 200, 3), np.uint8), "64 pixels"),
        (np.zeros((2, 64, 64, 3), np.float32), "batch of 2"),
        (np.zeros((3, 64, 80), np.uint8), "(height, width, channels)"),
        (np.zeros((64, 64, 3), np.int32), "pixel type"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        ("portrait.png", "Unsupported image object"),
    ],
)
def test_unusable_images_raise_input_error(image, words):
    with pytest.raises(InputError) as err:
        as_rgb_u8(image)
    assert words in str(err.value)


# ---------------------------------------------------------------- geometry and selection


def test_model_size_rounds_half_to_even():
    assert model_size(150, 110, 128) == (192, 128)
    assert model_size(544, 512) == (512, 512)  # 8.5 -> 8
    assert model_size(608, 512) == (640, 512)  # 9.5 -> 10
    assert model_size(512, 1024) == (512, 1024)


def test_face_region_uses_floored_centre_and_clips():
    box = FaceBox(52.7, 23.2, 41.9, 50.6)
    assert face_region(box, 1.1, 150, 110) == (50, 21, 96, 75)
    assert face_region(FaceBox(-10.0, 90.0, 40.0, 40.0), 1.1, 150, 110) == (0, 88, 32, 110)


def test_select_largest_face_fixes_the_official_loop():
    # Official loop (max never updated) returns the last face larger than face 0: the 20-area one.
    boxes = [FaceBox(0, 0, 2, 5), FaceBox(10, 10, 10, 5), FaceBox(30, 30, 4, 5)]
    assert select_largest_face(boxes) == boxes[1]
    assert select_largest_face(boxes[::-1]) == boxes[1]


def test_select_largest_face_breaks_ties_by_score_then_position():
    low, high = FaceBox(50, 10, 8, 8, 0.5), FaceBox(0, 10, 8, 8, 0.9)
    assert select_largest_face([low, high]) == select_largest_face([high, low]) == high
    left, right = FaceBox(0, 10, 8, 8), FaceBox(50, 10, 8, 8)
    assert select_largest_face([right, left]) == select_largest_face([left, right]) == left


def test_no_face_raises_input_error():
    with pytest.raises(InputError, match="No face was found"):
        select_largest_face([])
    with pytest.raises(InputError, match="No face was found"):
        prepare_portrait(gradient(96, 128), detector=FixedDetector([]))


@pytest.mark.parametrize("box", [(1, 2, 3), "abcd", (5, 5, 0, 10), (500, 5, 10, 10), (5, 5, float("nan"), 10)])
def test_bad_caller_box_raises_input_error(box):
    with pytest.raises(InputError, match="ace box"):
        as_face_box(box, 128, 96)


def test_square_crop_box_is_square_inside_image_and_holds_the_face():
    width, height = 300, 200
    for face in [(10, 20, 60, 120), (200, 150, 290, 195), (100, 50, 180, 90)]:
        x1, y1, x2, y2 = square_crop_box(face, 0.5, width, height)
        assert abs((x2 - x1) - (y2 - y1)) <= 1
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x1 <= (face[0] + face[2]) / 2 <= x2 and y1 <= (face[1] + face[3]) / 2 <= y2


# ---------------------------------------------------------------- portrait preprocessing


def test_caller_box_bypasses_detection():
    image = gradient(96, 128)
    out = prepare_portrait(image, (40, 20, 30, 40), detector=NoDetector(), min_resolution=64)
    assert out.face_box == FaceBox(40.0, 20.0, 30.0, 40.0)
    crop = crop_around_face(image, (40, 20, 30, 40), detector=NoDetector())
    assert crop.image.shape == (crop.box[3] - crop.box[1], crop.box[2] - crop.box[0], 3)


def test_prepare_portrait_shapes_ranges_and_mask():
    image = np.random.default_rng(4).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    out = prepare_portrait(image, detector=FixedDetector([FaceBox(20, 20, 10, 10), FaceBox(80, 40, 50, 60)]))
    assert out.face_box == FaceBox(80, 40, 50, 60)
    assert out.source_hw == (150, 200) and out.model_hw == (512, 704)
    assert out.ref_image.shape == out.face_mask.shape == (3, 512, 704)
    assert out.clip_image.shape == (3, 224, 224)
    assert all(t.dtype == torch.float32 for t in (out.ref_image, out.face_mask, out.clip_image))
    assert out.ref_image.min() >= -1 and out.ref_image.max() <= 1
    assert out.face_mask.min() >= 0 and out.face_mask.max() <= 1
    x1, y1, x2, y2 = out.face_region
    scale = 512 / 150
    inside = out.face_mask[:, round((y1 + y2) / 2 * scale), round((x1 + x2) / 2 * scale)]
    assert inside.tolist() == [1.0, 1.0, 1.0] and out.face_mask[:, 5, 5].tolist() == [0.0, 0.0, 0.0]
    assert out.pose_guider_input(7).shape == (1, 3, 7, 512, 704)
    assert torch.equal(out.ip_adapter_mask(), out.face_mask[None, :1])


def test_comfy_image_and_uint8_give_the_same_portrait():
    image = np.random.default_rng(5).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    comfy = torch.from_numpy(image).float().div(255)[None]
    a = prepare_portrait(image, (10, 10, 40, 40), min_resolution=128)
    b = prepare_portrait(comfy, (10, 10, 40, 40), min_resolution=128)
    assert torch.equal(a.ref_image, b.ref_image) and torch.equal(a.clip_image, b.clip_image)


@pytest.mark.parametrize(("setting", "value"), [("min_resolution", 32), ("area", 0.0)])
def test_bad_settings_raise_input_error(setting, value):
    with pytest.raises(InputError, match=setting.split("_")[0]):
        prepare_portrait(gradient(96, 128), (10, 10, 20, 20), **{setting: value})


def test_empty_face_region_raises_input_error():
    with pytest.raises(InputError, match="empty"):
        prepare_portrait(gradient(96, 128), (40, 20, 30, 40), area=0.01)


# ---------------------------------------------------------------- detection (OpenCV + scikit-image)


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    pytest.importorskip("cv2", reason="opencv-python-headless<5 is not installed: face detection not tested")
    try:
        return default_detector()
    except DiceTalkError as err:
        pytest.skip(f"OpenCV face cascade unavailable: {err}")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip(
        "skimage.data", reason="scikit-image (bundled astronaut photo) is not installed: detection not tested"
    )
    return data.astronaut()


def _centre(box: FaceBox) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def test_detects_the_astronaut_face(detector, astronaut):
    box = find_face(astronaut, detector)
    cx, cy = _centre(box)
    assert abs(cx - ASTRONAUT_FACE_CENTRE[0]) < 20 and abs(cy - ASTRONAUT_FACE_CENTRE[1]) < 20
    assert 60 < box.w < 140 and 60 < box.h < 140


def test_detects_in_downscaled_working_copy(detector, astronaut):
    large = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.LANCZOS))
    cx, cy = _centre(find_face(large, detector))
    assert abs(cx / 3 - ASTRONAUT_FACE_CENTRE[0]) < 20 and abs(cy / 3 - ASTRONAUT_FACE_CENTRE[1]) < 20


@pytest.mark.parametrize("big_first", [True, False])
def test_picks_the_larger_of_two_faces(detector, astronaut, big_first):
    face = astronaut[ASTRONAUT_FACE_CROP]
    canvas = gradient(400, 640)
    sizes = (260, 120) if big_first else (120, 260)
    lefts = (30, 400) if big_first else (30, 300)
    for left, size in zip(lefts, sizes, strict=True):
        canvas[60 : 60 + size, left : left + size] = np.asarray(
            Image.fromarray(face).resize((size, size), Image.LANCZOS)
        )
    assert len(detector.detect(canvas)) == 2
    box = find_face(canvas, detector)
    big_left = lefts[sizes.index(260)]
    assert big_left < _centre(box)[0] < big_left + 260 and box.w > 120


def test_no_face_in_gradient(detector):
    with pytest.raises(InputError, match="No face was found"):
        prepare_portrait(gradient(300, 400), detector=detector)
