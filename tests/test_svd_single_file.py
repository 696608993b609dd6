"""The SGM -> diffusers / transformers key map of single-file SVD checkpoints (``svd_xt.safetensors``).

Without ComfyUI:
* full-size SGM key sets, built on the meta device from SGM's naming rules, map to exactly the 1428
  diffusers UNet keys of the spec manifest, the diffusers SVD-xt VAE keys and the HF ViT-H/14 keys,
  shape for shape;
* the CLIP tower mapped into transformers gives the outputs of an OpenCLIP-style reference forward
  (``nn.MultiheadAttention`` consuming the unsplit ``in_proj``, ``x @ proj``);
* a tiny single file loads through :func:`load_svd_components`, taking the VAE encoder and ``quant_conv``
  from the image-conditioning autoencoder when the file has one; foreign and incomplete files are refused.

With ComfyUI (``COMFYUI_DIR`` = a ComfyUI source folder; importing its model code needs ``einops``,
and ``comfy.clip_vision`` also ``torchvision``): tiny SGM models built by ComfyUI's own classes
(``UNetModel`` in its SVD configuration, the video VAE, the conditioning ``AutoencodingEngineLegacy``) with
random weights are saved under the checkpoint prefixes, loaded through our map into diffusers, and give
ComfyUI's outputs (float64, max abs error < 1e-10); the rule-built full-size key sets equal ComfyUI's;
our CLIP conversion equals ComfyUI's, tensor for tensor.

Run with ``-s`` to see the max abs errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from dicetalk_core.errors import CheckpointError
from dicetalk_core.loaders.checkpoints import load_strict
from dicetalk_core.loaders.svd import (
    SVD_XT_IMAGE_ENCODER_CONFIG,
    SVD_XT_SCHEDULER_CONFIG,
    SVD_XT_VAE_CONFIG,
    SVDConfigs,
    build_vae,
    load_svd_components,
)
from dicetalk_core.loaders.svd_single_file import (
    CLIP_PREFIX,
    CONDITIONING_VAE_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    check_svd_checkpoint,
    convert_clip_vision,
    convert_unet,
    convert_vae,
)

MANIFESTS = Path(__file__).resolve().parents[2] / "shared" / "spec" / "manifests"
F64 = torch.float64
EXACT = 1e-10  # float64 forward passes of the same weights in two implementations

# --------------------------------------------------------------------------- tiny sizes

TINY_UNET = {"channels": 32, "mult": (1, 2, 2), "context": 24, "adm": 24}
TINY_VAE = {"channels": 32, "mult": (1, 2)}
TINY_CLIP = {"width": 64, "layers": 2, "mlp": 128, "patch": 14, "image": 28, "proj": 24}
TINY_CLIP_HEADS = 4
TINY_CONFIGS = SVDConfigs(
    unet={
        "sample_size": 16,
        "in_channels": 8,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 2 + ["DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 2,
        "block_out_channels": [32, 64, 64],
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24,
        "layers_per_block": 2,
        "cross_attention_dim": 24,
        "transformer_layers_per_block": 1,
        "num_attention_heads": [2, 4, 4],
        "num_frames": 3,
    },
    vae={**SVD_XT_VAE_CONFIG, "block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2},
    image_encoder={
        **SVD_XT_IMAGE_ENCODER_CONFIG,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 28,
        "projection_dim": 24,
    },
    scheduler=SVD_XT_SCHEDULER_CONFIG,
)

# --------------------------------------------------------------------------- SGM naming rules
# Written from Stability's generative-models layout (and checked against ComfyUI's classes below).

Shapes = dict[str, tuple[int, ...]]


def _linear(s: Shapes, name: str, out: int, inp: int, bias: bool = True) -> None:
    s[f"{name}.weight"] = (out, inp)
    if bias:
        s[f"{name}.bias"] = (out,)


def _conv(s: Shapes, name: str, out: int, inp: int, kernel: tuple[int, ...] = (3, 3)) -> None:
    s[f"{name}.weight"] = (out, inp, *kernel)
    s[f"{name}.bias"] = (out,)


def _norm(s: Shapes, name: str, channels: int) -> None:
    s[f"{name}.weight"] = (channels,)
    s[f"{name}.bias"] = (channels,)


def sgm_unet_shapes(
    channels: int = 320, mult: tuple[int, ...] = (1, 2, 4, 4), context: int = 1024, adm: int = 768
) -> Shapes:
    """SGM ``VideoUNet`` keys of SVD (in 8, out 4, two resnets per level, attention on all but the last)."""
    s: Shapes = {}
    emb = 4 * channels

    def resblock(p: str, cin: int, cout: int) -> None:
        for stack, c, kernel in (("", cin, (3, 3)), ("time_stack.", cout, (3, 1, 1))):
            _norm(s, f"{p}{stack}in_layers.0", c)
            _conv(s, f"{p}{stack}in_layers.2", cout, c, kernel)
            _linear(s, f"{p}{stack}emb_layers.1", cout, emb)
            _norm(s, f"{p}{stack}out_layers.0", cout)
            _conv(s, f"{p}{stack}out_layers.3", cout, cout, kernel)
        if cin != cout:
            _conv(s, f"{p}skip_connection", cout, cin, (1, 1))
        s[f"{p}time_mixer.mix_factor"] = (1,)

    def basic_block(p: str, c: int, temporal: bool) -> None:
        if temporal:
            _norm(s, f"{p}norm_in", c)
            _linear(s, f"{p}ff_in.net.0.proj", 8 * c, c)
            _linear(s, f"{p}ff_in.net.2", c, 4 * c)
        for attn, kv in (("attn1", c), ("attn2", context)):
            _linear(s, f"{p}{attn}.to_q", c, c, bias=False)
            _linear(s, f"{p}{attn}.to_k", c, kv, bias=False)
            _linear(s, f"{p}{attn}.to_v", c, kv, bias=False)
            _linear(s, f"{p}{attn}.to_out.0", c, c)
        _linear(s, f"{p}ff.net.0.proj", 8 * c, c)
        _linear(s, f"{p}ff.net.2", c, 4 * c)
        for norm in ("norm1", "norm2", "norm3"):
            _norm(s, f"{p}{norm}", c)

    def transformer(p: str, c: int) -> None:
        _norm(s, f"{p}norm", c)
        _linear(s, f"{p}proj_in", c, c)
        _linear(s, f"{p}proj_out", c, c)
        basic_block(f"{p}transformer_blocks.0.", c, temporal=False)
        basic_block(f"{p}time_stack.0.", c, temporal=True)
        _linear(s, f"{p}time_pos_embed.0", 4 * c, c)
        _linear(s, f"{p}time_pos_embed.2", c, 4 * c)
        s[f"{p}time_mixer.mix_factor"] = (1,)

    _linear(s, "time_embed.0", emb, channels)
    _linear(s, "time_embed.2", emb, emb)
    _linear(s, "label_emb.0.0", emb, adm)
    _linear(s, "label_emb.0.2", emb, emb)
    _conv(s, "input_blocks.0.0", channels, 8)
    widths = [channels * m for m in mult]
    last = len(widths) - 1
    skips, cin, block = [channels], channels, 1
    for level, width in enumerate(widths):
        for _ in range(2):
            resblock(f"input_blocks.{block}.0.", cin, width)
            if level < last:
                transformer(f"input_blocks.{block}.1.", width)
            skips.append(width)
            cin, block = width, block + 1
        if level < last:
            _conv(s, f"input_blocks.{block}.0.op", width, width)
            skips.append(width)
            block += 1
    resblock("middle_block.0.", cin, cin)
    transformer("middle_block.1.", cin)
    resblock("middle_block.2.", cin, cin)
    block = 0
    for level in reversed(range(len(widths))):
        for layer in range(3):
            resblock(f"output_blocks.{block}.0.", cin + skips.pop(), widths[level])
            cin, sub = widths[level], 1
            if level < last:
                transformer(f"output_blocks.{block}.1.", cin)
                sub = 2
            if layer == 2 and level > 0:
                _conv(s, f"output_blocks.{block}.{sub}.conv", cin, cin)
            block += 1
    _norm(s, "out.0", channels)
    _conv(s, "out.2", 4, channels)
    return s


def sgm_vae_shapes(channels: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4)) -> Shapes:
    """SGM ``AutoencodingEngine`` keys of SVD: image encoder, temporal ``VideoDecoder``, no quant_conv."""
    s: Shapes = {}

    def resnet(p: str, cin: int, cout: int, video: bool) -> None:
        _norm(s, f"{p}norm1", cin)
        _conv(s, f"{p}conv1", cout, cin)
        _norm(s, f"{p}norm2", cout)
        _conv(s, f"{p}conv2", cout, cout)
        if cin != cout:
            _conv(s, f"{p}nin_shortcut", cout, cin, (1, 1))
        if video:
            s[f"{p}mix_factor"] = (1,)
            _norm(s, f"{p}time_stack.in_layers.0", cout)
            _conv(s, f"{p}time_stack.in_layers.2", cout, cout, (3, 1, 1))
            _norm(s, f"{p}time_stack.out_layers.0", cout)
            _conv(s, f"{p}time_stack.out_layers.3", cout, cout, (3, 1, 1))

    def mid(p: str, c: int, video: bool) -> None:
        resnet(f"{p}mid.block_1.", c, c, video)
        _norm(s, f"{p}mid.attn_1.norm", c)
        for name in ("q", "k", "v", "proj_out"):
            _conv(s, f"{p}mid.attn_1.{name}", c, c, (1, 1))
        resnet(f"{p}mid.block_2.", c, c, video)

    widths = [channels * m for m in mult]
    _conv(s, "encoder.conv_in", channels, 3)
    cin = channels
    for level, width in enumerate(widths):
        for block in range(2):
            resnet(f"encoder.down.{level}.block.{block}.", cin, width, video=False)
            cin = width
        if level < len(widths) - 1:
            _conv(s, f"encoder.down.{level}.downsample.conv", width, width)
    mid("encoder.", cin, video=False)
    _norm(s, "encoder.norm_out", cin)
    _conv(s, "encoder.conv_out", 8, cin)
    _conv(s, "decoder.conv_in", cin, 4)
    mid("decoder.", cin, video=True)
    for level in reversed(range(len(widths))):
        for block in range(3):
            resnet(f"decoder.up.{level}.block.{block}.", cin, widths[level], video=True)
            cin = widths[level]
        if level > 0:
            _conv(s, f"decoder.up.{level}.upsample.conv", cin, cin)
    _norm(s, "decoder.norm_out", cin)
    _conv(s, "decoder.conv_out", 3, cin)
    _conv(s, "decoder.conv_out.time_mix_conv", 3, 3, (3, 1, 1))
    return s


def openclip_visual_shapes(
    width: int = 1280, layers: int = 32, mlp: int = 5120, patch: int = 14, image: int = 224, proj: int = 1024
) -> Shapes:
    """OpenCLIP ``VisionTransformer`` keys (ViT-H/14 by default)."""
    s: Shapes = {
        "class_embedding": (width,),
        "positional_embedding": ((image // patch) ** 2 + 1, width),
        "proj": (width, proj),
        "conv1.weight": (width, 3, patch, patch),
    }
    _norm(s, "ln_pre", width)
    _norm(s, "ln_post", width)
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        _norm(s, f"{p}ln_1", width)
        _norm(s, f"{p}ln_2", width)
        s[f"{p}attn.in_proj_weight"] = (3 * width, width)
        s[f"{p}attn.in_proj_bias"] = (3 * width,)
        _linear(s, f"{p}attn.out_proj", width, width)
        _linear(s, f"{p}mlp.c_fc", mlp, width)
        _linear(s, f"{p}mlp.c_proj", width, mlp)
    return s


def on_meta(shapes: Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


def random_tensors(shapes: Shapes, seed: int, dtype: torch.dtype = F64) -> dict[str, torch.Tensor]:
    """Random values (scale 0.2; 1-D weights, i.e. norm scales, around 1) that keep tiny nets well conditioned."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in sorted(shapes.items()):
        tensor = torch.randn(shape, generator=generator, dtype=dtype) * 0.2
        out[key] = tensor + 1.0 if len(shape) == 1 and key.endswith("weight") else tensor
    return out


