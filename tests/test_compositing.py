"""Paste-back of generated crop frames into the original photo."""

import pytest
import torch

from dicetalk_core.compositing import feather_mask, paste_back
from dicetalk_core.errors import InputError


def test_hard_paste_replaces_exactly_the_box_and_keeps_the_rest():
    original = torch.rand(40, 60, 3)
    frames = torch.rand(2, 16, 16, 3)
    out = paste_back(frames, original, (10, 5, 26, 21), feather=0)
    assert out.shape == (2, 40, 60, 3)
    assert torch.allclose(out[:, 5:21, 10:26], frames, atol=1e-6)
    outside = torch.ones(40, 60, dtype=torch.bool)
    outside[5:21, 10:26] = False
    assert torch.equal(out[0][outside], original[outside]) and torch.equal(out[1][outside], original[outside])


def test_feathered_edge_blends_toward_the_original():
    original = torch.zeros(32, 32, 3)
    frames = torch.ones(1, 32, 32, 3)
    out = paste_back(frames, original, (0, 0, 32, 32), feather=8)
    assert out[0, 16, 16].eq(1).all()
    assert 0 < out[0, 0, 16, 0] < out[0, 4, 16, 0] < 1
    mask = feather_mask(10, 12, 3)
    assert mask.max() == 1 and mask.min() > 0 and torch.equal(mask, mask.flip(0))


def test_resizes_frames_to_the_box():
    out = paste_back(torch.rand(3, 64, 64, 3), torch.rand(100, 80, 3), (10, 20, 50, 60), feather=4)
    assert out.shape == (3, 100, 80, 3) and out.min() >= 0 and out.max() <= 1


def test_box_outside_the_image_is_a_clear_error():
    with pytest.raises(InputError, match="does not fit"):
        paste_back(torch.rand(1, 8, 8, 3), torch.rand(20, 20, 3), (10, 10, 30, 30))
