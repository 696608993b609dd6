"""The lean temporal-VAE decode gives ``vae.decode``'s frames."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder

from dicetalk_core.vae_decode import decode_clip, is_lean_decodable


def svd_like_vae(levels: int = 3) -> AutoencoderKLTemporalDecoder:
    """SVD-xt's VAE layout at width 32 (``levels`` resolutions); non-zero mix factors, so every branch counts."""
    torch.manual_seed(7)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 64, 64)[:levels], down_block_types=("DownEncoderBlock2D",) * levels, layers_per_block=2
    ).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("mix_factor"):
                param.copy_(torch.randn(()))
    return vae


@pytest.mark.parametrize(("clips", "frames"), [(1, 10), (2, 4), (1, 1)])
def test_the_lean_decode_gives_the_stock_frames_bit_for_bit(clips, frames):
    vae = svd_like_vae()
    assert is_lean_decodable(vae)
    latents = torch.randn(clips * frames, 4, 6, 5, generator=torch.Generator().manual_seed(clips))
    with torch.no_grad():
        stock = vae.decode(latents, num_frames=frames).sample
    lean = decode_clip(vae, latents, frames)
    assert lean.shape == stock.shape == (clips * frames, 3, 24, 20)
    assert torch.equal(lean, stock)  # tensors this small fit the strip budget whole: nothing rounds differently


def test_the_latents_are_left_untouched():
    vae = svd_like_vae(levels=2)
    latents = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    kept = latents.clone()
    decode_clip(vae, latents, 4)
    assert torch.equal(latents, kept)


def test_an_unknown_decoder_layout_falls_back_to_vae_decode():
    vae = svd_like_vae(levels=2)
    latents = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        stock = vae.decode(latents, num_frames=3).sample
    mixer = vae.decoder.up_blocks[0].resnets[0].time_mixer
    mixer.merge_strategy = "learned_with_images"  # image_only_indicator is all zeros: the same numbers
    assert not is_lean_decodable(vae)
    assert torch.equal(decode_clip(vae, latents, 3), stock)
    mixer.merge_strategy = "learned"
    vae.decoder.up_blocks[1].resnets[0].spatial_res_block.time_emb_proj = torch.nn.Linear(2, 32)
    assert not is_lean_decodable(vae)