def shapes_of(state: dict[str, torch.Tensor]) -> Shapes:
    return {k: tuple(v.shape) for k, v in state.items()}


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def same_values(source: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor]) -> bool:
    """Every source value appears exactly once among the mapped ones (nothing dropped or duplicated)."""
    flat = [torch.cat([t.reshape(-1) for t in d.values()]).sort().values for d in (source, mapped)]
    return flat[0].shape == flat[1].shape and torch.equal(*flat)


# --------------------------------------------------------------------------- full-size key sets (no ComfyUI)


def test_full_size_unet_map_gives_the_manifest_keys():
    path = MANIFESTS / "unet.pth.json"
    if not path.is_file():
        pytest.skip(f"spec manifest {path} not available")
    manifest = json.loads(path.read_text())
    stock = {k: tuple(v["shape"]) for k, v in manifest["keys"].items() if v["origin"] == "stock_svd"}
    mapped = convert_unet(on_meta(sgm_unet_shapes()))
    assert len(stock) == len(mapped) == 1428
    assert shapes_of(mapped) == stock


def test_full_size_vae_map_gives_the_diffusers_keys():
    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder.from_config(SVD_XT_VAE_CONFIG)
    mapped = convert_vae(on_meta(sgm_vae_shapes()))
    assert shapes_of(mapped) == shapes_of(vae.state_dict())
    assert sum(t.numel() for t in mapped.values()) == 97_742_847


