"""Issue #9 in a real ComfyUI server: nothing a workflow sends can crash the server, leak a file or lose a run.

The matrix, each case a test (or a parametrized row):

* inputs: unusable portraits and audio end as an ``execution_error`` of the node that met them, whose
  message says what is wrong and what to do, with the server still up and a good run right after;
  unusual but valid ones (RGBA, gray, 16-bit, 8K, a face at the border, several faces, any channel
  count and sample rate, a clip shorter than one sampler window, 10 minutes of speech) work, and a
  paste-back that cannot fit in memory is refused before it allocates.
* files: missing, truncated, foreign, mis-sized, wrongly typed or code-carrying weight files and
  presets are refused with the file named; a file replaced on disk is read again; names that try to
  leave the model folders are refused.
* runs: cancel and run again, 20 runs, the same seed twice, two workflows back to back.

Runs on its own server with its own models folder (tiny random weights plus crafted presets) and its
own input folder, so files can be swapped without touching the other modules' server. The server runs
torch on one OpenMP thread: on a CPU shared with other jobs, spinning OpenMP threads made each run
several times slower. Server memory is the resident set (``VmRSS``, peak ``VmHWM``) of the ComfyUI
process, read from ``/proc``. Skips without ``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from dicetalk_harness import (
    GENERATED_FRAMES,
    PORTRAIT,
    SPEECH,
    api_workflow,
    astronaut,
    nodes_of,
    pack_server,
    tiny,
    video_size,
    write_inputs,
)
from pickle_payload import MarkerPayload
from PIL import Image
from safetensors.torch import load_file
from test_presets import npy_with_pickle
from transformers import WhisperConfig, WhisperModel

from dicetalk_core.face import crop_around_face, default_detector, model_size
from dicetalk_core.models import PoseGuider
from dicetalk_core.models.layouts import TINY
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.rates import FRAME_STEP, GENERATION_FPS, MAX_AUDIO_FRAMES, SAMPLES_PER_FRAME

logger = logging.getLogger(__name__)

RUN_TIMEOUT = 600.0
MB = 1 << 20
CANCEL_CYCLES = 4
CANCEL_GROWTH_MB = 4.0
RUNS_GROWTH_MB = 8.0
SPEECH_RATE = 24_000


# ------------------------------------------------------------------------------------------ inputs


def voice(seconds: float, rate: int) -> np.ndarray:
    """A voice-like mono signal (a 140 Hz buzz with harmonics and a syllable-like envelope) in [-0.3, 0.3]."""
    t = np.arange(round(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return 0.3 * buzz * envelope / max(np.abs(buzz).max(), 1e-9)


def write_wav(path: Path, channels: np.ndarray, rate: int) -> None:
    """``(channels, n)`` floats in [-1, 1] as 16-bit PCM."""
    pcm = np.round(np.clip(channels.T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


def shifted(image: np.ndarray, left: int, top: int) -> np.ndarray:
    """``image`` moved ``left`` px left and ``top`` px up, the freed border filled with its edge pixels."""
    return np.pad(image[top:, left:], ((0, top), (0, left), (0, 0)), mode="edge")


def two_faces(big_first: bool) -> np.ndarray:
    """Two astronauts on a gray wall, 320 px and 200 px tall, the big one on the left or on the right."""
    big, small = astronaut(320), astronaut(200)
    wall = np.full((340, 640, 3), 120, np.uint8)
    first, second = (big, small) if big_first else (small, big)
    wall[10 : 10 + len(first), 10 : 10 + len(first)] = first
    wall[10 : 10 + len(second), 630 - len(second) : 630] = second
    return wall


IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "no_face.png": lambda: np.tile(np.linspace(30, 220, 256, dtype=np.uint8)[:, None, None], (1, 256, 3)),
    "face_cut_off.png": lambda: shifted(astronaut(256), 110, 0),
    "face_at_border.png": lambda: shifted(astronaut(256), 85, 32),
    "tiny.png": lambda: astronaut(48),
    "two_faces_big_left.png": lambda: two_faces(True),
    "two_faces_big_right.png": lambda: two_faces(False),
}
HUGE = "huge_8k.png"
HUGE_SIZE = (7680, 4320)


def write_images(folder: Path) -> None:
    for name, make in IMAGES.items():
        Image.fromarray(make()).save(folder / name)
    portrait = astronaut(256)
    alpha = np.full((256, 256, 1), 255, np.uint8)
    alpha[:40] = 0  # a transparent band above the head
    Image.fromarray(np.concatenate([portrait, alpha], axis=2), "RGBA").save(folder / "rgba.png")
    Image.fromarray(portrait).convert("L").save(folder / "gray.png")
    cv2.imwrite(str(folder / "rgb16.png"), (portrait[:, :, ::-1].astype(np.uint16) * 257))  # 48-bit PNG
    width, height = HUGE_SIZE
    face = astronaut(height)
    left = (width - height) // 2
    huge = np.pad(face, ((0, 0), (left, width - height - left), (0, 0)), mode="edge")
    Image.fromarray(huge).save(folder / HUGE, compress_level=1)


TEN_MINUTES = "ten_minutes.wav"


def write_audio(folder: Path) -> None:
    speech = voice(2.3, SPEECH_RATE)
    write_wav(folder / "silent.wav", np.zeros((1, SPEECH_RATE)), SPEECH_RATE)
    write_wav(folder / "empty.wav", np.zeros((1, 0)), SPEECH_RATE)
    write_wav(folder / "one_sample.wav", np.full((1, 1), 0.5), SPEECH_RATE)
    write_wav(folder / "50ms.wav", voice(0.05, SPEECH_RATE)[None], SPEECH_RATE)
    write_wav(folder / "half_second.wav", voice(0.5, SPEECH_RATE)[None], SPEECH_RATE)
    write_wav(folder / "mono.wav", speech[None], SPEECH_RATE)
    write_wav(
        folder / "surround_5_1.wav", np.stack([speech, speech, 0.5 * speech, 0 * speech, speech, speech]), SPEECH_RATE
    )
    for rate in (8_000, 96_000):
        write_wav(folder / f"rate_{rate // 1000}k.wav", voice(2.3, rate)[None], rate)
    write_wav(folder / TEN_MINUTES, voice(600.0, 16_000)[None], 16_000)


@dataclass(frozen=True)
class Bench:
    """The server's models folder (``dice_talk``), input folder, and the marker a payload would create."""

    dice_talk: Path
    inputs: Path
    marker: Path


