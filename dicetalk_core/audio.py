"""Audio front end: speech -> 16 kHz mono -> Whisper hidden states -> one window per video frame.

Matches the official preprocessing step by step:

1. Decode and mix to mono by averaging the channels (``librosa.load``), then resample to 16 kHz with
   soxr HQ and fix the length to ``ceil(n * 16000 / rate)`` (librosa 0.10 ``res_type='soxr_hq'``).
2. ``audio_len = samples // 640``: one audio frame per 40 ms (25 fps), capped at ``max_frames``
   (the official ``frame_num = 10000``, i.e. 400 s).
3. Every 30 s chunk (480000 samples) goes through ``WhisperFeatureExtractor`` (zero-padded to 30 s),
   then the Whisper encoder. All hidden states (embedding output and every layer, the last one after
   the final LayerNorm) are stacked on a new axis: ``(1, 1500, L+1, D)`` per chunk, 20 ms per position.
4. The states are cut to ``2 * audio_len`` positions and padded with 4 zero positions in front and 6
   behind. Video frame ``i`` gets the 10 positions starting at ``2 * step * i``, for
   ``i < audio_len // step``.

Only the chunks that the (possibly capped) audio needs are encoded, one at a time, so memory stays
bounded by the cap however long the input is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .errors import CancelledError, CheckpointError, InputError
from .rates import AUDIO_FPS, AUDIO_WINDOW, FRAME_STEP, MAX_AUDIO_FRAMES, SAMPLE_RATE, SAMPLES_PER_FRAME

logger = logging.getLogger(__name__)

POSITIONS_PER_FRAME = 2
"""Whisper encoder positions (20 ms each) per audio frame."""
PAD_FRONT = 4
PAD_BACK = 6
SILENCE_PEAK = 1e-4
"""Audio whose peak amplitude stays at or below this (-80 dBFS, ~3 steps of 16-bit) counts as silent."""
RESAMPLER_MARGIN_SECONDS = 1.0
"""Extra source audio kept after the last needed sample so the resampler's filter sees real data."""

_INT_FULL_SCALE = {"u8": 128.0, "s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called after each encoded 30 s chunk."""
StopFn = Callable[[], bool]
"""``should_stop()``: checked before each chunk; returning True raises :class:`CancelledError`."""


@dataclass(frozen=True)
class AudioWindows:
    """Whisper windows of one audio clip, one per generated video frame.

    Attributes:
        windows: ``(num_video_frames, 10, L+1, D)`` float32 on the CPU. A strided view into the padded
            hidden states (neighbouring windows overlap), so call ``.contiguous()`` before ``.view()``.
        audio_len: 25-fps audio frames used (after the ``max_frames`` cap).
    """

    windows: torch.Tensor
    audio_len: int

    @property
    def num_video_frames(self) -> int:
        return self.windows.shape[0]


# ---------------------------------------------------------------------------------------------- waveform


def load_audio_file(path: str | Path, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a file (wav, mp3, flac, m4a, ogg, video files...) with PyAV.

    Integer PCM is scaled like soundfile/librosa (``int16 / 32768``, ``int32 / 2**31``, ...), so a WAV
    file gives exactly what ``soundfile.read(dtype='float32')`` gives.

    Args:
        path: the audio file.
        max_seconds: stop decoding after this many seconds (None: decode everything).

    Returns:
        ``(samples, sample_rate)`` with samples float32 of shape ``(channels, n)``.

    Raises:
        InputError: the file is missing, not decodable, has no audio stream, or no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"{path} has no audio stream. Choose a file that contains sound.")
            samples, rate = _decode_stream(container, container.streams.audio[0], max_seconds, path)
    except av.FFmpegError as err:
        raise InputError(
            f"{path} could not be decoded as audio ({err}). Use a common format such as wav, mp3, "
            "flac, m4a or ogg, or re-export the file."
        ) from err
    if samples.shape[1] == 0:
        raise InputError(f"{path} contains no audio samples. Choose a file with sound in it.")
    return samples, rate


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    max_seconds: float | None,
    path: Path,
) -> tuple[np.ndarray, int]:
    """All frames of ``stream`` as ``(channels, n)`` float32 and the sample rate."""
    parts: list[np.ndarray] = []
    channels_rate: tuple[int, int] | None = None
    total = 0
    limit: float = math.inf
    for frame in container.decode(stream):
        block = _frame_to_float(frame)
        if channels_rate is None:
            channels_rate = (block.shape[0], frame.sample_rate)
            if max_seconds is not None:
                limit = math.ceil(max_seconds * frame.sample_rate)
        elif (block.shape[0], frame.sample_rate) != channels_rate:
            raise InputError(
                f"{path} changes its (channels, sample rate) mid-stream from {channels_rate} to "
                f"{(block.shape[0], frame.sample_rate)}. Re-export it with a fixed format."
            )
        parts.append(block)
        total += block.shape[1]
        if total >= limit:
            break
    if channels_rate is None:
        return np.zeros((1, 0), np.float32), stream.rate
    samples = np.concatenate(parts, axis=1)
    if total > limit:
        samples = samples[:, : int(limit)]
    return samples, channels_rate[1]


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as ``(channels, n)`` float32 in [-1, 1]."""
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        data = data.reshape(-1, frame.layout.nb_channels).T
    kind = frame.format.name.rstrip("p")
    if kind == "u8":
        return (data.astype(np.float32) - np.float32(128)) / np.float32(128)
    if kind in _INT_FULL_SCALE:
        return data.astype(np.float32) / np.float32(_INT_FULL_SCALE[kind])
    return data.astype(np.float32)


def as_channels_first(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bring a waveform to float32 ``(channels, n)``.

    Accepts ``(n,)``, ``(channels, n)`` or a ComfyUI AUDIO waveform ``(1, channels, n)``.
    """
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise InputError(
                f"Got a batch of {array.shape[0]} audio clips; DICE-Talk drives one portrait with one clip. "
                "Pass a single clip."
            )
        array = array[0]
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise InputError(f"Audio must have shape (n,), (channels, n) or (1, channels, n); got {array.shape}.")
    return array