def test_full_size_clip_map_gives_the_transformers_keys():
    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_XT_IMAGE_ENCODER_CONFIG))
    mapped = convert_clip_vision(on_meta(openclip_visual_shapes()))
    assert shapes_of(mapped) == shapes_of(encoder.state_dict())
    assert sum(t.numel() for t in mapped.values()) == 632_076_800


# --------------------------------------------------------------------------- CLIP vs an OpenCLIP-style forward


def openclip_forward(state: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int):
    """OpenCLIP's ViT forward on OpenCLIP-named tensors: (tokens after the last block, image embedding)."""
    width = state["class_embedding"].shape[0]
    conv = state["conv1.weight"]
    x = F.conv2d(pixels, conv, stride=conv.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([state["class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + state["positional_embedding"]

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (width,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-5)

    x = ln(x, "ln_pre")
    i = 0
    while f"transformer.resblocks.{i}.ln_1.weight" in state:
        p = f"transformer.resblocks.{i}."
        attention = nn.MultiheadAttention(width, heads, batch_first=True, dtype=pixels.dtype)
        attention.load_state_dict(
            {
                "in_proj_weight": state[f"{p}attn.in_proj_weight"],
                "in_proj_bias": state[f"{p}attn.in_proj_bias"],
                "out_proj.weight": state[f"{p}attn.out_proj.weight"],
                "out_proj.bias": state[f"{p}attn.out_proj.bias"],
            }
        )
        y = ln(x, f"{p}ln_1")
        x = x + attention(y, y, y, need_weights=False)[0]
        y = F.gelu(F.linear(ln(x, f"{p}ln_2"), state[f"{p}mlp.c_fc.weight"], state[f"{p}mlp.c_fc.bias"]))
        x = x + F.linear(y, state[f"{p}mlp.c_proj.weight"], state[f"{p}mlp.c_proj.bias"])
        i += 1
    return x, ln(x[:, 0], "ln_post") @ state["proj"]


def tiny_hf_clip(mapped: dict[str, torch.Tensor]) -> CLIPVisionModelWithProjection:
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CONFIGS.image_encoder)).to(F64).eval()
    load_strict(encoder, mapped, source="test", what="tiny CLIP")
    return encoder


def test_clip_map_matches_an_openclip_reference_forward():
    sgm = random_tensors(openclip_visual_shapes(**TINY_CLIP), seed=1)
    mapped = convert_clip_vision(sgm)
    assert same_values(sgm, mapped)
    encoder = tiny_hf_clip(mapped)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.no_grad():
        out = encoder(pixel_values=pixels)
        tokens, embeds = openclip_forward(sgm, pixels, heads=TINY_CLIP_HEADS)
    errors = {"tokens": max_err(out.last_hidden_state, tokens), "image_embeds": max_err(out.image_embeds, embeds)}
    print(f"\nCLIP vs OpenCLIP reference (float64): {errors}")
    assert max(errors.values()) < EXACT
    assert embeds.abs().max() > 0.1  # a real signal, not a vanishing one


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("shapes", "convert", "key"),
    [
        (lambda: sgm_unet_shapes(**TINY_UNET), convert_unet, "input_blocks.1.0.in_layers.9.weight"),
        (lambda: sgm_unet_shapes(**TINY_UNET), convert_unet, "middle_block.3.norm.weight"),
        (lambda: sgm_vae_shapes(**TINY_VAE), convert_vae, "decoder.up.0.attn.0.q.weight"),
        (lambda: openclip_visual_shapes(**TINY_CLIP), convert_clip_vision, "transformer.resblocks.0.ls_1.gamma"),
    ],
)
def test_unknown_keys_are_reported(shapes, convert, key):
    state = on_meta(shapes())
    state[key] = torch.empty(4, device="meta")
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        convert(state)


def test_an_sd15_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    save_file(
        {
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "first_stage_model.decoder.mid.block_1.norm1.weight": torch.zeros(512),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 768),
        },
        path,
    )
    with pytest.raises(CheckpointError, match=r"not a single-file Stable Video Diffusion.*Stable Diffusion 1\.x"):
        load_svd_components(path, device="cpu", dtype=torch.float32)


