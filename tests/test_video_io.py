"""MP4 writing: frame counts and rates (also fractional), audio muxing and trimming, sizes, errors.

Every file is written with :func:`write_video` and read back with PyAV.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from dicetalk_core.errors import InputError
from dicetalk_core.video_io import read_video_info, write_video

AAC_FRAME = 1024  # samples per AAC frame: the granularity of audio durations


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """(C,N) float32 440 Hz sine at 0.3 amplitude."""
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], channels, axis=0)


def moving_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """(T,H,W,3) float32 in [0,1]: a smooth gradient that shifts every frame."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(x + 3 * i) % w / w, y / h, np.full((h, w), 0.5)], axis=-1) for i in range(n)]).astype(
        np.float32
    )


def decode_rgb(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize(
    ("fps", "n_frames", "duration", "channels", "rate"),
    [
        (25, 25, 1.0, 1, 44100),
        (12.5, 12, 0.96, 2, 44100),
        (12.5, 13, 1.04, 1, 16000),
        (25, 49, 1.96, 2, 48000),
    ],
)
def test_frame_count_rate_and_audio_trimmed_to_the_video(tmp_path, fps, n_frames, duration, channels, rate):
    """1 s of tone: cut to 0.96 s under 12 frames at 12.5 fps, kept whole under 1.0-1.96 s videos."""
    path = write_video(tmp_path / "out.mp4", moving_frames(n_frames), fps, tone(1.0, rate, channels), rate)
    info = read_video_info(path)
    assert info.n_frames == n_frames
    assert info.fps == fps
    assert info.duration == pytest.approx(duration, abs=1e-9)
    assert info.audio_rate == rate and info.channels == channels
    assert info.audio_duration == pytest.approx(min(duration, 1.0), abs=AAC_FRAME / rate)
    assert len(decode_rgb(path)) == n_frames


def test_audio_longer_than_the_video_is_cut_at_the_last_frame(tmp_path):
    """25 frames at 12.5 fps = 2 s; 5 s of speech is cut to 2 s (official ``-shortest``)."""
    path = write_video(tmp_path / "out.mp4", moving_frames(25), 12.5, tone(5.0, 22050), 22050)
    info = read_video_info(path)
    assert info.duration == pytest.approx(2.0, abs=1e-9)
    assert info.audio_duration == pytest.approx(2.0, abs=AAC_FRAME / 22050)


def test_audio_is_interleaved_with_the_video(tmp_path):
    """15 s (longer than the muxer's own 10 s reordering window): no 1 s stretch of one stream only."""
    path = write_video(tmp_path / "out.mp4", moving_frames(375, 16, 16), 25, tone(15.0, 8000), 8000)
    with av.open(str(path)) as container:
        packets = [(p.stream.type, float(p.pts * p.time_base)) for p in container.demux() if p.size]
    for kind in ("audio", "video"):
        times = [t for k, t in packets if k == kind]
        assert times[0] < 1 and times[-1] > 14
    for (kind, t), (_, t_next) in itertools.pairwise(packets):
        assert abs(t_next - t) < 1, f"{kind} packet at {t:.2f} s followed by one at {t_next:.2f} s"


def test_fractional_ntsc_rate(tmp_path):
    path = write_video(tmp_path / "out.mp4", moving_frames(30), 30000 / 1001)
    info = read_video_info(path)
    assert info.n_frames == 30
    assert Fraction(info.fps).limit_denominator(1001) == Fraction(30000, 1001)
    assert info.duration == pytest.approx(30 * 1001 / 30000, abs=1e-9)


def test_no_audio(tmp_path):
    frames = torch.from_numpy(np.rint(moving_frames(5) * 255).astype(np.uint8))
    info = read_video_info(write_video(tmp_path / "out.mp4", frames, 25))
    assert (info.n_frames, info.audio_duration, info.audio_rate, info.channels) == (5, None, None, 0)


def test_odd_sizes_are_cropped_to_even(tmp_path):
    """33x47 frames give exactly the video of their top-left 32x46 part (not a scaled or padded one)."""
    frames = moving_frames(4, h=33, w=47)
    frames[:, -1], frames[:, :, -1] = 1.0, 1.0  # a white last row and column, to be cropped away
    odd = decode_rgb(write_video(tmp_path / "odd.mp4", frames, 25))
    even = decode_rgb(write_video(tmp_path / "even.mp4", frames[:, :32, :46], 25))
    assert odd.shape == (4, 32, 46, 3)
    assert np.array_equal(odd, even)


def test_float_frames_are_rounded_not_truncated(tmp_path):
    frames = moving_frames(3)
    as_float = decode_rgb(write_video(tmp_path / "float.mp4", torch.from_numpy(frames), 25))
    rounded = decode_rgb(write_video(tmp_path / "round.mp4", np.rint(frames * 255).astype(np.uint8), 25))
    truncated = decode_rgb(write_video(tmp_path / "trunc.mp4", (frames * 255).astype(np.uint8), 25))
    assert np.array_equal(as_float, rounded)
    assert not np.array_equal(as_float, truncated)


def test_out_of_range_floats_are_clipped(tmp_path):
    frames = np.full((2, 16, 16, 3), 1.7, dtype=np.float32)
    frames[:, :8] = -0.4
    decoded = decode_rgb(write_video(tmp_path / "out.mp4", frames, 25)).astype(int)
    assert np.abs(decoded[:, 2:6] - 0).max() <= 2 and np.abs(decoded[:, 10:14] - 255).max() <= 2


def test_torch_audio_at_a_rate_aac_cannot_store_is_resampled(tmp_path):
    rate = 37800
    audio = torch.from_numpy(tone(1.0, rate, 2))
    info = read_video_info(write_video(tmp_path / "out.mp4", moving_frames(25), 25, audio, rate))
    assert info.audio_rate == 48000 and info.channels == 2
    assert info.audio_duration == pytest.approx(1.0, abs=AAC_FRAME / 48000)


def test_folders_are_created(tmp_path):
    path = write_video(tmp_path / "a" / "b" / "out.mp4", moving_frames(2), 25)
    assert path.is_file()


class FailingFrames:
    """Frames that fail at the last index, after x264 has emitted packets (its look-ahead is 40)."""

    def __init__(self) -> None:
        self._frames = moving_frames(64, 16, 16)
        self.shape, self.dtype = self._frames.shape, self._frames.dtype

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i: int) -> np.ndarray:
        if i == len(self) - 1:
            raise RuntimeError("producer failed")
        return self._frames[i]


