"""Writing the result as an MP4 (H.264 + AAC) with PyAV, whose wheels ship FFmpeg.

The official release writes frames with ffmpeg (libx264, crf 17, yuv420p), then re-encodes the video
a second time while muxing the speech (``-crf 18 -shortest``). Here the video is encoded once and the
audio is cut to the video's duration at sample precision, which is what ``-shortest`` aims at.

Float frames are rounded to uint8. The official code truncates (``(x*255).astype(uint8)``), which
darkens the whole video by half a level on average. Byte parity of the files is out of reach anyway
(two lossy encodes with the official FFmpeg build), and parity is checked on the float frames
before encoding, so rounding costs nothing and looks better.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import torch

from .errors import InputError

logger = logging.getLogger(__name__)

Array = np.ndarray | torch.Tensor

FALLBACK_AUDIO_RATE = 48_000
"""Audio at a rate AAC cannot store is resampled to this rate."""

_MAX_FPS_DENOMINATOR = 1001
_LAYOUTS = {1: "mono", 2: "stereo"}


class VideoInfo(NamedTuple):
    """What :func:`read_video_info` finds in a file. Audio fields are None (channels 0) without audio."""

    n_frames: int
    fps: float
    duration: float
    audio_duration: float | None
    audio_rate: int | None
    channels: int


def write_video(
    path: str | Path,
    frames: Array,
    fps: float | Fraction,
    audio: Array | None = None,
    sample_rate: int | None = None,
    *,
    crf: int = 17,
) -> Path:
    """Encode ``frames`` as H.264 (yuv420p) in an MP4 container, with ``audio`` as AAC if given.

    Args:
        path: output file; its folder is created. The container is MP4 whatever the extension.
        frames: (T,H,W,3) RGB, uint8 or float in [0,1] (clipped, then rounded), numpy or torch on
            any device. Converted one frame at a time, so a float video is never copied whole.
            yuv420p needs even sides: an odd height or width loses its last row or column (as the
            official ``keep_resolution`` size ``w//2*2 x h//2*2``).
        fps: frame rate, e.g. 25 or 12.5; stored as the nearest fraction with denominator <= 1001
            (12.5 -> 25/2, 29.97 -> 2997/100), so T frames last exactly T/fps seconds.
        audio: (C,N) float waveform in [-1,1], C = 1 (mono) or 2 (stereo). Samples beyond the video's
            duration are dropped; shorter audio is kept as is (the video is not cut).
        sample_rate: Hz, required with ``audio``. Rates AAC cannot store are resampled to 48 kHz.
        crf: x264 constant rate factor (official: 17, then 18 for the second encode).

    Returns:
        The path written. On any error the partial file is removed.

    Raises:
        InputError: empty or misshaped frames, frames smaller than 2x2, a non-positive fps, or audio
            that is misshaped, empty, or without a positive sample rate.
    """
    path = Path(path)
    rate = _frame_rate(fps)
    _, height, width = _check_frames(frames)
    size = (height // 2 * 2, width // 2 * 2)
    if size != (height, width):
        logger.info("Cropping %dx%d frames to %dx%d for yuv420p.", width, height, size[1], size[0])
    wave, audio_rate = (None, 0) if audio is None else _prepare_audio(audio, sample_rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _encode(path, frames, rate, size, crf, wave, audio_rate)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _encode(
    path: Path,
    frames: Array,
    rate: Fraction,
    size: tuple[int, int],
    crf: int,
    wave: np.ndarray | None,
    audio_rate: int,
) -> None:
    """Mux video frame by frame, each followed by the audio up to that frame's end.

    This interleaves the streams (FFmpeg's muxer only reorders within 10 s) and drops the audio
    after the last frame's end, at sample precision.
    """
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height = size[1], size[0]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf)}
        sound = None if wave is None else _add_audio_stream(container, wave.shape[0], audio_rate)
        written = 0
        for i in range(len(frames)):
            pixels = _to_uint8(frames[i])[: size[0], : size[1]]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(video.encode(frame))
            if sound is not None:
                end = min(wave.shape[1], (i + 1) * audio_rate * rate.denominator // rate.numerator)
                _mux_audio(container, sound, wave[:, written:end], written, audio_rate)
                written = end
        container.mux(video.encode(None))
        if sound is not None:
            container.mux(sound.encode(None))


def _add_audio_stream(container: av.container.OutputContainer, channels: int, rate: int) -> av.AudioStream:
    stream = container.add_stream("aac", rate=rate)
    stream.layout = _LAYOUTS[channels]  # bit rate: FFmpeg's default, as in the official command
    return stream


def _mux_audio(
    container: av.container.OutputContainer, stream: av.AudioStream, chunk: np.ndarray, start: int, rate: int
) -> None:
    """Encode (C,k) samples that start at sample ``start``; PyAV regroups them into AAC frames."""
    if chunk.shape[1] == 0:
        return
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=stream.layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    container.mux(stream.encode(frame))


def _frame_rate(fps: float | Fraction) -> Fraction:
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"The frame rate must be a positive number; got {fps}.")
    rate = Fraction(fps).limit_denominator(_MAX_FPS_DENOMINATOR)
    if rate <= 0:
        raise InputError(f"The frame rate {fps} is too small to store.")
    return rate


def _check_frames(frames: Array) -> tuple[int, int, int]:
    """Validate (T,H,W,3) uint8 or float frames; return T, H, W."""
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[3] != 3:
        raise InputError(f"Video frames must be shaped (T,H,W,3) RGB; got {shape}.")
    if shape[0] == 0:
        raise InputError("There are no frames to write.")
    if shape[1] < 2 or shape[2] < 2:
        raise InputError(f"Video frames must be at least 2x2 pixels; got {shape[2]}x{shape[1]}.")
    if not (_is_float(frames) or frames.dtype in (np.uint8, torch.uint8)):
        raise InputError(f"Video frames must be uint8 or float in [0,1]; got {frames.dtype}.")
    return shape[0], shape[1], shape[2]


def _is_float(x: Array) -> bool:
    return x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)


def _to_uint8(frame: Array) -> np.ndarray:
    """One (H,W,3) frame, uint8 or float in [0,1] -> uint8 numpy, rounding to the nearest level."""
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu()
        frame = frame.float().numpy() if frame.is_floating_point() else frame.numpy()
    if frame.dtype == np.uint8:
        return frame
    return np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def _prepare_audio(audio: Array, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """(C,N) waveform -> float32 (C,M) at a rate AAC can store, and that rate."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    if not _is_float(audio):
        raise InputError(f"Audio must be a float waveform in [-1,1]; got {audio.dtype}.")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] not in _LAYOUTS:
        raise InputError(f"Audio must be shaped (channels, samples) with 1 or 2 channels; got {audio.shape}.")
    if audio.shape[1] == 0:
        raise InputError("The audio has no samples.")
    if sample_rate is None or sample_rate <= 0:
        raise InputError(f"A positive audio sample rate is required with the audio; got {sample_rate}.")
    sample_rate = int(sample_rate)
    if sample_rate not in av.codec.Codec("aac", "w").audio_rates:
        logger.info("Resampling audio from %d Hz to %d Hz for AAC.", sample_rate, FALLBACK_AUDIO_RATE)
        return _resample(audio, sample_rate, FALLBACK_AUDIO_RATE), FALLBACK_AUDIO_RATE
    return audio, sample_rate


def _resample(audio: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """(C,N) float32 -> (C,N') float32 at ``new_rate`` with FFmpeg's resampler."""
    layout = _LAYOUTS[audio.shape[0]]
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=new_rate)
    parts = [f.to_ndarray() for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(parts, axis=1)


def read_video_info(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and durations (seconds) of a video file's first video and audio streams."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        duration = float(video.duration * video.time_base)
        audio = container.streams.audio[0] if container.streams.audio else None
        if audio is None:
            audio_fields = (None, None, 0)
        else:
            audio_fields = (float(audio.duration * audio.time_base), audio.rate, audio.channels)
        n_frames = sum(1 for packet in container.demux(video) if packet.size)
    return VideoInfo(n_frames, fps, duration, *audio_fields)