def test_the_image_decoder_variant_is_named():
    keys = [
        UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.0.weight",
        CLIP_PREFIX + "proj",
        VAE_PREFIX + "decoder.mid.block_1.norm1.weight",
    ]
    with pytest.raises(CheckpointError, match=r"temporal VAE decoder.*svd_xt_image_decoder"):
        check_svd_checkpoint(keys, source="svd_xt_image_decoder.safetensors")


# --------------------------------------------------------------------------- a tiny single file end to end


def write_single_file(path: Path, unet: dict, vae: dict, clip: dict, conditioning: dict | None = None) -> Path:
    """A single-file checkpoint: the parts under their prefixes, plus text-tower leftovers to be ignored."""
    state = {UNET_PREFIX + k: v for k, v in unet.items()}
    state |= {VAE_PREFIX + k: v for k, v in vae.items()}
    state |= {CLIP_PREFIX + k: v for k, v in clip.items()}
    state |= {CONDITIONING_VAE_PREFIX + k: v for k, v in (conditioning or {}).items()}
    state["conditioner.embedders.0.open_clip.model.token_embedding.weight"] = torch.zeros(8, 4, dtype=F64)
    state["conditioner.embedders.0.open_clip.model.ln_final.weight"] = torch.zeros(4, dtype=F64)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def conditioning_vae_shapes(channels: int, mult: tuple[int, ...]) -> Shapes:
    """SGM's image-conditioning autoencoder (SD kl-f8): same encoder, quant_conv, a plain decoder (abridged)."""
    s = {k: v for k, v in sgm_vae_shapes(channels, mult).items() if k.startswith("encoder.")}
    _conv(s, "quant_conv", 8, 8, (1, 1))
    _conv(s, "post_quant_conv", 4, 4, (1, 1))
    _conv(s, "decoder.conv_in", channels * mult[-1], 4)
    return s


