"""DICE-Talk Model Loader."""

from __future__ import annotations

import comfy.model_management as mm

from ..dicetalk_core.audio import load_whisper
from ..dicetalk_core.loading import (
    AUDIO_PROJECTION_FILE,
    EMOTION_MODEL_FILE,
    POSE_GUIDER_FILE,
    UNET_FILE,
    find_weight_file,
    load_audio_projection,
    load_dice_unet,
    load_emotion_model,
    load_pose_guider,
)
from ..dicetalk_core.pipeline import DiceTalkModels
from ..dicetalk_core.svd_components import SVD_XT, folder_configs, load_svd_components
from .model_management import DiceTalkBundle, resolve_dtype
from .paths import find_dice_talk_dir, resolve_svd, svd_options, whisper_dir

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

    def load(self, svd_model: str, precision: str):
        device = mm.unet_offload_device()
        dtype = resolve_dtype(precision, mm.get_torch_device())
        svd_path = resolve_svd(svd_model)
        svd = load_svd_components(
            svd_path, device=device, dtype=dtype, configs=folder_configs(svd_path) if svd_path.is_dir() else SVD_XT
        )
        folder = find_dice_talk_dir(UNET_FILE)
        models = DiceTalkModels(
            unet=load_dice_unet(find_weight_file(folder, UNET_FILE), svd.unet_config),
            vae=svd.vae,
            image_encoder=svd.image_encoder,
            pose_guider=load_pose_guider(find_weight_file(find_dice_talk_dir(POSE_GUIDER_FILE), POSE_GUIDER_FILE)),
            audio_projection=load_audio_projection(
                find_weight_file(find_dice_talk_dir(AUDIO_PROJECTION_FILE), AUDIO_PROJECTION_FILE)
            ),
            emotion_model=load_emotion_model(
                find_weight_file(find_dice_talk_dir(EMOTION_MODEL_FILE), EMOTION_MODEL_FILE)
            ),
            scheduler=svd.scheduler,
        )
        for module in (models.unet, models.vae, models.image_encoder, models.pose_guider):
            module.to(device=device, dtype=dtype)
        whisper = load_whisper(whisper_dir(), device=device)
        return (DiceTalkBundle(models, whisper, dtype),)
