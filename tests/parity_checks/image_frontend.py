"""Parity of the image/face front end (``dicetalk_core.face``) with an ``image_frontend`` case.

The face box, area factor, resolution, expand ratios and tolerances all come from the case; the
detector is not involved (the case stubs it with a fixed box, which is passed as the caller box).
"""

from __future__ import annotations

import torch
from golden import GoldenCase, assert_close

from dicetalk_core.face import crop_around_face, prepare_portrait, square_crop_box


def _tolerance(case: GoldenCase, entry: str) -> tuple[float, float]:
    """(atol, rtol) of one output family; rtol is 0 unless the case names one."""
    tol = case.meta.get("tolerance", {}).get(entry, {})
    return float(tol.get("atol", 0.0)), float(tol.get("rtol", 0.0))


def _values(case: GoldenCase, meta_key: str, tensor_key: str) -> list:
    """A list of numbers from the JSON (exact Python floats) or else from the stored tensor."""
    if meta_key in case.meta:
        return case.meta[meta_key]
    return case[tensor_key].tolist()


def _check_portrait(case: GoldenCase, box: list[float], report: dict) -> None:
    inputs = prepare_portrait(
        case["inputs.image_rgb_u8"].numpy(),
        box,
        min_resolution=int(case.meta["image_size"]),
        area=float(case.meta["area"]),
    )
    for name, actual in (
        ("ref_img", inputs.ref_image),
        ("face_mask", inputs.face_mask),
        ("clip_image", inputs.clip_image),
    ):
        assert_close(name, actual, case[f"outputs.{name}"], *_tolerance(case, name), report)


def _check_crop(case: GoldenCase, box: list[float], report: dict) -> None:
    crop = crop_around_face(case["inputs.image_rgb_u8"].numpy(), box, expand_ratio=case.meta["expand_ratio"])
    expected_box = case["outputs.crop_bbox_xyxy"]
    actual_box = torch.tensor(crop.box, dtype=expected_box.dtype)
    assert_close("crop_bbox_xyxy", actual_box, expected_box, 0, 0, report)
    assert_close("crop_rgb_u8", torch.from_numpy(crop.image), case["outputs.crop_rgb_u8"], 0, 0, report)


def _check_square_boxes(case: GoldenCase, report: dict) -> None:
    height, width = case["inputs.image_rgb_u8"].shape[:2]
    extra = case.meta.get("extra_process_bbox_cases")
    if extra is not None:
        pairs = [(c["bbox_xyxy"], c["expand_ratio"]) for c in extra]
    else:
        boxes, ratios = case["inputs.extra_bboxes_xyxy"].tolist(), case["inputs.extra_expand_ratios"].tolist()
        pairs = list(zip(boxes, ratios, strict=True))
    expected = case["outputs.extra_crop_bboxes_xyxy"]
    actual = torch.tensor(
        [square_crop_box(box, ratio, width, height) for box, ratio in pairs], dtype=expected.dtype
    ).reshape(expected.shape)
    assert_close("extra_crop_bboxes_xyxy", actual, expected, 0, 0, report)


def check(case: GoldenCase, report: dict) -> None:
    box = _values(case, "bbox_xywh", "inputs.bbox_xywh")
    _check_portrait(case, box, report)
    _check_crop(case, box, report)
    _check_square_boxes(case, report)