@pytest.fixture(scope="module")
def rule_built_file(tmp_path_factory):
    parts = SimpleNamespace(
        unet=random_tensors(sgm_unet_shapes(**TINY_UNET), seed=3),
        vae=random_tensors(sgm_vae_shapes(**TINY_VAE), seed=4),
        clip=random_tensors(openclip_visual_shapes(**TINY_CLIP), seed=5),
    )
    parts.path = write_single_file(
        tmp_path_factory.mktemp("svd") / "svd_xt.safetensors", parts.unet, parts.vae, parts.clip
    )
    return parts


def test_single_file_loads_with_every_tensor_in_place(rule_built_file):
    parts = rule_built_file
    loaded = load_svd_components(
        parts.path, device="cpu", dtype=F64, load_unet=True, fp16_weights=False, configs=TINY_CONFIGS
    )
    assert loaded.unet_config == dict(TINY_CONFIGS.unet)
    expected = convert_unet(parts.unet)
    assert set(loaded.unet_state) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in loaded.unet_state.items())
    vae = loaded.vae.state_dict()
    assert all(torch.equal(v, vae[k]) for k, v in convert_vae(parts.vae).items())
    assert torch.equal(vae["quant_conv.weight"][:, :, 0, 0], torch.eye(8, dtype=F64))  # SGM has none
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        embeds = loaded.image_encoder(pixel_values=pixels).image_embeds
        _, reference = openclip_forward(parts.clip, pixels, heads=TINY_CLIP_HEADS)
    assert max_err(embeds, reference) < EXACT
    assert not loaded.vae.training and not loaded.image_encoder.training
    assert loaded.scheduler.config.prediction_type == "v_prediction"