@pytest.fixture(scope="module")
def bench(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    root = tmp_path_factory.mktemp("robustness")
    dice_talk = write_models_folder(root / "models" / "dice_talk")
    marker = root / "payload_ran"
    emotions = dice_talk / "emotions"
    npy_with_pickle(emotions / "crafted.npy", {"mu": MarkerPayload(str(marker))})
    np.save(emotions / "short.npy", np.zeros((1, 10), np.float32))
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        prior = np.load(emotions / "happy.npy")
        prior[0, 7] = value
        np.save(emotions / f"{name}.npy", prior)
    inputs = write_inputs(root / "input")
    write_images(inputs)
    write_audio(inputs)
    return Bench(dice_talk, inputs, marker)


@pytest.fixture(scope="module")
def server(comfy_dest: Path, bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    output = tmp_path_factory.mktemp("robustness_output")
    with pack_server(comfy_dest, bench.dice_talk.parent, bench.inputs, output) as srv:
        yield srv


# ------------------------------------------------------------------------------------------ runs


def run(server, prompt: dict, on_event: Callable[[str, dict], None] | None = None):
    result = server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=on_event or (lambda *_: None))
    assert server.proc.poll() is None, f"the server died:\n{server.log_tail(40)}"
    return result


def run_ok(server, prompt: dict, on_event: Callable[[str, dict], None] | None = None):
    result = run(server, prompt, on_event)
    assert result.status == "success", f"{result.status}: {result.error}"
    return result


def status_kb(server, field: str) -> int:
    text = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def rss_mb(server) -> float:
    """Resident memory of the ComfyUI process."""
    return status_kb(server, "VmRSS") / 1024


def reset_peak(server) -> None:
    """Start a new peak (``VmHWM``) at the current resident memory (Linux: ``clear_refs`` 5)."""
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")


def peak_mb(server) -> float:
    return status_kb(server, "VmHWM") / 1024


def frames_prompt(
    image: str = PORTRAIT, audio: str = SPEECH, *, seed: int = 1, preset: str = "happy", prefix: str = "robust/frames"
) -> dict:
    """The basic example at tiny settings, its sampler frames saved as PNG (no interpolation, no video)."""
    prompt = tiny(api_workflow("basic"), seed=seed)
    for class_type in ("DICEFrameInterpolation", "CreateVideo", "SaveVideo"):
        for node in nodes_of(prompt, class_type):
            del prompt[node]
    (load_image,) = nodes_of(prompt, "LoadImage")
    (load_audio,) = nodes_of(prompt, "LoadAudio")
    (emotion,) = nodes_of(prompt, "DICEEmotionPreset")
    (sampler,) = nodes_of(prompt, "DICESampler")
    prompt[load_image]["inputs"]["image"] = image
    prompt[load_audio]["inputs"]["audio"] = audio
    prompt[emotion]["inputs"]["preset"] = preset
    prompt["20"] = {"class_type": "SaveImage", "inputs": {"images": [sampler, 0], "filename_prefix": prefix}}
    return prompt


def saved_images(result) -> np.ndarray:
    """``(N, H, W, 3)`` uint8: the PNG files a run saved, in order."""
    files = sorted(f for f in result.output_files if f.endswith(".png"))
    assert files, f"no PNG saved: {result.output_files}"
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def load_audio(name: str) -> dict:
    return {"class_type": "LoadAudio", "inputs": {"audio": name, "audioUI": ""}}


def encoder_prompt(audio_source: dict, duration: float = 0.0) -> dict:
    """Any AUDIO node -> DICE-Talk Audio Encoder (with its model loader) -> its duration shown by Preview Any."""
    basic = api_workflow("basic")
    (loader,) = nodes_of(basic, "DICEModelLoader")
    (encoder,) = nodes_of(basic, "DICEAudioEncoder")
    prompt = {"2": audio_source, loader: basic[loader], encoder: basic[encoder]}
    prompt[encoder]["inputs"].update(audio=["2", 0], model=[loader, 0], duration=duration)
    prompt["20"] = {"class_type": "PreviewAny", "inputs": {"source": [encoder, 1]}}
    return prompt


def encoded_seconds(result) -> float:
    return float(result.outputs["20"]["text"][0])


def frames_for(seconds: float) -> int:
    """Generated frames for a clip: whole 40 ms audio frames at 16 kHz, two per video frame."""
    return round(seconds * 16_000) // SAMPLES_PER_FRAME // FRAME_STEP


def progress_of(result, node: str) -> list[tuple[int, int]]:
    return [
        (data["value"], data["max"]) for _, kind, data in result.events if kind == "progress" and data["node"] == node
    ]


def check_error(result, node_type: str, fragments: tuple[str, ...]) -> str:
    """The run failed in ``node_type`` with a message holding every fragment; returns the message."""
    assert result.status == "error", f"expected an error in {node_type}, got {result.status}"
    error = result.error
    message = error["exception_message"]
    assert error["node_type"] == node_type, f"{error['node_type']}: {message}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    logger.info("%s says: %s", node_type, message)
    return message


# ------------------------------------------------------------------------------------------ inputs


def with_image_batch(prompt: dict) -> dict:
    """The portrait batched with itself (core Batch Images) into the sampler."""
    (load_image,) = nodes_of(prompt, "LoadImage")
    (sampler,) = nodes_of(prompt, "DICESampler")
    prompt["30"] = {"class_type": "ImageBatch", "inputs": {"image1": [load_image, 0], "image2": [load_image, 0]}}
    prompt[sampler]["inputs"]["image"] = ["30", 0]
    return prompt


def with_face_mask(prompt: dict, width: int, height: int) -> dict:
    """A white core Solid Mask of ``width`` x ``height`` as the sampler's face mask."""
    (sampler,) = nodes_of(prompt, "DICESampler")
    prompt["31"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": width, "height": height}}
    prompt[sampler]["inputs"]["face_mask"] = ["31", 0]
    return prompt


def with_audio_node(prompt: dict, node: dict) -> dict:
    (load_audio,) = nodes_of(prompt, "LoadAudio")
    prompt[load_audio] = node
    return prompt


def empty_audio(seconds: float, rate: int) -> dict:
    return {"class_type": "EmptyAudio", "inputs": {"duration": seconds, "sample_rate": rate, "channels": 2}}


@dataclass(frozen=True)
class Refused:
    """A workflow that must fail in ``node_type`` with every fragment in the message (what is wrong, what to do)."""

    prompt: Callable[[], dict]
    node_type: str
    fragments: tuple[str, ...]


NO_FACE = ("No face was found", "face_mask (white = face) on DICE-Talk Sampler")
TOO_SHORT = ("one video frame needs at least 80 ms", "Use a longer clip")
RESAVE = "Use an official preset (re-download it) or save the emotion again"
REFUSED_INPUTS = {
    "no_face": Refused(lambda: frames_prompt("no_face.png"), "DICESampler", NO_FACE),
    "face_cut_off_by_the_border": Refused(lambda: frames_prompt("face_cut_off.png"), "DICESampler", NO_FACE),
    "tiny_image": Refused(
        lambda: frames_prompt("tiny.png"), "DICESampler", ("48x48 pixels", "at least 64", "use a larger portrait")
    ),
    "batch_of_images": Refused(
        lambda: with_image_batch(frames_prompt()), "DICESampler", ("batch of 2 images", "ImageFromBatch")
    ),
    "face_mask_of_another_size": Refused(
        lambda: with_face_mask(frames_prompt(), 128, 96),
        "DICESampler",
        ("The face mask is 128x96 pixels", "use a mask of the portrait's size"),
    ),
    "silent_audio": Refused(
        lambda: frames_prompt(audio="silent.wav"), "DICEAudioEncoder", ("silent", "clip with audible speech")
    ),
    "empty_audio": Refused(
        lambda: with_audio_node(frames_prompt(), empty_audio(0.0, 44_100)),
        "DICEAudioEncoder",
        ("empty (0 samples)", "Connect an audio clip that contains speech"),
    ),
    "empty_audio_file": Refused(lambda: frames_prompt(audio="empty.wav"), "LoadAudio", ("No audio frames",)),
    "one_sample_audio": Refused(lambda: frames_prompt(audio="one_sample.wav"), "DICEAudioEncoder", TOO_SHORT),
    "audio_shorter_than_one_frame": Refused(
        lambda: frames_prompt(audio="50ms.wav"), "DICEAudioEncoder", ("50 ms long", *TOO_SHORT)
    ),
    "zero_sample_rate": Refused(
        lambda: with_audio_node(frames_prompt(), empty_audio(1.0, 0)),
        "DICEAudioEncoder",
        ("sample rate must be a positive whole number", "got 0"),
    ),
    "preset_carrying_code": Refused(
        lambda: frames_prompt(preset="crafted"),
        "DICEEmotionPreset",
        ("crafted.npy was refused", "nothing in the file was executed"),
    ),
    "preset_of_the_wrong_shape": Refused(
        lambda: frames_prompt(preset="short"), "DICEEmotionPreset", ("short.npy", "10 values", "expects 256", RESAVE)
    ),
    "preset_with_nan": Refused(
        lambda: frames_prompt(preset="nan"), "DICEEmotionPreset", ("nan.npy", "NaN/Inf", RESAVE)
    ),
    "preset_with_inf": Refused(
        lambda: frames_prompt(preset="inf"), "DICEEmotionPreset", ("inf.npy", "NaN/Inf", RESAVE)
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_INPUTS))
def test_unusable_input_is_refused_with_what_to_do(server, bench, case):
    refused = REFUSED_INPUTS[case]
    check_error(run(server, refused.prompt()), refused.node_type, refused.fragments)
    assert not bench.marker.exists(), "the crafted preset's payload ran in the server"


def test_a_good_run_queued_right_after_a_failing_one_is_not_lost(server):
    bad = queue(server, frames_prompt("no_face.png", seed=5))
    result = run_ok(server, frames_prompt(seed=5))
    assert saved_images(result).shape == (GENERATED_FRAMES, 64, 64, 3)
    assert finished(server, bad)["status"]["status_str"] == "error"


def test_rgba_and_16_bit_portraits_animate_like_the_same_8_bit_picture(server):
    reference = saved_images(run_ok(server, frames_prompt(seed=2)))
    for image in ("rgba.png", "rgb16.png"):  # the portrait with an alpha channel; at 16 bits per channel
        assert np.array_equal(saved_images(run_ok(server, frames_prompt(image, seed=2))), reference), image


@pytest.mark.parametrize("image", ["gray.png", "face_at_border.png"], ids=["gray", "face_at_border"])
def test_a_gray_portrait_and_a_face_at_the_border_animate(server, image):
    frames = saved_images(run_ok(server, frames_prompt(image, seed=2)))
    assert frames.shape == (GENERATED_FRAMES, 64, 64, 3)


def test_an_8k_portrait_animates_without_full_size_float_copies(server):
    width, height = HUGE_SIZE
    expected = model_size(width, height, 64)
    frames = saved_images(run_ok(server, frames_prompt(HUGE, seed=3)))
    assert frames.shape == (GENERATED_FRAMES, expected[1], expected[0], 3)
    # again with only the sampler re-running: the 8K IMAGE (float32) stays cached in ComfyUI
    image_mb = width * height * 3 * 4 / MB
    before = rss_mb(server)
    reset_peak(server)
    run_ok(server, frames_prompt(HUGE, seed=4))
    growth = peak_mb(server) - before
    logger.info("8K portrait: sampler peak %.0f MB over %.0f MB resident (IMAGE %.0f MB)", growth, before, image_mb)
    # The sampler needs a few uint8 copies of the picture (RGB, face mask, resize input), a quarter of the
    # IMAGE each; one full-size float64 copy alone would be twice the IMAGE.
    assert growth < 1.5 * image_mb


def test_pasting_back_more_than_memory_holds_is_refused_with_what_to_do(server):
    """4096 frames pasted into the 8K photo would need terabytes: refused before any allocation."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": HUGE}},
        "2": {"class_type": "DICEFaceCrop", "inputs": {"image": ["1", 0], "expand_ratio": 0.5}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "tiny.png"}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": 4096}},
        "5": {
            "class_type": "DICEPasteBack",
            "inputs": {"frames": ["4", 0], "original": ["1", 0], "face": ["2", 1], "feather": 16},
        },
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "robust/pasted"}},
    }
    fragments = ("Pasting 4096 frames back into the 7680x4320 photo needs about", "Downscale the photo")
    check_error(run(server, prompt), "DICEPasteBack", fragments)


def test_the_largest_of_several_faces_is_cropped(server):
    detector = default_detector()
    for name in ("two_faces_big_left.png", "two_faces_big_right.png"):
        image = np.asarray(Image.open(Path(server.input_dir) / name).convert("RGB"))
        boxes = detector.detect(image)
        assert len(boxes) == 2 and boxes[0].area > 2 * boxes[1].area, boxes  # the precondition of this case
        largest = max(boxes, key=lambda box: box.area)
        expected = crop_around_face(image, (largest.x, largest.y, largest.w, largest.h)).image
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "DICEFaceCrop", "inputs": {"image": ["1", 0], "expand_ratio": 0.5}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "robust/crop"}},
        }
        (crop,) = saved_images(run_ok(server, prompt))
        assert crop.shape == expected.shape
        assert np.abs(crop.astype(int) - expected).max() <= 1  # SaveImage truncates 255 * (v / 255)


def test_a_face_at_the_image_border_is_cropped_and_pasted_back(server):
    prompt = tiny(api_workflow("crop_paste_back"), seed=6)
    (load_image,) = nodes_of(prompt, "LoadImage")
    prompt[load_image]["inputs"]["image"] = "face_at_border.png"
    result = run_ok(server, prompt)
    (video,) = [f for f in result.output_files if f.endswith(".mp4")]
    assert video_size(video) == (256, 256)


@pytest.mark.parametrize(
    "audio",
    ["mono.wav", SPEECH, "surround_5_1.wav", "rate_8k.wav", "rate_96k.wav"],
    ids=["mono", "stereo", "5.1", "8kHz", "96kHz"],
)
def test_any_channel_count_and_sample_rate_is_encoded(server, audio):
    result = run_ok(server, encoder_prompt(load_audio(audio)))  # every clip: 2.3 s of voice
    assert encoded_seconds(result) == pytest.approx(frames_for(2.3) / GENERATION_FPS)


def test_audio_shorter_than_one_sampler_window_animates(server):
    frames = saved_images(run_ok(server, frames_prompt(audio="half_second.wav", seed=7)))
    assert frames.shape == (frames_for(0.5), 64, 64, 3)


def test_ten_minutes_of_speech_are_capped_report_progress_and_cancel(server):
    prompt = encoder_prompt(load_audio(TEN_MINUTES))
    (encoder,) = nodes_of(prompt, "DICEAudioEncoder")
    chunks = -(-MAX_AUDIO_FRAMES * 2 // 1500)  # 30 s whisper chunks (1500 positions) under the 400 s cap
    before = rss_mb(server)
    reset_peak(server)
    result = run_ok(server, prompt)
    growth = peak_mb(server) - before
    assert encoded_seconds(result) == pytest.approx(MAX_AUDIO_FRAMES / FRAME_STEP / GENERATION_FPS)
    assert progress_of(result, encoder) == [(i, chunks) for i in range(1, chunks + 1)]
    clip_mb = 600 * 16_000 * 4 / MB
    logger.info("10 min of speech: peak %.0f MB over %.0f MB resident (clip %.0f MB as float)", growth, before, clip_mb)
    # Load Audio holds the decoded 16-bit frames and the float clip (1.5 x the clip), the encoder one mono
    # copy of the capped part (< 1 x); whisper states of 14 chunks are small next to that.
    assert growth < 3 * clip_mb

    interrupted: list[int] = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "progress" and data.get("node") == encoder:
            interrupted.append(data["value"])
            if len(interrupted) == 1:
                assert server.post_json("/interrupt", {"prompt_id": data["prompt_id"]})[0] == 200

    cancelled = run(server, encoder_prompt(load_audio(TEN_MINUTES), duration=399.0), on_event)
    assert cancelled.status == "interrupted", f"{cancelled.status}: {cancelled.error}"
    assert cancelled.error["node_id"] == encoder
    assert max(interrupted) < chunks, f"the encoder went on to the end: {interrupted}"


# ------------------------------------------------------------------------------------------ files

Writer = Callable[[Path], None]
"""Writes a replacement file at the given path (the original is at ``<name>.orig`` meanwhile)."""


@contextlib.contextmanager
def replaced(folder: Path, writers: dict[str, Writer | None]) -> Iterator[None]:
    """Each ``folder/relative`` rewritten by its writer (removed when None) for the block, then the originals back."""
    with contextlib.ExitStack() as stack:
        for relative, write in writers.items():
            path = folder / relative
            backup = path.with_name(path.name + ".orig")
            path.rename(backup)
            stack.callback(backup.rename, path)
            stack.callback(path.unlink, missing_ok=True)
            if write is not None:
                write(path)
        yield


def truncated(target: Path) -> None:
    data = target.with_name(target.name + ".orig").read_bytes()
    target.write_bytes(data[: len(data) // 2])


def copy_of(source: Path) -> Writer:
    return lambda target: shutil.copyfile(source, target)


def torch_file(make_state: Callable[[dict], dict]) -> Writer:
    """A .pth of ``make_state(the original tensors)``."""

    def write(target: Path) -> None:
        torch.save(make_state(torch.load(target.with_name(target.name + ".orig"), weights_only=True)), target)

    return write


def wider_pose_guider() -> PoseGuider:
    return PoseGuider(2 * TINY.pose_guider["out_channels"], TINY.pose_guider_channels)


def mis_shaped_adapter(state: dict) -> dict:
    key = next(k for k in state if k.endswith("to_k_ip.1.weight"))
    return {**state, key: torch.zeros(state[key].shape[0], state[key].shape[1] + 1)}


def other_whisper(folder: Path, scratch: Path) -> dict[str, Writer]:
    """config.json and weights of a Whisper encoder 24 wide (the tiny whisper here is 16 wide)."""
    config = WhisperConfig.from_pretrained(folder / "whisper-tiny")
    config.d_model = 24
    WhisperModel(config).save_pretrained(scratch / "whisper-24")
    return {
        f"whisper-tiny/{name}": copy_of(scratch / "whisper-24" / name) for name in ("config.json", "model.safetensors")
    }


@dataclass(frozen=True)
class BadFile:
    """Files of the models folder replaced (``files(folder, scratch)``); loading fails naming ``fragments(folder)``."""

    files: Callable[[Path, Path], dict[str, Writer | None]]
    fragments: Callable[[Path], tuple[str, ...]]


def missing(relative: str, named: str) -> BadFile:
    return BadFile(lambda *_: {relative: None}, lambda folder: (f"'{named}'", str(folder.resolve())))


BAD_FILES = {
    "missing_pose_guider": missing("pose_guider.pth", "pose_guider.pth"),
    "missing_audio_projection": missing("audio_linear.pth", "audio_linear.pth"),
    "missing_emotion_model": missing("emo_model.safetensors", "emo_model.pth"),
    "missing_whisper_weights": BadFile(
        lambda *_: {"whisper-tiny/model.safetensors": None},
        lambda folder: (f"{(folder / 'whisper-tiny').resolve()} lacks model.safetensors or pytorch_model.bin",),
    ),
    "truncated_safetensors": BadFile(
        lambda *_: {"emo_model.safetensors": truncated},
        lambda folder: (f"{folder / 'emo_model.safetensors'} is not a readable safetensors file", "download it again"),
    ),
    "truncated_pth": BadFile(
        lambda *_: {"unet.pth": truncated},
        lambda folder: (f"{folder / 'unet.pth'} could not be read", "truncated", "download it again"),
    ),
    "keys_of_another_model": BadFile(
        lambda folder, _: {"audio_linear.pth": copy_of(folder / "pose_guider.pth")},
        lambda _: ("is not the DICE-Talk audio projection", "lacks proj1.weight", "looks like a pose guider"),
    ),
    "shapes_of_another_model": BadFile(
        lambda *_: {"unet.pth": torch_file(mis_shaped_adapter)},
        lambda _: ("does not fit the DICE-Talk UNet", "1 shape mismatches", "to_k_ip.1.weight: file (32, 33)"),
    ),
    "pose_guider_of_another_size": BadFile(  # twice as wide as the tiny UNet's first stage
        lambda *_: {"pose_guider.pth": lambda p: torch.save(wider_pose_guider().state_dict(), p)},
        lambda folder: (str(folder.resolve()), "pose_guider.pth gives 64 feature channels; unet.pth takes 32"),
    ),
    "whisper_of_another_size": BadFile(
        other_whisper,
        lambda _: ("audio windows of 10 x 3 x 24 = 720 values; audio_linear.pth reads 480", "openai/whisper-tiny"),
    ),
    "weights_carrying_code": BadFile(
        lambda _, scratch: {
            "unet.pth": torch_file(lambda state: {**state, "payload": MarkerPayload(str(scratch / "payload_ran"))})
        },
        lambda _: ("unet.pth holds Python objects other than tensors", "refuses to run code"),
    ),
    "integer_weights": BadFile(
        lambda *_: {"pose_guider.pth": torch_file(lambda state: {k: v.to(torch.int8) for k, v in state.items()})},
        lambda _: ("non-float tensors where weights are expected", "conv_in.weight: torch.int8"),
    ),
}


def loader_prompt() -> dict:
    return encoder_prompt(load_audio(SPEECH))


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_weight_file_is_named_and_refused(server, bench, tmp_path, case):
    bad = BAD_FILES[case]
    with replaced(bench.dice_talk, bad.files(bench.dice_talk, tmp_path)):
        result = run(server, loader_prompt())
    check_error(result, "DICEModelLoader", bad.fragments(bench.dice_talk))
    assert result.error["exception_type"].endswith("CheckpointError")
    assert not (tmp_path / "payload_ran").exists(), "the weight file's payload ran in the server"


def test_a_missing_rife_file_is_named_with_its_folder(server, bench):
    with replaced(bench.dice_talk, {"RIFE/flownet.pkl": None}):
        result = run(server, tiny(api_workflow("basic"), seed=8))
    check_error(result, "DICEFrameInterpolation", ("'RIFE/flownet.pkl'", str(bench.dice_talk.resolve())))


def test_half_precision_weights_load_and_run_in_the_chosen_precision(server, bench):
    half = {k: v.half() for k, v in torch.load(bench.dice_talk / "unet.pth", weights_only=True).items()}
    with replaced(bench.dice_talk, {"unet.pth": lambda path: torch.save(half, path)}):
        frames = saved_images(run_ok(server, frames_prompt(seed=9)))
    assert frames.shape == (GENERATED_FRAMES, 64, 64, 3)


def test_a_preset_replaced_on_disk_is_read_again(server, bench):
    emotions = bench.dice_talk / "emotions"
    prompt = {
        "1": {"class_type": "DICEEmotionPreset", "inputs": {"preset": "swapped", "intensity": 1.0}},
        "2": {"class_type": "DICESaveEmotion", "inputs": {"emotion": ["1", 0], "name": "copied", "overwrite": True}},
    }
    for source in ("happy.npy", "neutral.npy"):
        shutil.copyfile(emotions / source, emotions / "swapped.npy")
        run_ok(server, prompt)
        copied = load_file(str(emotions / "copied.safetensors"))["mu"]
        assert torch.equal(copied, torch.from_numpy(np.load(emotions / source))), f"not the prior of {source}"


def test_the_loader_works_again_with_the_good_files(server):
    result = run_ok(server, loader_prompt())
    assert encoded_seconds(result) == pytest.approx(frames_for(2.3) / GENERATION_FPS)


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd"], ids=["relative", "absolute"])
@pytest.mark.parametrize(("class_type", "field"), [("DICEEmotionPreset", "preset"), ("DICEModelLoader", "svd_model")])
def test_a_file_name_outside_the_model_folders_is_refused_when_queued(server, class_type, field, name):
    prompt = frames_prompt()
    (node,) = nodes_of(prompt, class_type)
    prompt[node]["inputs"][field] = name
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert status == 400, body
    (error,) = body["node_errors"][node]["errors"]
    assert error["type"] == "value_not_in_list" and error["details"].startswith(f"{field}: '{name}' not in")


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "..\\..\\evil"])
def test_a_save_name_that_is_a_path_is_refused_and_nothing_is_written(server, bench, name):
    root = bench.dice_talk.parent.parent
    before = sorted(root.rglob("*"))
    prompt = {
        "1": {"class_type": "DICEEmotionPreset", "inputs": {"preset": "happy", "intensity": 1.0}},
        "2": {"class_type": "DICESaveEmotion", "inputs": {"emotion": ["1", 0], "name": name, "overwrite": True}},
    }
    check_error(run(server, prompt), "DICESaveEmotion", ("is not a usable name", "start with a letter"))
    assert sorted(root.rglob("*")) == before
    assert not Path(f"{name}.safetensors").exists()


def test_emotion_text_naming_a_path_is_refused_when_queued(server):
    prompt = frames_prompt()
    (emotion,) = nodes_of(prompt, "DICEEmotionPreset")
    prompt[emotion] = {"class_type": "DICEEmotionTimeline", "inputs": {"keyframes": "../../../../etc/passwd"}}
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert status == 400, body
    (error,) = body["node_errors"][emotion]["errors"]
    assert "happy" in error["details"]  # the refusal lists the words it understands


# ------------------------------------------------------------------------------------------ runs


def cancelled_mid_sampling(server, seed: int) -> None:
    """A 100-step run of the frames workflow, interrupted at its first sampler progress."""
    prompt = frames_prompt(seed=seed)
    (sampler,) = nodes_of(prompt, "DICESampler")
    prompt[sampler]["inputs"]["steps"] = 100
    seen: list[int] = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "progress" and data.get("node") == sampler:
            seen.append(data["value"])
            if len(seen) == 1:
                assert server.post_json("/interrupt", {"prompt_id": data["prompt_id"]})[0] == 200

    result = run(server, prompt, on_event)
    assert result.status == "interrupted", f"{result.status}: {result.error}"
    assert result.error["node_id"] == sampler and len(seen) <= 2, seen


def test_cancel_mid_sampling_then_run_again_gives_the_same_frames_and_leaks_no_memory(server):
    prompt = frames_prompt(seed=21, prefix="robust/cancel")
    (sampler,) = nodes_of(prompt, "DICESampler")
    reference = saved_images(run_ok(server, prompt))
    cancelled_mid_sampling(server, seed=22)  # the first cancel allocates what every later one reuses
    before = rss_mb(server)
    resident = []
    for cycle in range(CANCEL_CYCLES):
        again = run_ok(server, prompt)  # its cached frames were dropped when the cancelled prompt ran
        assert progress_of(again, sampler), "the sampler did not run again"
        assert np.array_equal(saved_images(again), reference)
        resident.append(rss_mb(server))
        cancelled_mid_sampling(server, seed=23 + cycle)
        resident.append(rss_mb(server))
    growth = min(resident[-2:]) - before  # the last cycle's floor: transient allocator peaks do not count
    logger.info(
        "%d reruns + cancels: RSS %.1f MB, then %s", CANCEL_CYCLES, before, " ".join(f"{r:.1f}" for r in resident)
    )
    # Leaking what a cycle makes (28 frames of 64x64 RGB float32: 1.4 MB) would add 5.6 MB over 4 cycles;
    # the allowance covers the history ComfyUI keeps of every prompt (tens of KB each).
    assert growth < CANCEL_GROWTH_MB


RUNS = 20


def test_twenty_runs_do_not_grow_server_memory(server):
    """The whole basic workflow on half a second of speech; every run has a new seed and reloads the models."""

    def prompt(index: int) -> dict:
        workflow = tiny(api_workflow("basic"), seed=1000 + index)
        (loader,) = nodes_of(workflow, "DICEModelLoader")
        (load_audio,) = nodes_of(workflow, "LoadAudio")
        workflow[loader]["inputs"]["precision"] = ("auto", "fp32")[index % 2]  # both fp32 here: a reload
        workflow[load_audio]["inputs"]["audio"] = "half_second.wav"
        return workflow

    run_ok(server, prompt(0))  # warm up: allocator pools, lazy imports, ComfyUI's caches
    start = rss_mb(server)
    resident = []
    began = time.monotonic()
    for index in range(1, RUNS + 1):
        result = run_ok(server, prompt(index))
        assert [f for f in result.output_files if f.endswith(".mp4")], "no video"
        resident.append(rss_mb(server))
    # The floor of the last five runs against the floor of the first five: a leak raises the floor, while
    # the allocator's transient peaks (a few runs end 15-45 MB higher, the next one back) do not.
    growth = min(resident[-5:]) - min(resident[:5])
    logger.info(
        "%d runs in %.0f s: RSS %.1f MB after the warm-up run, %.1f MB after the last; floor growth %+.1f MB; "
        "after each run: %s",
        RUNS,
        time.monotonic() - began,
        start,
        resident[-1],
        growth,
        " ".join(f"{r:.1f}" for r in resident),
    )
    # A run makes 6 + 11 frames of 64x64 RGB float32 (0.8 MB) and reloads ~5 MB of tiny models: leaking
    # either adds 12 MB or more over the 15 runs between the two floors. ComfyUI keeps every prompt's
    # history, tens of KB a run.
    assert growth < RUNS_GROWTH_MB


def test_the_same_seed_twice_gives_the_same_frames_and_workflows_share_no_state(server):
    first = frames_prompt(seed=11, preset="happy", prefix="robust/first")
    other = frames_prompt(seed=12, preset="neutral", prefix="robust/other")
    queued = [queue(server, prompt) for prompt in (first, other)]  # back to back: both wait in the queue
    first_frames, other_frames = (images_of(server, finished(server, prompt_id)) for prompt_id in queued)
    again = run_ok(server, frames_prompt(seed=11, preset="happy", prefix="robust/again"))
    (sampler,) = nodes_of(first, "DICESampler")
    assert progress_of(again, sampler), "the sampler did not run again"
    assert np.array_equal(saved_images(again), first_frames)
    assert first_frames.shape == other_frames.shape
    assert np.abs(first_frames.astype(int) - other_frames).mean() > 1.0


def queue(server, prompt: dict) -> str:
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert status == 200, body
    return body["prompt_id"]


def finished(server, prompt_id: str) -> dict:
    """The history entry of a queued prompt once it has run (within the run timeout)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry["status"].get("completed") is not None:
            return entry
        time.sleep(0.2)
    raise AssertionError(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT:.0f} s")


def images_of(server, entry: dict) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 of the images a finished prompt saved."""
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = sorted(
        Path(server.output_dir) / image["subfolder"] / image["filename"]
        for output in entry["outputs"].values()
        for image in output.get("images", [])
    )
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
