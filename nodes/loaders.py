"""DICE-Talk Model Loader."""

from __future__ import annotations

import comfy.model_management as mm

from ..dicetalk_core.loaders.dice_talk import load_dice_talk_models
from ..dicetalk_core.loaders.whisper import check_whisper_fits, load_whisper
from ..dicetalk_core.model_files import UNET_FILE
from .model_management import DiceTalkBundle, resolve_dtype
from .paths import files_stamp, find_dice_talk_dir, loader_paths, resolve_svd, svd_options, whisper_dir

CATEGORY = "DICE-Talk"


class DICEModelLoader:
    """Loads SVD-xt, the DICE-Talk weights and whisper-tiny into one model for the other DICE-Talk nodes."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_TALK_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SVD-xt + DICE-Talk UNet, audio projection, emotion model, pose guider and whisper-tiny.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "svd_model": (
                    svd_options(),
                    {
                        "tooltip": "SVD-xt: the stable-video-diffusion-img2vid-xt diffusers folder "
                        "(in models/dice_talk "
                        "or models/diffusers) or svd_xt.safetensors from models/checkpoints. Only its VAE and CLIP "
                        "image encoder are used; the UNet comes from DICE-Talk's unet.pth.",
                    },
                ),
                "precision": (
                    ["auto", "fp16", "bf16", "fp32"],
                    {
                        "default": "auto",
                        "tooltip": "Weights of the UNet, VAE, CLIP and pose guider. "
                        "auto = fp16 on GPUs (as the official "
                        "release), fp32 on the CPU. Audio and emotion modules always run in fp32.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, svd_model: str, precision: str) -> str:
        """Changes when a weight file is replaced, added or removed, so ComfyUI loads it instead of reusing
        the model it loaded before."""
        return files_stamp(loader_paths(svd_model))

    def load(self, svd_model: str, precision: str):
        device = mm.unet_offload_device()
        dtype = resolve_dtype(precision, mm.get_torch_device())
        models = load_dice_talk_models(
            find_dice_talk_dir(UNET_FILE), resolve_svd(svd_model), device=device, dtype=dtype
        )
        whisper = load_whisper(whisper_dir(), device=device)
        check_whisper_fits(models.audio_projection, whisper, whisper_dir())
        return (DiceTalkBundle(models, whisper, dtype),)
