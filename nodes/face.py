"""Face crop and paste-back: generate on a square face crop, then put the result back into the photo."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import torch

from ..dicetalk_core.compositing import EVEN_SIZES, paste_back, paste_back_bytes
from ..dicetalk_core.errors import InputError
from ..dicetalk_core.face import FaceBox, crop_around_face, find_face
from ..dicetalk_core.image_io import as_rgb_u8

CATEGORY = "DICE-Talk"


@dataclass(frozen=True)
class FaceCropInfo:
    """``crop_box`` (x1, y1, x2, y2) in the original image and ``face_box`` inside the crop."""

    crop_box: tuple[int, int, int, int]
    face_box: FaceBox
    source_hw: tuple[int, int]


def to_comfy_image(array_u8) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ComfyUI IMAGE ``(1, H, W, 3)`` float32 in [0, 1]."""
    return torch.from_numpy(array_u8).float().div(255.0)[None]


class DICEFaceCrop:
    """Finds the largest face and crops a square around it; put the result back with DICE-Talk Paste Back."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "DICE_FACE")
    RETURN_NAMES = ("face_image", "face")
    OUTPUT_TOOLTIPS = (
        "The square crop around the face.",
        "Where the crop and the face are (for sampler and paste back).",
    )
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "A photo with a face (any size, wide shots too)."}),
                "expand_ratio": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 3.0,
                        "step": 0.05,
                        "tooltip": "How much context around the face: the box grows by this times its size on each "
                        "side (official 0.5).",
                    },
                ),
            }
        }

    def crop(self, image: torch.Tensor, expand_ratio: float):
        rgb = as_rgb_u8(image)
        box = find_face(rgb)
        crop = crop_around_face(rgb, (box.x, box.y, box.w, box.h), expand_ratio=expand_ratio)
        x1, y1, _, _ = crop.box
        inner = FaceBox(box.x - x1, box.y - y1, box.w, box.h, box.score)
        return (to_comfy_image(crop.image), FaceCropInfo(crop.box, inner, rgb.shape[:2]))


class DICEPasteBack:
    """Puts generated face-crop frames back into the original photo, with a soft edge; the frames have even
    sides, as video encoders need, whatever the photo's size."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Full-size frames, at most one pixel off the photo's size (even sides).",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "Generated frames of the crop (after any face restore/upscale)."}),
                "original": ("IMAGE", {"tooltip": "The photo that went into DICE-Talk Face Crop."}),
                "face": ("DICE_FACE", {"tooltip": "From DICE-Talk Face Crop."}),
                "feather": (
                    "INT",
                    {
                        "default": 16,
                        "min": 0,
                        "max": 256,
                        "tooltip": "Width in pixels of the blended edge (0 = hard edge).",
                    },
                ),
            },
            "optional": {
                "even_size": (
                    list(EVEN_SIZES),
                    {
                        "default": EVEN_SIZES[0],
                        "tooltip": "Video needs an even width and height (H.264 in Save Video refuses odd ones). "
                        "For a photo with an odd side: crop = drop its last row or column (as the command line "
                        "does), pad = repeat it. Photos with even sides are not changed.",
                    },
                ),
            },
        }

    def paste(
        self,
        frames: torch.Tensor,
        original: torch.Tensor,
        face: FaceCropInfo,
        feather: int,
        even_size: str = EVEN_SIZES[0],
    ):
        height, width = original.shape[-3:-1]
        needed = paste_back_bytes(frames.shape[0], height, width, face.crop_box, even_size)
        free = mm.get_free_memory(mm.intermediate_device())
        if needed > free:
            raise InputError(
                f"Pasting {frames.shape[0]} frames back into the {width}x{height} photo needs about "
                f"{needed / 2**30:.1f} GB of memory; {free / 2**30:.1f} GB are free. Downscale the photo before "
                "DICE-Talk Face Crop (e.g. with Upscale Image By) or use a shorter clip (DICE-Talk Audio Encoder's "
                "duration)."
            )
        background = torch.from_numpy(as_rgb_u8(original)).float().div(255.0)
        return (paste_back(frames, background, face.crop_box, feather, even_size).cpu(),)
