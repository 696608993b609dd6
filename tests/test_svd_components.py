"""Loading the SVD-xt parts: the official configs, the diffusers folder (fp16 variant first), refusals.

The single-file path and its key map are tested in ``test_svd_single_file.py``.
"""

from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from test_svd_single_file import MANIFESTS, TINY_CONFIGS
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dicetalk_core.errors import CheckpointError
from dicetalk_core.loaders.checkpoints import read_state_dict
from dicetalk_core.loaders.svd import (
    SVD_XT,
    SVD_XT_IMAGE_ENCODER_CONFIG,
    SVD_XT_UNET_CONFIG,
    SVD_XT_VAE_CONFIG,
    build_scheduler,
    find_folder_weights,
    folder_configs,
    load_svd_components,
    load_svd_part,
)
from dicetalk_core.loaders.svd_single_file import convert_unet, split_checkpoint
from dicetalk_core.model_files import SVD_WEIGHT_FILES

# Spec 7.1: Karras sigmas of 25 steps between 700 and 0.002, then 0.
SPEC_SIGMAS = [
    700,
    545.729,
    421.569,
    322.454,
    244.023,
    182.547,
    134.854,
    98.267,
    70.541,
    49.810,
    34.537,
    23.468,
    15.590,
    10.097,
    6.354,
    3.870,
    2.269,
    1.273,
    0.678,
    0.339,
    0.157,
    0.0664,
    0.0248,
    0.00788,
    0.002,
    0,
]

# --------------------------------------------------------------------------- configs


def test_unet_config_is_the_manifest_constructor():
    path = MANIFESTS / "unet.pth.json"
    if not path.is_file():
        pytest.skip(f"spec manifest {path} not available")
    assert json.loads(path.read_text())["constructor"] == SVD_XT_UNET_CONFIG


def test_full_size_parameter_counts_are_the_spec_ones():
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(SVD_XT_UNET_CONFIG)
        vae = AutoencoderKLTemporalDecoder.from_config(SVD_XT_VAE_CONFIG)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_IMAGE_ENCODER_CONFIG))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, clip)]
    assert counts == [1_524_623_082, 97_742_847, 632_076_800]
    assert len(unet.state_dict()) == 1428
    assert vae.config.scaling_factor == 0.18215 and vae.config.force_upcast


def test_scheduler_gives_the_spec_sigmas_and_timesteps():
    scheduler = build_scheduler()
    scheduler.set_timesteps(25)
    sigmas = scheduler.sigmas.tolist()
    assert len(sigmas) == 26 and sigmas[-1] == 0
    assert all(math.isclose(a, b, rel_tol=3e-3) for a, b in zip(sigmas[:-1], SPEC_SIGMAS[:-1], strict=True))
    expected = torch.tensor([0.25 * math.log(s) for s in sigmas[:-1]], dtype=torch.float32)
    assert torch.allclose(scheduler.timesteps, expected, atol=1e-6)
    assert scheduler.config.prediction_type == "v_prediction"


# --------------------------------------------------------------------------- the diffusers folder


def fp16_exact(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random fp32 weights that are exactly representable in fp16 (so fp16 files lose nothing)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    state = {k: (torch.randn(shape, generator=generator) * 0.2).half().float() for k, shape in shapes.items()}
    module.load_state_dict(state)
    return state


@pytest.fixture(scope="module")
def sources():
    """Tiny source models, in fp32 with fp16-exact weights."""
    vae = AutoencoderKLTemporalDecoder.from_config(TINY_CONFIGS.vae).eval()
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CONFIGS.image_encoder)).eval()
    unet = UNetSpatioTemporalConditionModel.from_config(TINY_CONFIGS.unet).eval()
    states = {"vae": fp16_exact(vae, 1), "image_encoder": fp16_exact(clip, 2), "unet": fp16_exact(unet, 3)}
    return {"vae": vae, "image_encoder": clip, "states": states}


def write_folder(root: Path, states: dict, *, fp16: bool = True, fp32: bool = True, fp32_offset: float = 0.0) -> Path:
    """A diffusers-style folder; the fp32 files may hold shifted values, to see which file was read."""
    for part, state in states.items():
        (root / part).mkdir(parents=True, exist_ok=True)
        fp16_name, fp32_name = SVD_WEIGHT_FILES[part]
        if fp16:
            save_file({k: v.half() for k, v in state.items()}, root / part / fp16_name)
        if fp32:
            save_file({k: v + fp32_offset for k, v in state.items()}, root / part / fp32_name)
    return root


def load_tiny(path: Path, **kwargs):
    return load_svd_components(path, device="cpu", configs=TINY_CONFIGS, **kwargs)