def to_mono_16k(samples: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Mix to mono and resample to 16 kHz exactly as ``librosa.load(path, sr=16000)`` (librosa 0.10).

    Mono is the channel mean; resampling is soxr HQ, then the length is fixed to
    ``ceil(n * 16000 / sample_rate)`` (cut, or padded with zeros).

    Args:
        samples: ``(n,)``, ``(channels, n)`` or ``(1, channels, n)``, float in [-1, 1].
        sample_rate: rate of ``samples`` in Hz.

    Returns:
        ``(n16,)`` float32.

    Raises:
        InputError: empty audio, non-finite samples, or a bad sample rate.
    """
    _check_sample_rate(sample_rate)
    array = as_channels_first(samples)
    if array.shape[1] == 0:
        raise InputError("The audio is empty (0 samples). Connect an audio clip that contains speech.")
    if not np.isfinite(array).all():
        raise InputError("The audio contains NaN or infinite samples. Re-export or re-decode the clip.")
    mono = array.mean(axis=0)
    if sample_rate == SAMPLE_RATE:
        return mono
    size = math.ceil(mono.shape[0] * (SAMPLE_RATE / sample_rate))
    resampled = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ")
    if resampled.shape[0] >= size:
        return resampled[:size]
    return np.pad(resampled, (0, size - resampled.shape[0]))


def _check_sample_rate(sample_rate: int) -> None:
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise InputError(f"The audio sample rate must be a positive whole number of Hz; got {sample_rate!r}.")


def _check_not_silent(waveform: np.ndarray) -> None:
    peak = float(np.abs(waveform).max())
    if peak <= SILENCE_PEAK:
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
        raise InputError(
            f"The audio is silent (peak level {level} dBFS). DICE-Talk moves the lips from speech: "
            "connect a clip with audible speech (check the volume, the audio track and any trimming)."
        )


def audio_frame_count(n_samples_16k: int, max_frames: int | None = MAX_AUDIO_FRAMES) -> int:
    """``audio_len``: whole 40 ms frames in the 16 kHz waveform, capped at ``max_frames`` (logged)."""
    audio_len = n_samples_16k // SAMPLES_PER_FRAME
    if max_frames is not None and audio_len > max_frames:
        logger.warning(
            "Audio is longer than max_frames=%d frames (%.1f s); the rest is ignored. Raise max_frames to use more.",
            max_frames,
            max_frames / AUDIO_FPS,
        )
        return max_frames
    return audio_len


# ---------------------------------------------------------------------------------------------- whisper


class WhisperAudioEncoder:
    """Whisper feature extractor + encoder that turn 16 kHz audio into stacked hidden states.

    Args:
        feature_extractor: the checkpoint's ``WhisperFeatureExtractor`` (30 s chunks, log-mel).
        encoder: a ``WhisperEncoder`` with its weights loaded; put on the device and dtype to run in.
    """

    def __init__(self, feature_extractor: WhisperFeatureExtractor, encoder: WhisperEncoder) -> None:
        config = encoder.config
        frames = config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
        if (
            feature_extractor.sampling_rate != SAMPLE_RATE
            or feature_extractor.feature_size != config.num_mel_bins
            or feature_extractor.nb_max_frames != frames
        ):
            raise CheckpointError(
                "The Whisper preprocessor does not fit the encoder: it gives "
                f"{feature_extractor.feature_size} mel bins x {feature_extractor.nb_max_frames} frames at "
                f"{feature_extractor.sampling_rate} Hz, the encoder wants {config.num_mel_bins} x {frames} "
                f"at {SAMPLE_RATE} Hz. Use config.json and preprocessor_config.json of the same model."
            )
        self.feature_extractor = feature_extractor
        self.encoder = encoder.eval()

    @property
    def chunk_samples(self) -> int:
        """16 kHz samples per Whisper chunk (480000 = 30 s)."""
        return self.feature_extractor.n_samples

    @property
    def chunk_positions(self) -> int:
        """Encoder positions per chunk (1500)."""
        return self.encoder.config.max_source_positions

    def features(self, chunk: np.ndarray) -> torch.Tensor:
        """Log-mel features of at most one chunk of 16 kHz audio, zero-padded to 30 s.

        Returns:
            ``(1, n_mels, 3000)`` float32 on the CPU.
        """
        extracted = self.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return extracted.input_features

    @torch.no_grad()
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """All encoder hidden states of one chunk, stacked on axis 2.

        Args:
            features: ``(1, n_mels, 3000)``.

        Returns:
            ``(1, 1500, L+1, D)`` float32 on the CPU: [embedding output, layer 0 .. L-2 outputs,
            final LayerNorm of layer L-1's output].
        """
        param = next(self.encoder.parameters())
        out = self.encoder(features.to(param.device, param.dtype), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=2).to("cpu", torch.float32)

    def hidden_states(
        self,
        waveform: np.ndarray,
        n_chunks: int | None = None,
        *,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> torch.Tensor:
        """Encode ``waveform`` chunk by chunk.

        Args:
            waveform: ``(n16,)`` float32 16 kHz mono.
            n_chunks: how many 30 s chunks to encode from the start (default: all).
            progress: called as ``progress(done, n_chunks)`` after each chunk.
            should_stop: checked before each chunk.

        Returns:
            ``(1, n_chunks * 1500, L+1, D)`` float32 on the CPU.

        Raises:
            CancelledError: ``should_stop()`` returned True.
        """
        available = math.ceil(waveform.shape[0] / self.chunk_samples)
        n_chunks = available if n_chunks is None else n_chunks
        if not 0 < n_chunks <= available:
            raise ValueError(f"n_chunks={n_chunks} outside 1..{available} for {waveform.shape[0]} samples")
        config = self.encoder.config
        states = torch.empty(
            1, n_chunks * self.chunk_positions, config.encoder_layers + 1, config.d_model, dtype=torch.float32
        )
        for index in range(n_chunks):
            if should_stop is not None and should_stop():
                raise CancelledError("Audio encoding was cancelled.")
            start = index * self.chunk_samples
            chunk = self.encode(self.features(waveform[start : start + self.chunk_samples]))
            states[:, index * self.chunk_positions : (index + 1) * self.chunk_positions] = chunk
            if progress is not None:
                progress(index + 1, n_chunks)
        return states


# ---------------------------------------------------------------------------------------------- windows


def pad_hidden_states(states: torch.Tensor, audio_len: int) -> torch.Tensor:
    """Cut stacked hidden states to ``2 * audio_len`` positions and pad 4 zeros in front, 6 behind.

    Args:
        states: ``(1, T, L+1, D)`` with ``T >= 2 * audio_len``.

    Returns:
        ``(1, 4 + 2 * audio_len + 6, L+1, D)``.
    """
    used = POSITIONS_PER_FRAME * audio_len
    if states.shape[1] < used:
        raise ValueError(f"{states.shape[1]} hidden-state positions, {used} needed for {audio_len} frames")
    padded = states.new_zeros(states.shape[0], PAD_FRONT + used + PAD_BACK, *states.shape[2:])
    padded[:, PAD_FRONT : PAD_FRONT + used] = states[:, :used]
    return padded


def frame_windows(padded: torch.Tensor, audio_len: int, step: int = FRAME_STEP) -> torch.Tensor:
    """One 10-position window per video frame: frame ``i`` starts at ``2 * step * i``.

    Args:
        padded: ``(1, 4 + 2 * audio_len + 6, L+1, D)`` from :func:`pad_hidden_states`.

    Returns:
        ``(audio_len // step, 10, L+1, D)``, a strided view of ``padded``.
    """
    count = audio_len // step
    windows = padded[0].unfold(0, AUDIO_WINDOW, POSITIONS_PER_FRAME * step)[:count]
    return windows.permute(0, 3, 1, 2)


def audio_windows(
    whisper: WhisperAudioEncoder,
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    step: int = FRAME_STEP,
    max_frames: int | None = MAX_AUDIO_FRAMES,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> AudioWindows:
    """Whisper windows for every video frame of a waveform (mono or multichannel, any rate).

    Args:
        whisper: the loaded encoder.
        samples: ``(n,)``, ``(channels, n)`` or a ComfyUI AUDIO waveform ``(1, channels, n)``.
        sample_rate: rate of ``samples`` in Hz.
        step: audio frames per video frame (official 2).
        max_frames: cap on 25-fps audio frames (official 10000 = 400 s); None for no cap.
        progress: ``progress(done, total)`` after each 30 s chunk.
        should_stop: checked before each chunk; True raises :class:`CancelledError`.

    Raises:
        InputError: empty, silent or too short audio, or bad settings.
        CancelledError: ``should_stop()`` returned True.
    """
    _check_settings(step, max_frames)
    _check_sample_rate(sample_rate)
    source = as_channels_first(samples)
    limit = source_seconds_needed(whisper, max_frames)
    if limit is not None:
        source = source[:, : math.ceil(limit * sample_rate)]
    waveform = to_mono_16k(source, sample_rate)
    _check_not_silent(waveform)
    audio_len = audio_frame_count(waveform.shape[0], max_frames)
    if audio_len // step == 0:
        raise InputError(
            f"The audio is {1000 * waveform.shape[0] / SAMPLE_RATE:.0f} ms long; one video frame needs at "
            f"least {1000 * step * SAMPLES_PER_FRAME / SAMPLE_RATE:.0f} ms. Use a longer clip."
        )
    n_chunks = math.ceil(POSITIONS_PER_FRAME * audio_len / whisper.chunk_positions)
    states = whisper.hidden_states(waveform, n_chunks, progress=progress, should_stop=should_stop)
    padded = pad_hidden_states(states, audio_len)
    return AudioWindows(frame_windows(padded, audio_len, step), audio_len)


def audio_file_windows(
    whisper: WhisperAudioEncoder,
    path: str | Path,
    *,
    step: int = FRAME_STEP,
    max_frames: int | None = MAX_AUDIO_FRAMES,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> AudioWindows:
    """:func:`audio_windows` for an audio file; decoding stops once the capped audio is covered."""
    _check_settings(step, max_frames)
    samples, rate = load_audio_file(path, max_seconds=source_seconds_needed(whisper, max_frames))
    return audio_windows(
        whisper, samples, rate, step=step, max_frames=max_frames, progress=progress, should_stop=should_stop
    )


def source_seconds_needed(whisper: WhisperAudioEncoder, max_frames: int | None) -> float | None:
    """Seconds of source audio that give the same result as the whole clip under the cap.

    The last encoded chunk reads up to 30 s past the cap, and the resampler a little beyond that.
    """
    if max_frames is None:
        return None
    needed = max_frames * SAMPLES_PER_FRAME + whisper.chunk_samples
    return needed / SAMPLE_RATE + RESAMPLER_MARGIN_SECONDS


def _check_settings(step: int, max_frames: int | None) -> None:
    if not (isinstance(step, int) and step >= 1):
        raise InputError(f"step must be a whole number >= 1 (official 2); got {step!r}.")
    if max_frames is not None and not (isinstance(max_frames, int) and max_frames >= 1):
        raise InputError(f"max_frames must be a whole number >= 1 or None; got {max_frames!r}.")