def test_single_file_weights_are_rounded_through_fp16(rule_built_file):
    parts = rule_built_file
    loaded = load_svd_components(parts.path, device="cpu", dtype=torch.float32, configs=TINY_CONFIGS)
    assert loaded.unet_state is None
    expected = convert_vae(parts.vae)["decoder.conv_in.weight"].to(torch.float16).to(torch.float32)
    got = loaded.vae.decoder.conv_in.weight
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert not torch.equal(got, convert_vae(parts.vae)["decoder.conv_in.weight"].float())


def test_single_file_encodes_with_the_conditioning_autoencoder(tmp_path, rule_built_file):
    parts = rule_built_file
    conditioning = random_tensors(conditioning_vae_shapes(**TINY_VAE), seed=12)
    path = write_single_file(tmp_path / "svd_xt.safetensors", parts.unet, parts.vae, parts.clip, conditioning)
    vae = load_svd_components(path, device="cpu", dtype=F64, fp16_weights=False, configs=TINY_CONFIGS).vae
    loaded = vae.state_dict()
    from_conditioning = convert_vae(
        {k: v for k, v in conditioning.items() if k.startswith(("encoder.", "quant_conv"))}
        | {k: v for k, v in parts.vae.items() if not k.startswith("encoder.")}
    )
    assert set(loaded) == set(from_conditioning)
    assert all(torch.equal(loaded[k], v) for k, v in from_conditioning.items())
    assert torch.equal(loaded["quant_conv.weight"], conditioning["quant_conv.weight"])
    assert not torch.equal(loaded["encoder.conv_in.weight"], parts.vae["encoder.conv_in.weight"])


def test_single_file_of_another_shape_is_refused(rule_built_file):
    with pytest.raises(CheckpointError, match="does not fit the SVD-xt VAE"):
        load_svd_components(rule_built_file.path, device="cpu", dtype=F64)  # tiny file, SVD-xt configs


# --------------------------------------------------------------------------- ComfyUI cross-checks


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's model classes, imported from ``$COMFYUI_DIR``; skips when unavailable."""
    root = os.environ.get("COMFYUI_DIR", "")
    if not root or not (Path(root) / "comfy" / "cli_args.py").is_file():
        pytest.skip(
            "ComfyUI cross-checks skipped: set COMFYUI_DIR to a ComfyUI source folder "
            "(a checkout or an unpacked release of ComfyUI)."
        )
    if root not in sys.path:
        sys.path.append(root)
    try:
        from comfy.cli_args import args

        args.cpu = True  # before comfy.model_management is imported: no CUDA probing
        import comfy.ops
        from comfy.ldm.models.autoencoder import AutoencodingEngine, AutoencodingEngineLegacy
        from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep, UNetModel
    except ImportError as err:
        pytest.skip(f"ComfyUI at {root} cannot be imported ({err}); its model code needs einops.")
    return SimpleNamespace(
        root=root,
        ops=comfy.ops,
        UNetModel=UNetModel,
        Timestep=Timestep,
        AutoencodingEngine=AutoencodingEngine,
        AutoencodingEngineLegacy=AutoencodingEngineLegacy,
    )


