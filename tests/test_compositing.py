"""Paste-back of generated crop frames into the original photo."""

import pytest
import torch
import torch.nn.functional as F

from dicetalk_core.compositing import even_size, feather_mask, paste_back, paste_back_bytes
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


@pytest.mark.parametrize(("height", "width"), [(41, 61), (40, 61), (41, 60), (40, 60)])
@pytest.mark.parametrize("at_the_corner", [False, True], ids=["inside", "last_row_and_column"])
def test_even_sizes_are_the_full_paste_cropped_or_edge_padded(height, width, at_the_corner):
    """``even`` gives what cropping or edge-padding the full-size result gives, for a box touching the last
    row and column too; the video writers need even sides, so both rules always end even."""
    box = (width - 16, height - 16, width, height) if at_the_corner else (10, 5, 26, 21)
    original = torch.rand(height, width, 3)
    frames = torch.rand(2, 16, 16, 3)
    full = paste_back(frames, original, box, feather=4)
    cropped = paste_back(frames, original, box, feather=4, even="crop")
    padded = paste_back(frames, original, box, feather=4, even="pad")
    assert cropped.shape == (2, height // 2 * 2, width // 2 * 2, 3)
    assert torch.equal(cropped, full[:, : height // 2 * 2, : width // 2 * 2])
    expected = F.pad(full.permute(0, 3, 1, 2), (0, width % 2, 0, height % 2), mode="replicate").permute(0, 2, 3, 1)
    assert padded.shape == (2, height + height % 2, width + width % 2, 3)
    assert torch.equal(padded, expected)
    assert torch.equal(paste_back(frames, original, box, feather=4, even=None), full)


def test_even_size_rules_and_their_refusals():
    assert even_size(1451, 1451, "crop") == (1450, 1450)
    assert even_size(1451, 1450, "pad") == (1452, 1450)
    assert even_size(7, 9, None) == (7, 9)
    with pytest.raises(InputError, match="cannot be cropped to an even size"):
        even_size(1, 9, "crop")
    with pytest.raises(InputError, match="must be one of crop, pad; got 'keep'"):
        even_size(8, 8, "keep")
    assert paste_back_bytes(2, 41, 61, (0, 0, 10, 10), "pad") == 2 * 3 * 4 * (42 * 62 + 4 * 100)
