"""Parity of the whole generation (conditioning, windowed 3-way-guided sampling, chunked decode)."""

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
from golden import GoldenCase, assert_close
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dicetalk_core.audio import frame_windows, pad_hidden_states
from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.models import AudioProjection, EmotionModel, PoseGuider
from dicetalk_core.models.bundle import DiceTalkModels
from dicetalk_core.pipeline import GenerationSettings, InitialNoise, ReferenceInputs, audio_tokens, generate
from dicetalk_core.precision import Precision
from dicetalk_core.sampler import SamplerSettings, start_timesteps
from parity_checks.unet_forward import build_unet


def build_models(case: GoldenCase) -> DiceTalkModels:
    ctor = case.meta["constructors"]

    def loaded(module, name):
        weights = case.group(f"weights.{name}.")
        return load_strict(module, weights, source=f"{case.name}:{name}", what=name).eval()

    vae_config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in ctor["vae"].items()}
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**ctor["image_encoder"]["config"]))
    return DiceTalkModels(
        unet=build_unet(ctor["unet"], ctor["add_ip_adapters"], case.group("weights.unet.")),
        vae=loaded(AutoencoderKLTemporalDecoder(**vae_config), "vae"),
        image_encoder=loaded(clip, "image_encoder"),
        pose_guider=loaded(PoseGuider.from_state_dict(case.group("weights.pose_guider.")), "pose_guider"),
        audio_projection=loaded(AudioProjection.from_state_dict(case.group("weights.audio_linear.")), "audio_linear"),
        emotion_model=loaded(
            EmotionModel.from_state_dict(case.group("weights.emo_model."), num_heads=ctor["emo_model"]["num_heads"]),
            "emo_model",
        ),
        scheduler=EulerDiscreteScheduler(**ctor["scheduler"]["config"]),
    )


def settings_of(case: GoldenCase) -> GenerationSettings:
    kw, config = case.meta["pipeline_call_kwargs"], case.meta["config"]
    return GenerationSettings(
        sampler=SamplerSettings(
            steps=kw["num_inference_steps"],
            window=kw["frames_per_batch"],
            overlap=kw["overlap"],
            shift_offset=kw["shift_offset"],
            ref_guidance=(kw["min_guidance_scale1"], kw["max_guidance_scale1"]),
            audio_guidance=(kw["min_guidance_scale2"], kw["max_guidance_scale2"]),
            strength=kw["i2i_noise_strength"],
            fps=kw["fps"],
            motion_bucket_id=kw["motion_bucket_id"],
            motion_bucket_id_exp=kw["motion_bucket_id_exp"],
        ),
        adapter_scales=tuple(config["ip_scale"]),
        noise_aug_strength=kw["noise_aug_strength"],
        decode_chunk_size=kw["decode_chunk_size"],
    )


def check(case: GoldenCase, report: dict) -> None:
    models = build_models(case)
    settings = settings_of(case)
    config = case.meta["config"]
    precision = Precision(device=torch.device("cpu"))
    inter = case.tolerance("intermediate")

    padded = pad_hidden_states(case["inputs.whisper_hidden_states"], config["audio_len"])
    windows = frame_windows(padded, config["audio_len"], config["step"])
    assert_close("audio_windows", windows, case["intermediate.audio_windows"], 0, 0, report)
    cond, uncond = audio_tokens(models.audio_projection, windows)
    assert_close("audio_tokens_cond", cond, case["intermediate.audio_tokens_cond"], *inter, report)
    assert_close(
        "audio_tokens_uncond",
        uncond.expand_as(cond),
        case["intermediate.audio_tokens_uncond"],
        *inter,
        report,
    )
    emotion = emotion_conditioning(models.emotion_model, case["inputs.emo_prior"], retrieval=config["retrieval"])
    emo, emo_uncond = emotion.cond, emotion.uncond
    assert_close("emo_tokens_cond", emo.expand_as(cond), case["intermediate.emo_tokens_cond"], *inter, report)
    assert_close(
        "emo_tokens_uncond",
        emo_uncond.expand_as(cond),
        case["intermediate.emo_tokens_uncond"],
        *inter,
        report,
    )

    timesteps = start_timesteps(models.scheduler, settings.sampler, precision.device)
    assert_close("scheduler_timesteps", timesteps, case["intermediate.scheduler_timesteps"], *inter, report)
    assert_close("scheduler_sigmas", models.scheduler.sigmas, case["intermediate.scheduler_sigmas"], *inter, report)

    order = []

    def on_window(result):
        order.append([result.step, result.start])
        key = f"intermediate.step{result.step}.window_start{result.start:+d}"
        if f"{key}.guided_noise_pred" in case.tensors:
            assert_close(f"{key}.guided", result.guided, case[f"{key}.guided_noise_pred"], *inter, report)
            assert_close(f"{key}.latents", result.latents, case[f"{key}.latents_after_step"], *inter, report)

    reference = ReferenceInputs(case["inputs.ref_img"], case["inputs.clip_image"], case["inputs.face_mask"])
    noise = InitialNoise(case["inputs.aug_noise"], case["inputs.initial_noise"])
    frames, latents = generate(
        models,
        reference,
        windows,
        emotion,
        settings,
        precision,
        noise=noise,
        on_window=on_window,
    )
    assert order == case.meta["windows_in_call_order"], f"window order {order} differs from the official one"
    assert_close("final_latents", latents, case["outputs.final_latents"], *case.tolerance("final_latents"), report)
    video = frames.permute(1, 0, 2, 3)[None]
    assert_close("video", video, case["outputs.video"], *case.tolerance("video"), report)