def comfy_unet_config(
    channels: int = 320,
    mult: tuple[int, ...] = (1, 2, 4, 4),
    head_channels: int = 64,
    context: int = 1024,
    adm: int = 768,
) -> dict:
    """What ComfyUI builds for SVD (``model_detection.detect_unet_config`` + ``supported_models.SVD_img2vid``)."""
    levels = len(mult)
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "use_spatial_transformer": True,
        "legacy": False,
        "num_classes": "sequential",
        "adm_in_channels": adm,
        "in_channels": 8,
        "out_channels": 4,
        "model_channels": channels,
        "num_res_blocks": [2] * levels,
        "channel_mult": list(mult),
        "transformer_depth": [1, 1] * (levels - 1) + [0, 0],
        "transformer_depth_output": [1, 1, 1] * (levels - 1) + [0, 0, 0],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": True,
        "context_dim": context,
        "extra_ff_mix_layer": True,
        "use_spatial_context": True,
        "merge_strategy": "learned_with_images",
        "merge_factor": 0.0,
        "video_kernel_size": [3, 1, 1],
        "use_temporal_resblock": True,
        "use_temporal_attention": True,
        "disable_temporal_crossattention": False,
        "num_heads": -1,
        "num_head_channels": head_channels,
        "attn_precision": None,
    }


def comfy_vae_encoder_config(channels: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4)) -> dict:
    return {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": channels,
        "ch_mult": list(mult),
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def comfy_vae(comfy, channels: int = 128, mult: tuple[int, ...] = (1, 2, 4, 4)):
    """ComfyUI's SVD VAE (``comfy/sd.py``: ``decoder.mid.block_1.mix_factor`` in the checkpoint)."""
    encoder = comfy_vae_encoder_config(channels, mult)
    decoder = {**encoder, "video_kernel_size": [3, 1, 1], "alpha": 0.0}
    return comfy.AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": encoder},
        decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder", "params": decoder},
    )


def test_rule_built_key_sets_equal_comfyui_full_size(comfy):
    with torch.device("meta"):
        unet = comfy.UNetModel(**comfy_unet_config(), operations=comfy.ops.disable_weight_init)
        vae = comfy_vae(comfy)
    assert shapes_of(unet.state_dict()) == sgm_unet_shapes()
    assert shapes_of(vae.state_dict()) == sgm_vae_shapes()


