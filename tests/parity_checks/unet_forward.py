"""Parity of the patched stock UNet (DICE-Talk adapters, masks, pose residual) with the official UNet."""

import torch
from diffusers import UNetSpatioTemporalConditionModel
from golden import GoldenCase, assert_close

from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.unet_adapters import install_dice_adapters


def build_unet(constructor: dict, adapters: dict, weights: dict) -> torch.nn.Module:
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in constructor.items()}
    unet = install_dice_adapters(
        UNetSpatioTemporalConditionModel(**config),
        num_tokens=adapters["num_adapter_embeds"],
        scales=adapters["scale"],
    )
    return load_strict(unet, weights, source="golden unet", what="the DICE-Talk UNet").eval()


def check(case: GoldenCase, report: dict) -> None:
    unet = build_unet(case.meta["constructor"], case.meta["add_ip_adapters"], case.group("weights."))
    atol, rtol = case.tolerance()
    mask = case["inputs.face_mask"]
    calls = case.meta["calls"]
    previous = None
    for index, call in enumerate(calls):
        name = call.get("name", f"call{index}")
        inputs = name.removesuffix("_nomask")
        sample_key = f"inputs.{inputs}.sample"
        if sample_key not in case.tensors:
            sample_key, timestep = previous
        else:
            timestep = case[f"inputs.{inputs}.timestep"].to(torch.float32)
            previous = (sample_key, timestep)
        unet.set_adapter_scales(*call["ip_scale"])
        masked = call.get("cross_attention_kwargs") is not None
        out = unet(
            case[sample_key],
            timestep,
            image_embeds=case["inputs.encoder_hidden_states"],
            adapter_tokens=[case["inputs.audio_tokens"], case["inputs.emo_tokens"]],
            added_time_ids=case["inputs.added_time_ids"],
            pose_features=case["inputs.spatial_condition"],
            masks=[mask, mask] if masked else None,
        ).sample
        assert_close(f"{name}.noise_pred", out, case[f"outputs.{name}.noise_pred"], atol, rtol, report)
