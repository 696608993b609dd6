"""Issue #9 at unit level, for what the library does that no other unit test covers.

Float images converted without full-size float64 copies, DICE-Talk files of mismatched model sizes
(each loads on its own) refused when loaded together, and weights stored in another dtype. The
same cases run through a real ComfyUI server in ``tests/comfy/test_robustness.py``.
"""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperModel

from dicetalk_core.errors import CheckpointError, InputError
from dicetalk_core.image_io import ROWS_PER_BLOCK, as_rgb_u8
from dicetalk_core.loaders.dice_talk import load_dice_talk_models
from dicetalk_core.model_files import SVD_FOLDER, WHISPER_FOLDER
from dicetalk_core.models import AudioProjection, EmotionModel, PoseGuider
from dicetalk_core.models.layouts import TINY
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.session import DiceTalkSession


def test_float_images_convert_exactly_in_row_blocks_without_full_size_copies():
    rows = 8 * ROWS_PER_BLOCK + 17
    image = torch.rand(1, rows, 512, 3)
    image[0, 0, 0] = torch.tensor([-0.2, 1.3, 0.5 / 255])  # clipped below and above, rounded half to even
    expected = np.clip(np.rint(image[0].numpy().astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    tracemalloc.start()
    try:
        converted = as_rgb_u8(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(converted, expected)
    # the uint8 result (a quarter of the float image) and a few blocks of float64 rows (an eighth each):
    # less than the float image itself, where converting it whole took four times its size
    assert peak < image.numel() * image.element_size()
    image[0, rows - 1, 7, 1] = float("nan")  # in the last block
    with pytest.raises(InputError, match="NaN"):
        as_rgb_u8(image)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_folder(tmp_path_factory.mktemp("robust_models") / "dice_talk")


def folder_with(tiny_folder: Path, destination: Path, write: Callable[[Path], None]) -> Path:
    """A copy of the tiny DICE-Talk folder (without RIFE) in which ``write(folder)`` replaced a file."""
    shutil.copytree(tiny_folder, destination, ignore=shutil.ignore_patterns("RIFE"))
    write(destination)
    return destination


def load(folder: Path, dtype: torch.dtype = torch.float32):
    return load_dice_talk_models(folder, folder / SVD_FOLDER, device="cpu", dtype=dtype)


WIDTH = TINY.unet["cross_attention_dim"]


def emotion_model(dim: int = WIDTH, in_dim: int = 256) -> EmotionModel:
    return EmotionModel(**{**TINY.emotion_model, "dim": dim, "in_dim": in_dim, "classifier": (dim, 16, 8, 22)})


OTHER_SIZES: dict[str, tuple[Callable[[Path], None], str]] = {
    "pose_guider": (
        lambda f: torch.save(PoseGuider(2 * WIDTH, TINY.pose_guider_channels).state_dict(), f / "pose_guider.pth"),
        f"pose_guider.pth gives {2 * WIDTH} feature channels; unet.pth takes {WIDTH}",
    ),
    "audio_tokens": (
        lambda f: torch.save(
            AudioProjection(**{**TINY.audio_projection, "token_dim": 2 * WIDTH}).state_dict(), f / "audio_linear.pth"
        ),
        f"audio_linear.pth makes {2 * WIDTH}-value tokens; unet.pth's audio attention takes {WIDTH}",
    ),
    "emotion_tokens": (
        lambda f: save_file(emotion_model(dim=2 * WIDTH).state_dict(), str(f / "emo_model.safetensors")),
        f"emo_model.safetensors makes {2 * WIDTH}-value tokens; unet.pth's emotion attention takes {WIDTH}",
    ),
    "emotion_priors": (
        lambda f: save_file(emotion_model(in_dim=128).state_dict(), str(f / "emo_model.safetensors")),
        "emo_model.safetensors reads 128-value emotion priors; the presets have 256",
    ),
}


@pytest.mark.parametrize("case", list(OTHER_SIZES))
def test_files_of_models_of_different_sizes_are_refused_when_loaded_together(tiny_folder, tmp_path, case):
    write, message = OTHER_SIZES[case]
    folder = folder_with(tiny_folder, tmp_path / "dice_talk", write)
    with pytest.raises(CheckpointError, match="come from models of different sizes") as caught:
        load(folder)
    assert message in str(caught.value)
    assert str(folder.resolve()) in str(caught.value)


def test_a_whisper_of_another_size_is_refused_when_the_session_loads(tiny_folder, tmp_path):
    def wider_whisper(folder: Path) -> None:
        config = WhisperConfig.from_pretrained(folder / WHISPER_FOLDER)
        config.d_model = 24
        WhisperModel(config).save_pretrained(folder / WHISPER_FOLDER)

    folder = folder_with(tiny_folder, tmp_path / "dice_talk", wider_whisper)
    with pytest.raises(CheckpointError, match=r"10 x 3 x 24 = 720 values; audio_linear\.pth reads 480"):
        DiceTalkSession.from_folder(folder, precision=Precision.resolve("fp32"), interpolate=False)


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_stored_in_another_float_dtype_load_in_the_chosen_one(tiny_folder, tmp_path, stored):
    def recast(folder: Path) -> None:
        for name in ("unet.pth", "pose_guider.pth"):
            state = torch.load(folder / name, weights_only=True)
            torch.save({k: v.to(stored) for k, v in state.items()}, folder / name)

    folder = folder_with(tiny_folder, tmp_path / "dice_talk", recast)
    models = load(folder)
    reference = torch.load(folder / "pose_guider.pth", weights_only=True)
    for module in (models.unet, models.pose_guider):
        assert {p.dtype for p in module.parameters()} == {torch.float32}
    for key, value in models.pose_guider.state_dict().items():
        assert torch.equal(value, reference[key].to(torch.float32))


def test_integer_weights_are_refused_with_the_tensors_named(tiny_folder, tmp_path):
    def as_int(folder: Path) -> None:
        state = torch.load(folder / "pose_guider.pth", weights_only=True)
        torch.save({k: v.to(torch.int8) for k, v in state.items()}, folder / "pose_guider.pth")

    folder = folder_with(tiny_folder, tmp_path / "dice_talk", as_int)
    with pytest.raises(CheckpointError, match=r"non-float tensors where weights are expected: conv_in\.weight"):
        load(folder)