def randomize(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every tensor of ``module`` (norms around 1, mixing factors included)."""
    values = random_tensors(shapes_of(module.state_dict()), seed)
    module.load_state_dict(values)
    return values


@pytest.fixture(scope="module")
def comfy_built(comfy, tmp_path_factory):
    """Tiny ComfyUI SVD models with random weights, saved as one single file and loaded by our loader."""
    unet = (
        comfy.UNetModel(
            **comfy_unet_config(32, (1, 2, 2), 16, 24, 24), operations=comfy.ops.disable_weight_init, dtype=F64
        )
        .to(F64)
        .eval()
    )
    vae = comfy_vae(comfy, 32, (1, 2)).to(F64).eval()
    conditioning = (
        comfy.AutoencodingEngineLegacy(
            embed_dim=4,
            ddconfig=comfy_vae_encoder_config(32, (1, 2)),
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        )
        .to(F64)
        .eval()
    )
    clip = random_tensors(openclip_visual_shapes(**TINY_CLIP), seed=7)
    parts = SimpleNamespace(comfy=comfy, unet=unet, vae=vae, conditioning=conditioning, clip=clip)
    parts.unet_sgm, parts.vae_sgm = randomize(unet, 8), randomize(vae, 9)
    parts.conditioning_sgm = randomize(conditioning, 10)
    path = write_single_file(
        tmp_path_factory.mktemp("comfy") / "svd_xt.safetensors",
        parts.unet_sgm,
        parts.vae_sgm,
        parts.clip,
        parts.conditioning_sgm,
    )
    parts.loaded = load_svd_components(
        path, device="cpu", dtype=F64, load_unet=True, fp16_weights=False, configs=TINY_CONFIGS
    )
    return parts


def test_unet_matches_comfyui(comfy_built):
    parts = comfy_built
    state = parts.loaded.unet_state
    assert same_values(parts.unet_sgm, state)
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(parts.loaded.unet_config)
    load_strict(unet, state, source="test", what="tiny SVD UNet", assign=True).eval()
    # diffusers' SVD resnets use GroupNorm eps 1e-6 where SGM uses 1e-5: a model-definition difference,
    # not a weight-mapping one. Align it so the comparison isolates the mapping.
    for name, module in unet.named_modules():
        if isinstance(module, nn.GroupNorm) and name.rsplit(".", 1)[-1] in ("norm1", "norm2"):
            module.eps = 1e-5
    frames, generator = 3, torch.Generator().manual_seed(10)
    sample = torch.randn(1, frames, 8, 16, 16, generator=generator, dtype=F64)
    context = torch.randn(1, 1, 24, generator=generator, dtype=F64)
    timestep = torch.tensor([0.7], dtype=F64)
    added_time_ids = torch.tensor([[5.0, 3.0, 0.02]], dtype=F64)  # fps - 1, motion bucket, noise aug
    with torch.no_grad():
        ours = unet(sample, timestep, context, added_time_ids).sample[0]
        embed = parts.comfy.Timestep(8)  # what comfy.model_base.SVD_img2vid.encode_adm does (at 256)
        y = torch.cat([embed(added_time_ids[:, i]) for i in range(3)], dim=1).to(F64)
        theirs = parts.unet(
            sample[0],
            timestep.repeat(frames),
            context.repeat(frames, 1, 1),
            y.repeat(frames, 1),
            num_video_frames=frames,
            image_only_indicator=torch.zeros(1, frames, dtype=F64),
        )
    error = max_err(ours, theirs)
    print(
        f"\nUNet vs ComfyUI (float64, {len(state)} tensors): max abs error {error:.3g}, "
        f"output max {theirs.abs().max():.3g}"
    )
    assert error < EXACT


def test_vae_matches_comfyui(comfy_built):
    """Decoder: ComfyUI's SVD first stage. Encoder: the file's conditioning autoencoder (with quant_conv) and,
    for files without one, ComfyUI's first-stage encoder (no quant_conv)."""
    parts = comfy_built
    vae = parts.loaded.vae
    used = {k: v for k, v in parts.conditioning_sgm.items() if k.startswith(("encoder.", "quant_conv."))}
    used |= {k: v for k, v in parts.vae_sgm.items() if k.startswith("decoder.")}
    assert same_values(used, vae.state_dict())
    first_stage_only = build_vae(convert_vae(parts.vae_sgm), source="test", config=TINY_CONFIGS.vae)
    generator = torch.Generator().manual_seed(11)
    frames = torch.randn(3, 3, 16, 16, generator=generator, dtype=F64)
    latents = torch.randn(3, 4, 8, 8, generator=generator, dtype=F64)
    with torch.no_grad():
        dist = vae.encode(frames).latent_dist
        moments = parts.conditioning.quant_conv(parts.conditioning.encoder(frames))
        first_stage = first_stage_only.encode(frames).latent_dist
        first_mean, first_logvar = parts.vae.encoder(frames).chunk(2, dim=1)
        decoded = vae.decode(latents, num_frames=3).sample
        reference = parts.vae.decode(latents)  # ComfyUI decodes the whole batch as one clip
        errors = {
            "latent mean": max_err(dist.mean, parts.conditioning.encode(frames)),
            "latent logvar": max_err(dist.logvar, moments.chunk(2, dim=1)[1].clamp(-30, 20)),
            "first-stage latent mean": max_err(first_stage.mean, first_mean),
            "first-stage latent logvar": max_err(first_stage.logvar, first_logvar.clamp(-30, 20)),
            "decoded": max_err(decoded, reference),
        }
    print(f"\nVAE vs ComfyUI (float64): {errors}")
    assert max(errors.values()) < EXACT


def test_clip_conversion_equals_comfyui(comfy_built):
    parts = comfy_built
    try:
        from comfy.clip_vision import convert_to_transformers
    except ImportError as err:
        pytest.skip(f"comfy.clip_vision cannot be imported ({err}); it needs torchvision.")
    theirs = convert_to_transformers({CLIP_PREFIX + k: v for k, v in parts.clip.items()}, CLIP_PREFIX)
    ours = convert_clip_vision(parts.clip)
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    loaded = parts.loaded.image_encoder.state_dict()
    assert all(torch.equal(loaded[k], theirs[k]) for k in theirs)
