"""Row-strip temporal convolutions: the whole-tensor result up to float rounding; modules left as they were."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import nn

from dicetalk_core.temporal_conv import conv_in_strips, is_pointwise_in_space, strip_rows, temporal_convs_in_strips
from dicetalk_core.vae_decode import decode_latents


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "bias", "batch"),
    [(32, 32, True, 1), (16, 8, False, 2), (3, 3, True, 1), (64, 32, True, 1)],
)
def test_strips_give_the_whole_convolution_up_to_rounding(in_channels, out_channels, bias, batch):
    torch.manual_seed(0)
    conv = nn.Conv3d(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), bias=bias)
    video = torch.randn(batch, in_channels, 5, 23, 17)
    budget = in_channels * 3 * 5 * 17 * 4 * batch * 4  # four rows per strip: 6 strips, the last one short
    assert strip_rows(conv, video, budget) == 4
    with torch.no_grad():
        whole = conv(video)
        torch.testing.assert_close(conv_in_strips(conv, video, budget), whole, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(conv_in_strips(conv, video, 1), whole, rtol=1e-6, atol=1e-6)  # a row per strip
        assert torch.equal(conv_in_strips(conv, video, 2**30), whole)  # within the budget: the same call


def test_only_spatially_pointwise_convolutions_qualify():
    assert is_pointwise_in_space(nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0)))
    assert is_pointwise_in_space(nn.Conv3d(4, 4, 1))
    assert not is_pointwise_in_space(nn.Conv3d(4, 4, 3, padding=1))
    assert not is_pointwise_in_space(nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 1, 1)))
    assert not is_pointwise_in_space(nn.Conv3d(4, 4, (1, 1, 1), stride=(1, 2, 2)))
    assert not is_pointwise_in_space(nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0), groups=2))


def tiny_vae() -> AutoencoderKLTemporalDecoder:
    torch.manual_seed(3)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=1
    ).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("mix_factor"):  # 0 at init would hide the temporal branch's effect
                param.fill_(0.4)
    return vae


def test_the_decoder_in_strips_gives_the_same_frames_and_is_restored_afterwards():
    vae = tiny_vae()
    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    strip_calls = []
    temporal = vae.decoder.up_blocks[0].resnets[0].temporal_res_block.conv1
    handle = temporal.register_forward_hook(lambda *_: strip_calls.append(1))
    with torch.no_grad():
        whole = vae.decode(latents, num_frames=6).sample
        calls_whole = len(strip_calls)
        with temporal_convs_in_strips(vae.decoder, budget_bytes=1) as switched:
            stripped = vae.decode(latents, num_frames=6).sample
        again = vae.decode(latents, num_frames=6).sample
    handle.remove()
    conv3d = [m for m in vae.decoder.modules() if isinstance(m, nn.Conv3d)]
    assert switched == len(conv3d) > 0
    torch.testing.assert_close(stripped, whole, rtol=1e-6, atol=1e-6)
    assert not torch.equal(stripped, vae.decode(latents * 0.5, num_frames=6).sample)
    assert torch.equal(again, whole)
    assert calls_whole == 1 and len(strip_calls) == 3  # hooks still fire, once per module call
    assert all("forward" not in vars(conv) for conv in conv3d)


def test_an_instance_forward_set_before_is_put_back():
    conv = nn.Conv3d(2, 2, (3, 1, 1), padding=(1, 0, 0))
    calls = []

    def own(video: torch.Tensor) -> torch.Tensor:
        calls.append(video.shape[-2])
        return nn.Conv3d.forward(conv, video)

    conv.forward = own
    video = torch.randn(1, 2, 3, 4, 5)
    with torch.no_grad(), temporal_convs_in_strips(conv, budget_bytes=1):
        conv(video)
    assert calls == [1, 1, 1, 1]  # the strips went through the module's own forward
    assert conv.forward is own


def test_decode_latents_matches_the_stock_decoder_clip_by_clip():
    vae = tiny_vae()
    latents = torch.randn(1, 9, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    frames = decode_latents(vae, latents, num_frames=7, chunk_size=4, clips_per_call=1)
    with torch.no_grad():
        flat = latents[0] / vae.config.scaling_factor
        stock = torch.cat([vae.decode(flat[i : i + 4], num_frames=4).sample for i in (0, 4)])[:7]
    assert frames.shape == (7, 3, 16, 16)
    assert torch.equal(frames, (stock * 0.5 + 0.5).clamp(0, 1))
