"""RIFE x2 interpolation: the official flownet.pkl layout, the model's geometry, and the frame loop.

No real weights exist here, so the checkpoint tests write a random tensor dict with the official key
names and shapes (listed below from the official IFNet HDv3 architecture), and the behaviour tests
use weights chosen so that the expected middle frame is known in closed form.
"""

from __future__ import annotations

import pytest
import torch

from dicetalk_core.errors import CancelledError, CheckpointError, InputError
from dicetalk_core.interpolation import IFNet, interpolate_frames
from dicetalk_core.loaders.rife import load_rife, official_to_ifnet_keys
from dicetalk_core.rates import interpolated_fps

OFFICIAL_PARAMS = 3_038_015  # whole flownet.pkl, block_tea included
UNUSED_PARAMS = 760_415  # block_tea


def official_block_shapes(in_channels: int, c: int = 90) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of one official IFBlock: conv(+bias)+PReLU layers, then two deconv heads."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int) -> None:
        shapes.update({f"{name}.0.weight": (cout, cin, 3, 3), f"{name}.0.bias": (cout,)})
        shapes[f"{name}.1.weight"] = (cout,)

    conv("conv0.0", in_channels, c // 2)
    conv("conv0.1", c // 2, c)
    for i in range(4):
        conv(f"convblock{i}.0", c, c)
        conv(f"convblock{i}.1", c, c)
    for head, out in (("conv1", 4), ("conv2", 1)):
        shapes |= {
            f"{head}.0.weight": (c, c // 2, 4, 4),
            f"{head}.0.bias": (c // 2,),
            f"{head}.1.weight": (c // 2,),
            f"{head}.2.weight": (c // 2, out, 4, 4),
            f"{head}.2.bias": (out,),
        }
    return shapes


def official_flownet_shapes() -> dict[str, tuple[int, ...]]:
    """The 160 keys of the official flownet.pkl (without the ``module.`` prefix)."""
    blocks = {"block0": 11, "block1": 11, "block2": 11, "block_tea": 14}
    return {
        f"{block}.{key}": shape
        for block, in_channels in blocks.items()
        for key, shape in official_block_shapes(in_channels).items()
    }


def write_official_pkl(path, *, seed: int = 0, drop: str | None = None, extra: str | None = None) -> None:
    """Write a flownet.pkl laid out like the official one: ``module.``-prefixed random tensors, block_tea too."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        f"module.{k}": torch.randn(shape, generator=generator) * 0.05
        for k, shape in official_flownet_shapes().items()
        if k != drop
    }
    if extra is not None:
        state[f"module.{extra}"] = torch.zeros(3)
    torch.save(state, path)


def zero_flow_model(*, flow_bias: tuple[float, ...] = (0.0,) * 4, flow_block: int = 2, zero_mask: bool = True) -> IFNet:
    """A random IFNet whose last flow layers (and mask layers if ``zero_mask``) are zero.

    Every block then predicts a constant update from the layer's bias; ``flow_bias`` goes into block
    ``flow_block``, whose update in pixels is the bias times its scale (4, 2, 1). The symmetric pass averages
    ``f0`` with the channel-swapped ``f1``, so (dx, dy, dx, dy) moves both images by (dx, dy) while
    (dx, dy, -dx, -dy) cancels out. With zeroed mask layers the blend mask stays 0 (weights 1/2).
    """
    torch.manual_seed(0)
    model = IFNet().eval()
    heads = [b.conv1 for b in (model.block0, model.block1, model.block2)]
    if zero_mask:
        heads += [b.conv2 for b in (model.block0, model.block1, model.block2)]
    with torch.no_grad():
        for head in heads:
            head[2].weight.zero_()
            head[2].bias.zero_()
        getattr(model, f"block{flow_block}").conv1[2].bias.copy_(torch.tensor(flow_bias))
    return model


class CallRecorder(torch.nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, model: IFNet) -> None:
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        self.batches.append(img0.shape[0])
        return self.model(img0, img1)


def smooth_frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, h, w, generator=generator)
    return torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)


# --- checkpoint layout -------------------------------------------------------------------------------


def test_official_layout_counts_match_the_spec():
    shapes = official_flownet_shapes()
    numel = {k: torch.Size(s).numel() for k, s in shapes.items()}
    assert len(shapes) == 160
    assert sum(numel.values()) == OFFICIAL_PARAMS
    assert sum(v for k, v in numel.items() if k.startswith("block_tea.")) == UNUSED_PARAMS


def test_model_has_the_official_names_and_shapes_without_block_tea():
    expected = {k: s for k, s in official_flownet_shapes().items() if not k.startswith("block_tea.")}
    got = {k: tuple(v.shape) for k, v in IFNet().state_dict().items()}
    assert got == expected
    assert sum(p.numel() for p in IFNet().parameters()) == OFFICIAL_PARAMS - UNUSED_PARAMS


def test_official_pkl_loads_strictly(tmp_path):
    path = tmp_path / "flownet.pkl"
    write_official_pkl(path)
    model = load_rife(path)
    saved = torch.load(path, weights_only=True)
    assert not model.training
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, saved[f"module.{key}"]), key


def test_keys_without_prefix_load_too(tmp_path):
    path = tmp_path / "flownet.pkl"
    write_official_pkl(path)
    state = {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True).items()}
    torch.save(state, path)
    load_rife(path)


def test_block_tea_is_optional():
    full = {f"module.{k}": torch.zeros(s) for k, s in official_flownet_shapes().items()}
    without_tea = {k: v for k, v in full.items() if "block_tea" not in k}
    assert official_to_ifnet_keys(full).keys() == official_to_ifnet_keys(without_tea).keys()


@pytest.mark.parametrize(
    ("drop", "extra", "message"),
    [
        ("block1.conv2.2.bias", None, "1 missing keys: block1.conv2.2.bias"),
        (None, "block3.conv0.0.0.weight", "1 unexpected keys: block3.conv0.0.0.weight"),
    ],
)
def test_wrong_keys_fail_loudly(tmp_path, drop, extra, message):
    path = tmp_path / "flownet.pkl"
    write_official_pkl(path, drop=drop, extra=extra)
    with pytest.raises(CheckpointError, match=message):
        load_rife(path)


def test_wrong_shapes_fail_loudly(tmp_path):
    """Blocks of 64 channels (another RIFE release) instead of 90."""
    path = tmp_path / "flownet.pkl"
    block = official_block_shapes(11, c=64)
    torch.save({f"module.block{i}.{k}": torch.zeros(s) for i in range(3) for k, s in block.items()}, path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_rife(path)


# --- the model ------------------------------------------------------------------------------------------


def test_identical_frames_give_that_frame_without_flow():
    """Zero flow warps to the identity, and any blend of a frame with itself is that frame."""
    frame = smooth_frames(1, 64, 96)
    with torch.no_grad():
        middle = zero_flow_model(zero_mask=False)(frame, frame)
    assert (middle - frame).abs().max() < 1e-5


def test_blend_is_a_per_pixel_convex_combination_without_flow():
    a, b = smooth_frames(2, 48, 64)
    model = zero_flow_model(zero_mask=False)
    with torch.no_grad():
        model.block2.conv2[2].weight.mul_(100.0)  # a mask far from 0 somewhere
        middle = model(a[None], b[None])[0]
    assert (middle >= torch.minimum(a, b) - 1e-6).all() and (middle <= torch.maximum(a, b) + 1e-6).all()
    assert (middle - (a + b) / 2).abs().max() > 0.02  # 0.045 here: weights 0.27..0.75


def test_zero_flow_and_mask_blend_halfway():
    a, b = smooth_frames(2, 48, 64)
    with torch.no_grad():
        middle = zero_flow_model()(a[None], b[None])[0]
    assert (middle - (a + b) / 2).abs().max() < 1e-5


@pytest.mark.parametrize(("block", "bias"), [(2, (2.0, -3.0)), (1, (1.0, -1.5)), (0, (0.5, -0.75))])
def test_flow_is_a_backward_warp_in_pixels(block, bias):
    """A (2, -3) px update on both images samples each pixel from (x+2, y-3), edges clamped."""
    a, b = smooth_frames(2, 48, 64)
    with torch.no_grad():
        middle = zero_flow_model(flow_bias=bias * 2, flow_block=block)(a[None], b[None])[0]
    expected = torch.roll((a + b) / 2, shifts=(3, -2), dims=(1, 2))
    interior = (slice(None), slice(3, None), slice(None, -2))
    assert (middle[interior] - expected[interior]).abs().max() < 1e-5
    assert (middle[:, :3, :-2] - expected[:, 3:4, :-2]).abs().max() < 1e-5  # top rows clamp to row 0


def test_antisymmetric_flow_cancels_out():
    a, b = smooth_frames(2, 32, 32)
    with torch.no_grad():
        middle = zero_flow_model(flow_bias=(5.0, 1.0, -5.0, -1.0))(a[None], b[None])[0]
    assert (middle - (a + b) / 2).abs().max() < 1e-5


def test_swapping_the_frames_gives_the_same_middle():
    """RIFE is time-symmetric: each block also runs on the swapped pair with the mask negated, so
    swapping the inputs swaps the flows and negates the mask, leaving the middle frame unchanged."""
    torch.manual_seed(1)
    model = IFNet().eval()
    with torch.no_grad():
        for block in (model.block0, model.block1, model.block2):
            block.conv1[2].weight.mul_(20.0)  # flows of a few pixels
            block.conv2[2].weight.mul_(20.0)
        a, b = smooth_frames(2, 32, 48)[:, None]
        forward, backward = model(a, b), model(b, a)
    assert (forward - (a + b) / 2).abs().max() > 0.05
    assert (forward - backward).abs().max() < 1e-5


# --- interpolate_frames ------------------------------------------------------------------------------


def test_interleaves_2n_minus_1_frames_with_clamped_middles():
    frames = smooth_frames(5, 32, 48)
    model = IFNet().eval()
    out = interpolate_frames(frames, model)
    assert out.shape == (9, 3, 32, 48)
    assert torch.equal(out[0::2], frames)
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        expected = model(frames[2:3], frames[3:4]).clamp(0, 1)[0]
    assert torch.equal(out[5], expected)


def test_zero_flow_model_inserts_averages():
    frames = smooth_frames(4, 32, 32)
    out = interpolate_frames(frames, zero_flow_model(), batch_size=2)
    assert (out[1::2] - (frames[:-1] + frames[1:]) / 2).abs().max() < 1e-5


@pytest.mark.parametrize(("h", "w"), [(40, 72), (33, 17), (16, 8)])
def test_sizes_not_multiple_of_16_are_padded_and_cropped(h, w):
    frames = smooth_frames(3, h, w)
    out = interpolate_frames(frames, zero_flow_model())
    assert out.shape == (5, 3, h, w)
    assert (out[1] - (frames[0] + frames[1]) / 2).abs().max() < 1e-5


def test_padding_is_invisible_to_the_warp():
    """A 2 px shift to the right edge of a 40x72 frame (padded to 48x80) clamps to the last column."""
    a, b = smooth_frames(2, 40, 72)
    frames = torch.stack((a, b))
    middle = interpolate_frames(frames, zero_flow_model(flow_bias=(2.0, 0.0, 2.0, 0.0)))[1]
    mean = (a + b) / 2
    expected = torch.cat((mean[..., 2:], mean[..., -1:], mean[..., -1:]), dim=-1)
    assert (middle - expected).abs().max() < 1e-5


def test_middles_are_clamped_but_given_frames_are_kept():
    frames = torch.full((2, 3, 16, 16), 1.5)
    out = interpolate_frames(frames, zero_flow_model())
    assert torch.equal(out[1], torch.ones(3, 16, 16))
    assert torch.equal(out[0::2], frames)


def test_single_frame_is_returned_without_calling_the_model():
    recorder = CallRecorder(IFNet())
    frame = smooth_frames(1, 16, 16)
    out = interpolate_frames(frame, recorder)
    assert torch.equal(out, frame)
    assert recorder.batches == []


@pytest.mark.parametrize(("n", "batch_size", "batches"), [(8, 3, [3, 3, 1]), (8, 1, [1] * 7), (3, 16, [2])])
def test_memory_is_bounded_by_the_batch_size(n, batch_size, batches):
    recorder = CallRecorder(zero_flow_model())
    seen: list[tuple[int, int]] = []
    frames = smooth_frames(n, 16, 16)
    out = interpolate_frames(
        frames, recorder, batch_size=batch_size, progress=lambda done, total: seen.append((done, total))
    )
    assert recorder.batches == batches
    assert seen[-1] == (n - 1, n - 1) and len(seen) == len(batches)
    assert (out[1::2] - (frames[:-1] + frames[1:]) / 2).abs().max() < 1e-5


def test_keeps_dtype_and_device_of_the_frames():
    frames = smooth_frames(3, 16, 16).half()
    out = interpolate_frames(frames, zero_flow_model())
    assert out.dtype == torch.float16 and out.device == frames.device


def test_cancel_raises_and_stops_calling_the_model():
    recorder = CallRecorder(zero_flow_model())
    calls = iter([False, False, True])
    with pytest.raises(CancelledError, match="after 2 of 5"):
        interpolate_frames(smooth_frames(6, 16, 16), recorder, should_stop=lambda: next(calls))
    assert recorder.batches == [1, 1]


@pytest.mark.parametrize(
    ("frames", "batch_size", "message"),
    [
        (torch.zeros(0, 3, 16, 16), 1, "no frames"),
        (torch.zeros(2, 16, 16, 3), 1, r"\(N,3,H,W\)"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), 1, "float"),
        (torch.zeros(2, 3, 16, 16), 0, "batch_size"),
    ],
)
def test_bad_inputs_raise_input_error(frames, batch_size, message):
    with pytest.raises(InputError, match=message):
        interpolate_frames(frames, IFNet(), batch_size=batch_size)


def test_interpolated_fps():
    assert interpolated_fps(12.5) == 25.0
