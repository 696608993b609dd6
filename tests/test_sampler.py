"""The exact routing and the sampler's waste removal compute what the official code computes.

The golden parity suite is the hard check against the official numbers; these tests pin down each
change on its own with tiny random models: the compact temporal/spatial contexts against diffusers'
stock IP-adapter processor path, the once-per-level masks against the stock resampling, the bounded
pose-guider batch, and the batched VAE decode against one clip per call.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from diffusers.image_processor import IPAdapterMaskProcessor

from dicetalk_core.models import PoseGuider
from dicetalk_core.models.layouts import TINY
from dicetalk_core.pipeline import POSE_GUIDER_BATCH, pose_features
from dicetalk_core.sampler import SamplerSettings
from dicetalk_core.unet_adapters import DiceConditioning, install_dice_adapters
from dicetalk_core.vae_decode import decode_latents

CROSS = TINY.unet["cross_attention_dim"]
TOKENS = TINY.tokens


def tiny_unet(frames: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(**{**TINY.unet, "num_frames": frames})
    return install_dice_adapters(unet, num_tokens=(TOKENS, TOKENS)).eval()


def unet_inputs(branches: int, frames: int = 4, size: int = 8, masked: bool = True, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = branches * frames
    mask = torch.zeros(1, 1, size * 8, size * 8)
    mask[..., 10:50, 16:40] = 1.0
    args = (torch.randn(branches, frames, 8, size, size, generator=g), torch.tensor(0.7))
    kwargs = dict(
        image_embeds=torch.randn(n, 1, CROSS, generator=g),
        adapter_tokens=[torch.randn(n, TOKENS, CROSS, generator=g), torch.randn(n, TOKENS, CROSS, generator=g)],
        added_time_ids=torch.tensor([[12.5, 8.0, 16.0]] * branches),
        pose_features=torch.randn(1, 32, size, size, generator=g),
        masks=[mask, mask] if masked else None,
    )
    return args, kwargs


@pytest.mark.parametrize("branches", [1, 3])
@pytest.mark.parametrize("masked", [True, False])
def test_exact_routing_matches_the_stock_processor_path(branches, masked):
    unet = tiny_unet()
    unet.set_adapter_scales(0.6, 1.4)
    args, kwargs = unet_inputs(branches, masked=masked)
    with torch.no_grad():
        unet.set_routing("reference")
        reference = unet(*args, **kwargs).sample
        unet.set_routing("exact")
        exact = unet(*args, **kwargs).sample
    torch.testing.assert_close(exact, reference, atol=1e-6, rtol=0)


def test_a_zero_adapter_scale_switches_the_adapter_off_in_both_routings():
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    outputs = {}
    with torch.no_grad():
        for routing in ("reference", "exact"):
            unet.set_routing(routing)
            unet.set_adapter_scales(0.0, 1.0)
            outputs[routing] = unet(*args, **kwargs).sample
            kwargs["adapter_tokens"][0] = torch.randn_like(kwargs["adapter_tokens"][0])
            torch.testing.assert_close(unet(*args, **kwargs).sample, outputs[routing], atol=0, rtol=0)
    torch.testing.assert_close(outputs["exact"], outputs["reference"], atol=1e-6, rtol=0)


def test_pose_features_broadcast_equals_per_frame_copies():
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    with torch.no_grad():
        broadcast = unet(*args, **kwargs).sample
        kwargs["pose_features"] = kwargs["pose_features"][:, None].expand(3, 4, -1, -1, -1)
        copies = unet(*args, **kwargs).sample
    assert torch.equal(broadcast, copies)


def test_unknown_routing_is_refused():
    with pytest.raises(ValueError, match="routing"):
        tiny_unet().set_routing("fast")


@pytest.mark.parametrize("queries", [64, 16, 4, 1])
def test_level_masks_are_the_stock_resampling_broadcast(queries):
    mask = torch.rand(1, 1, 64, 64)
    cond = DiceConditioning(torch.zeros(6, 1, 4), [torch.zeros(6, 2, 4)] * 2, [mask, mask])
    like = torch.zeros(1, dtype=torch.float32)
    small = cond.level_mask(0, queries, like)
    stock = IPAdapterMaskProcessor.downsample(mask[:, 0], 6, queries, 5)
    assert small.shape == (1, queries, 1)
    assert torch.equal(small.expand_as(stock), stock)
    assert cond.level_mask(0, queries, like) is small  # resampled once per level and call


def test_pose_guider_runs_a_bounded_batch_for_long_clips():
    torch.manual_seed(3)
    guider = PoseGuider(32, (8, 16)).eval()
    batches = []
    guider.conv_in.register_forward_hook(lambda module, inputs, output: batches.append(inputs[0].shape[0]))
    mask = torch.rand(3, 32, 32)
    long = pose_features(guider, mask, 500)
    official = guider.forward_video(mask[None, :, None].expand(1, -1, 30, -1, -1).contiguous())[:, :, 0]
    assert batches[0] == POSE_GUIDER_BATCH
    assert long.shape == (1, 32, 16, 16)
    torch.testing.assert_close(long, official, atol=1e-6, rtol=0)


def tiny_vae() -> AutoencoderKLTemporalDecoder:
    torch.manual_seed(4)
    return AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=1
    ).eval()


@pytest.mark.parametrize("clips_per_call", [2, 3, "auto"])
def test_several_decoder_clips_per_call_give_the_same_frames(clips_per_call):
    vae = tiny_vae()
    latents = torch.randn(1, 13, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    one = decode_latents(vae, latents, num_frames=9, chunk_size=4, clips_per_call=1)
    many = decode_latents(vae, latents, num_frames=9, chunk_size=4, clips_per_call=clips_per_call)
    assert one.shape == (9, 3, 8, 8)
    torch.testing.assert_close(many, one, atol=1e-6, rtol=0)


def test_decode_keeps_the_official_clip_boundaries():
    """Frames 0-3 and 4-7 are separate temporal clips: changing frame 5 leaves frames 0-3 untouched."""
    vae = tiny_vae()
    latents = torch.randn(1, 13, 4, 4, 4, generator=torch.Generator().manual_seed(6))
    changed = latents.clone()
    changed[0, 5] += 1.0
    a = decode_latents(vae, latents, num_frames=9, chunk_size=4, clips_per_call=3)
    b = decode_latents(vae, changed, num_frames=9, chunk_size=4, clips_per_call=3)
    assert torch.equal(a[:4], b[:4])
    assert not torch.equal(a[4:8], b[4:8])


def test_window_count_matches_the_windows_the_sampler_runs():
    settings = SamplerSettings(steps=3, window=4, overlap=1)
    assert settings.window_count(7) == 3 * len(settings.windows(7 + 4, 0)) == 12
    assert SamplerSettings().window_count(500) == 25 * 21  # official: ceil(525 / 25) windows per step