def test_partial_file_is_removed_on_error(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="producer failed"):
        write_video(path, FailingFrames(), 25)
    assert not path.exists()


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (np.zeros((0, 16, 16, 3), np.uint8), 25, "no frames"),
        (np.zeros((2, 16, 16), np.uint8), 25, r"\(T,H,W,3\)"),
        (np.zeros((2, 3, 16, 16), np.float32), 25, r"\(T,H,W,3\)"),
        (np.zeros((2, 1, 16, 3), np.uint8), 25, "at least 2x2"),
        (np.zeros((2, 16, 16, 3), np.int32), 25, "uint8 or float"),
        (np.zeros((2, 16, 16, 3), np.uint8), 0, "positive"),
        (np.zeros((2, 16, 16, 3), np.uint8), float("nan"), "positive"),
        (np.zeros((2, 16, 16, 3), np.uint8), 1e-6, "too small"),
    ],
)
def test_bad_frames_or_fps_raise_input_error(tmp_path, frames, fps, message):
    path = tmp_path / "out.mp4"
    with pytest.raises(InputError, match=message):
        write_video(path, frames, fps)
    assert not path.exists()


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros((3, 1000), np.float32), 16000, "1 or 2 channels"),
        (np.zeros(1000, np.float32), 16000, "1 or 2 channels"),
        (np.zeros((1, 0), np.float32), 16000, "no samples"),
        (np.zeros((1, 1000), np.int16), 16000, "float waveform"),
        (np.zeros((1, 1000), np.float32), None, "sample rate"),
        (np.zeros((1, 1000), np.float32), 0, "sample rate"),
    ],
)
def test_bad_audio_raises_input_error(tmp_path, audio, rate, message):
    with pytest.raises(InputError, match=message):
        write_video(tmp_path / "out.mp4", moving_frames(2), 25, audio, rate)