def test_folder_prefers_the_fp16_variant_and_computes_like_the_sources(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"], fp32_offset=1.0)
    loaded = load_tiny(folder, dtype=torch.float32, load_unet=True)
    for part, module in (("vae", loaded.vae), ("image_encoder", loaded.image_encoder)):
        state = module.state_dict()
        assert all(torch.equal(state[k], v) for k, v in sources["states"][part].items()), part
    assert all(torch.equal(loaded.unet_state[k].float(), v) for k, v in sources["states"]["unet"].items())
    assert loaded.unet_config == dict(TINY_CONFIGS.unet)

    generator = torch.Generator().manual_seed(4)
    frames = torch.randn(3, 3, 16, 16, generator=generator)
    latents = torch.randn(3, 4, 8, 8, generator=generator)
    pixels = torch.randn(2, 3, 28, 28, generator=generator)
    ours, theirs = loaded.vae, sources["vae"]
    with torch.no_grad():
        pairs = {
            "vae encode": (ours.encode(frames).latent_dist.mean, theirs.encode(frames).latent_dist.mean),
            "vae decode": (ours.decode(latents, num_frames=3).sample, theirs.decode(latents, num_frames=3).sample),
            "clip": (
                loaded.image_encoder(pixel_values=pixels).image_embeds,
                sources["image_encoder"](pixel_values=pixels).image_embeds,
            ),
        }
    errors = {name: (a - b).abs().max().item() for name, (a, b) in pairs.items()}
    print(f"\nfolder-loaded vs source models: {errors}")
    assert max(errors.values()) < 1e-6


def test_each_part_loads_alone_without_reading_the_others(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"], fp32=False)
    both = load_tiny(folder, dtype=torch.float32)
    alone = {
        part: load_svd_part(folder, part, device="cpu", dtype=torch.float32, configs=TINY_CONFIGS)
        for part in ("vae", "image_encoder")
    }
    for part, module in alone.items():
        expected = getattr(both, part).state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in module.state_dict().items()), part
        other = "image_encoder" if part == "vae" else "vae"
        (folder / other / SVD_WEIGHT_FILES[other][0]).write_bytes(b"not a safetensors file")
        reloaded = load_svd_part(folder, part, device="cpu", dtype=torch.float32, configs=TINY_CONFIGS)
        assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items()), part
        with pytest.raises(CheckpointError, match=other):
            load_tiny(folder, dtype=torch.float32)
        write_folder(folder, {other: sources["states"][other]}, fp32=False)


