"""UNet feature caching: the layer walk is the stock forward, and cached calls reuse the right features."""

from __future__ import annotations

import pytest
import torch
from test_fast_mode import _one_thread  # noqa: F401  (autouse fixture)
from test_sampler import tiny_unet, unet_inputs

from dicetalk_core.errors import InputError
from dicetalk_core.feature_cache import ALL_BRANCHES, FULL_BRANCH, FeatureCache, UNetPath, feature_store_device

FRAMES = 4


def branch_slots(branches: int) -> tuple[int, ...]:
    return ALL_BRANCHES if branches == 3 else FULL_BRANCH


def test_the_path_has_one_skip_per_up_layer():
    unet = tiny_unet()
    path = UNetPath(unet)
    assert path.skip_count == 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in unet.down_blocks)
    assert len(path.up) == path.skip_count == sum(len(b.resnets) for b in unet.up_blocks)


@pytest.mark.parametrize("branches", [1, 3])
@pytest.mark.parametrize("masked", [True, False])
def test_a_full_call_is_the_stock_forward_bit_for_bit(branches, masked):
    unet = tiny_unet()
    args, kwargs = unet_inputs(branches, masked=masked)
    with torch.no_grad():
        stock = unet(*args, **kwargs).sample
        for depth in range(UNetPath(unet).skip_count):
            cache = FeatureCache(unet, depth, interval=2, threshold=0.0, total_frames=FRAMES)
            full = cache(0, branch_slots(branches), torch.arange(FRAMES), *args, **kwargs)
            assert torch.equal(full, stock), depth
            assert cache.calls == [(branches, True)]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_a_cached_call_reruns_only_the_shallow_layers(depth):
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    cache = FeatureCache(unet, depth, interval=2, threshold=0.0, total_frames=FRAMES)
    frames = torch.arange(FRAMES)
    ran: list[str] = []
    for name, module in unet.named_modules():
        if (name.count(".") == 2 and ("resnets" in name or "attentions" in name)) or name == "mid_block":
            module.register_forward_pre_hook(lambda *_, name=name: ran.append(name))
    with torch.no_grad():
        full = cache(0, ALL_BRANCHES, frames, *args, **kwargs)
        deep_layers = len(ran)
        ran.clear()
        same_inputs = cache(1, ALL_BRANCHES, frames, *args, **kwargs)
        changed = cache(1, ALL_BRANCHES, frames, args[0] + 0.5, args[1], **kwargs)
    # the same inputs give the same output (the kept features are the deep part's output), others not
    assert torch.equal(same_inputs, full)
    assert not torch.allclose(changed, full)
    assert "mid_block" not in ran and len(ran) < deep_layers
    assert cache.calls == [(3, True), (3, False), (3, False)]


def test_a_one_branch_call_reads_the_full_branch_features_of_a_three_way_call():
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    one_args = (args[0][2:], args[1])
    one_kwargs = {
        "image_embeds": kwargs["image_embeds"][2 * FRAMES :],
        "adapter_tokens": [t[2 * FRAMES :] for t in kwargs["adapter_tokens"]],
        "added_time_ids": kwargs["added_time_ids"][2:],
        "pose_features": kwargs["pose_features"],
        "masks": kwargs["masks"],
    }
    frames = torch.arange(FRAMES)
    cache = FeatureCache(unet, 1, interval=4, threshold=0.0, total_frames=FRAMES)
    with torch.no_grad():
        three_way = cache(0, ALL_BRANCHES, frames, *args, **kwargs)
        cached_full_branch = cache(1, FULL_BRANCH, frames, *one_args, **one_kwargs)
    assert cache.calls == [(3, True), (1, False)]
    torch.testing.assert_close(cached_full_branch, three_way[2:], atol=1e-5, rtol=0)


def test_features_are_kept_per_clip_frame():
    """A window over other frames gathers each frame's own features, wherever they were computed."""
    unet = tiny_unet()
    args, kwargs = unet_inputs(1)
    total = 2 * FRAMES
    cache = FeatureCache(unet, 2, interval=5, threshold=0.0, total_frames=total)
    first, second = torch.arange(FRAMES), torch.arange(FRAMES, total)
    shifted = torch.tensor([2, 3, 4, 5])
    with torch.no_grad():
        cache(0, FULL_BRANCH, first, *args, **kwargs)
        kept_first = cache.deep_features[2][first].clone()
        cache(0, FULL_BRANCH, second, args[0].flip(1), args[1], **kwargs)
        assert torch.equal(cache.deep_features[2][first], kept_first)
        assert not torch.equal(cache.deep_features[2][second], kept_first)
        cache(1, FULL_BRANCH, shifted, *args, **kwargs)
    assert cache.calls[-1] == (1, False)


def test_a_call_with_frames_or_branches_never_computed_runs_the_full_unet():
    unet = tiny_unet()
    args, kwargs = unet_inputs(1)
    cache = FeatureCache(unet, 0, interval=10, threshold=0.0, total_frames=2 * FRAMES)
    with torch.no_grad():
        cache(0, FULL_BRANCH, torch.arange(FRAMES), *args, **kwargs)
        cache(1, FULL_BRANCH, torch.arange(1, FRAMES + 1), *args, **kwargs)  # frame 4 has no features yet
        three_args, three_kwargs = unet_inputs(3)
        cache(2, ALL_BRANCHES, torch.arange(FRAMES), *three_args, **three_kwargs)  # no uncond/reference features
        cache(3, ALL_BRANCHES, torch.arange(FRAMES), *three_args, **three_kwargs)
    assert cache.calls == [(1, True), (1, True), (3, True), (3, False)]


def test_adaptive_caching_follows_the_first_layers_change():
    unet = tiny_unet()
    args, kwargs = unet_inputs(3)
    frames = torch.arange(FRAMES)
    nudged = (args[0] * 1.001, args[1])
    moved = (args[0] * 3.0, args[1])
    with torch.no_grad():
        stock = unet(*args, **kwargs).sample
        cache = FeatureCache(unet, 0, interval=1, threshold=0.05, total_frames=FRAMES)
        first = cache(0, ALL_BRANCHES, frames, *args, **kwargs)
        cache(1, ALL_BRANCHES, frames, *nudged, **kwargs)
        cache(2, ALL_BRANCHES, frames, *moved, **kwargs)
        cache(3, ALL_BRANCHES, frames, *moved, **kwargs)  # compared with step 2, the last full call
    assert torch.equal(first, stock)  # a full adaptive call is the stock forward too
    assert cache.calls == [(3, True), (3, False), (3, True), (3, False)]


def test_a_depth_beyond_the_unet_is_refused():
    unet = tiny_unet()
    skips = UNetPath(unet).skip_count
    with pytest.raises(InputError, match=f"between 0 and {skips - 1}"):
        FeatureCache(unet, skips, interval=2, threshold=0.0, total_frames=FRAMES)


def test_the_store_lives_in_host_memory_for_accelerators_and_in_place_on_the_cpu():
    assert feature_store_device(torch.device("cuda", 0)) == torch.device("cpu")
    assert feature_store_device(torch.device("mps")) == torch.device("cpu")
    assert feature_store_device(torch.device("cpu")) == torch.device("cpu")
    cache = FeatureCache(tiny_unet(), 0, 2, 0.0, 8)
    assert cache.store_device == torch.device("cpu")