def test_folder_fp32_weights_are_rounded_through_fp16_unless_asked(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"], fp16=False, fp32_offset=1e-4)
    shifted = sources["states"]["vae"]["decoder.conv_in.weight"] + 1e-4
    rounded = load_tiny(folder, dtype=torch.float32).vae.decoder.conv_in.weight
    exact = load_tiny(folder, dtype=torch.float32, fp16_weights=False).vae.decoder.conv_in.weight
    assert torch.equal(rounded, shifted.half().float())
    assert torch.equal(exact, shifted)
    assert not torch.equal(rounded, exact)


def test_folder_modules_get_the_requested_dtype_and_are_frozen(tmp_path, sources):
    loaded = load_tiny(write_folder(tmp_path / "svd", sources["states"], fp32=False), dtype=torch.float16)
    for module in (loaded.vae, loaded.image_encoder):
        assert {p.dtype for p in module.parameters()} == {torch.float16}
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    embeddings = loaded.image_encoder.vision_model.embeddings
    assert torch.equal(embeddings.position_ids, torch.arange(embeddings.num_positions)[None])
    assert loaded.unet_state is None


def test_an_old_clip_export_with_position_ids_loads(tmp_path, sources):
    states = dict(sources["states"])
    states["image_encoder"] = {
        **states["image_encoder"],
        "vision_model.embeddings.position_ids": torch.arange(5)[None].float(),
    }
    loaded = load_tiny(write_folder(tmp_path / "svd", states, fp32=False), dtype=torch.float32)
    assert loaded.image_encoder.vision_model.embeddings.position_ids.shape == (1, 5)


def test_folder_configs_read_the_config_files_as_diffusers_writes_them(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"], fp32=False)
    extras = {
        "vae": {"_class_name": "AutoencoderKLTemporalDecoder", "_diffusers_version": "0.24.0.dev0"},
        "image_encoder": {
            "architectures": ["CLIPVisionModelWithProjection"],
            "model_type": "clip_vision_model",
            "torch_dtype": "float16",
            "transformers_version": "4.34.0.dev0",
        },
    }
    for part, config in (("vae", TINY_CONFIGS.vae), ("image_encoder", TINY_CONFIGS.image_encoder)):
        (folder / part / "config.json").write_text(json.dumps({**config, **extras[part]}))
    configs = folder_configs(folder)
    assert configs.unet == SVD_XT.unet and configs.scheduler == SVD_XT.scheduler  # absent: the defaults
    loaded = load_svd_components(folder, device="cpu", dtype=torch.float32, configs=configs)
    assert loaded.vae.config.block_out_channels == TINY_CONFIGS.vae["block_out_channels"]
    assert loaded.image_encoder.config.hidden_size == TINY_CONFIGS.image_encoder["hidden_size"]
    assert {p.dtype for p in loaded.image_encoder.parameters()} == {torch.float32}
    (folder / "vae" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable JSON config"):
        folder_configs(folder)


# --------------------------------------------------------------------------- refusals


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="SVD-xt weights not found"):
        load_svd_components(tmp_path / "nowhere", device="cpu", dtype=torch.float32)


def test_missing_subfolder_names_the_file_and_where_it_goes(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", {"vae": sources["states"]["vae"]})
    with pytest.raises(CheckpointError, match=r"no 'image_encoder' subfolder.*model\.fp16\.safetensors.*image_encoder"):
        load_tiny(folder, dtype=torch.float32)


def test_missing_weight_file_names_it(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"])
    for name in SVD_WEIGHT_FILES["unet"]:
        (folder / "unet" / name).unlink()
    load_tiny(folder, dtype=torch.float32)  # the UNet is only read on request
    with pytest.raises(CheckpointError, match=r"No weights in .*unet: put diffusion_pytorch_model\.fp16\.safetensors"):
        load_tiny(folder, dtype=torch.float32, load_unet=True)


def test_foreign_weights_are_refused_with_what_they_look_like(tmp_path, sources):
    states = {**sources["states"], "vae": sources["states"]["image_encoder"]}
    with pytest.raises(CheckpointError, match=r"does not fit the SVD-xt VAE.*looks like a CLIP vision encoder"):
        load_tiny(write_folder(tmp_path / "svd", states), dtype=torch.float32)


def test_an_incomplete_unet_is_refused(tmp_path, sources):
    unet = dict(sources["states"]["unet"])
    del unet["conv_in.weight"]
    folder = write_folder(tmp_path / "svd", {**sources["states"], "unet": unet})
    with pytest.raises(CheckpointError, match=r"(?s)does not fit the stock SVD-xt UNet.*missing keys: conv_in\.weight"):
        load_tiny(folder, dtype=torch.float32, load_unet=True)


def test_full_size_configs_refuse_tiny_weights(tmp_path, sources):
    folder = write_folder(tmp_path / "svd", sources["states"], fp32=False)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_svd_components(folder, device="cpu", dtype=torch.float32, configs=SVD_XT)


# --------------------------------------------------------------------------- the real files


def worst_differences(ours: dict, theirs: dict) -> list[tuple[float, str]]:
    """Keys must match; returns the (max abs difference, key) pairs that are not zero, worst first."""
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:10]
    diffs = [((ours[k].float() - theirs[k].float()).abs().max().item(), k) for k in ours]
    return sorted((d for d in diffs if d[0] > 0), reverse=True)


def test_real_single_file_equals_the_fp16_variant_folder():
    """Spec 2.11: single-file support needs key-set equality and max|diff| = 0 against the fp16 variant.

    Needs the real weights (about 19 GB of RAM at the peak): set DICETALK_SVD_XT_DIR to the
    stable-video-diffusion-img2vid-xt folder holding both the diffusers subfolders and svd_xt.safetensors.
    """
    root = os.environ.get("DICETALK_SVD_XT_DIR", "")
    single = Path(root) / "svd_xt.safetensors"
    if not root or not single.is_file():
        pytest.skip("set DICETALK_SVD_XT_DIR to an SVD-xt diffusers folder that also holds svd_xt.safetensors")
    folder = load_svd_components(root, device="cpu", dtype=torch.float16)
    from_file = load_svd_components(single, device="cpu", dtype=torch.float16)
    report = {
        "vae": worst_differences(from_file.vae.state_dict(), folder.vae.state_dict()),
        "image_encoder": worst_differences(from_file.image_encoder.state_dict(), folder.image_encoder.state_dict()),
    }
    del folder, from_file
    gc.collect()
    unet_file = convert_unet(split_checkpoint(read_state_dict(single))["unet"])
    unet_file = {k: v.half() for k, v in unet_file.items()}
    report["unet"] = worst_differences(unet_file, read_state_dict(find_folder_weights(root, "unet")))
    print(
        f"\nsingle file vs fp16 folder, non-zero differences: { {part: (len(d), d[:5]) for part, d in report.items()} }"
    )
    assert not any(report.values())
