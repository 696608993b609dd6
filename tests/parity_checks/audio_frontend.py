"""Parity of the audio front end: WAV file -> 16 kHz -> Whisper hidden states -> per-frame windows.

Everything (Whisper config, step, source rate, tolerances) comes from the case. The stored PCM is
written as a 16-bit WAV at the source rate and goes through the same file loader as user audio.
Stages are compared twice where useful: along our own chain (at the stage's tolerance) and from the
stored previous stage (exact where the stage is pure slicing).
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path

import numpy as np
import torch
from golden import GoldenCase, assert_close
from transformers import WhisperConfig, WhisperFeatureExtractor

from dicetalk_core.audio import (
    WhisperAudioEncoder,
    audio_file_windows,
    audio_frame_count,
    frame_windows,
    load_audio_file,
    pad_hidden_states,
    to_mono_16k,
)
from dicetalk_core.loaders.whisper import build_whisper_encoder
from dicetalk_core.rates import MAX_AUDIO_FRAMES


def check(case: GoldenCase, report: dict) -> None:
    config = WhisperConfig(**case.meta["whisper"]["config"])
    encoder = build_whisper_encoder(config, case.group("weights."), source=case.name)
    whisper = WhisperAudioEncoder(WhisperFeatureExtractor(feature_size=config.num_mel_bins), encoder)
    step = int(case.meta["step"])
    max_frames = int(case.meta.get("frame_num", MAX_AUDIO_FRAMES))  # official config.frame_num

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.wav"
        _write_pcm16_wav(path, case["inputs.waveform_pcm16"].numpy(), int(case.meta["waveform"]["sample_rate"]))
        waveform = _check_waveform(case, path, report)
        result = audio_file_windows(whisper, path, step=step, max_frames=max_frames)

    states = _check_encoder(case, whisper, waveform, report)
    audio_len = audio_frame_count(waveform.shape[0], max_frames)
    _check_windows(case, states, audio_len, step, report)

    tol = case.tolerance("encoder_hidden_states")
    assert_close("file_to_windows.audio_windows", result.windows, case["outputs.audio_windows"], *tol, report)
    for name, value in (("audio_len", result.audio_len), ("num_video_frames", result.num_video_frames)):
        assert_close(f"file_to_windows.{name}", torch.tensor([value]), case[f"outputs.{name}"], 0, 0, report)


def _check_waveform(case: GoldenCase, path: Path, report: dict) -> np.ndarray:
    """Decode the WAV (exact int16/32768), then mono 16 kHz against librosa's output."""
    pcm = case["inputs.waveform_pcm16"].numpy()
    samples, rate = load_audio_file(path)
    assert rate == int(case.meta["waveform"]["sample_rate"]), f"decoded rate {rate}"
    pcm_float = torch.from_numpy(pcm.reshape(pcm.shape[0], -1).T.astype(np.float32) / 32768)
    assert_close("wav_decode", torch.from_numpy(samples), pcm_float, 0, 0, report)
    waveform = to_mono_16k(samples, rate)
    # Stored only when the source is not 16 kHz; otherwise librosa returns the decoded samples as is.
    expected = case.tensors.get("intermediate.waveform_16k", pcm_float.mean(dim=0))
    assert_close("waveform_16k", torch.from_numpy(waveform), expected, *case.tolerance("waveform_16k"), report)
    return waveform


def _check_encoder(case: GoldenCase, whisper: WhisperAudioEncoder, waveform: np.ndarray, report: dict) -> torch.Tensor:
    """Log-mel features per 30 s chunk and stacked hidden states (ours, and from the stored features)."""
    size = whisper.chunk_samples
    features = torch.cat([whisper.features(waveform[i : i + size]) for i in range(0, len(waveform), size)], -1)
    stored_features = case["intermediate.input_features"]
    assert_close("input_features", features, stored_features, *case.tolerance("input_features"), report)

    tol = case.tolerance("encoder_hidden_states")
    expected = case["outputs.encoder_hidden_states_stacked"]
    blocks = stored_features.split(whisper.feature_extractor.nb_max_frames, dim=-1)
    from_stored = torch.cat([whisper.encode(block) for block in blocks], dim=1)
    assert_close("encoder_hidden_states_from_stored_features", from_stored, expected, *tol, report)
    states = whisper.hidden_states(waveform)
    assert_close("encoder_hidden_states_stacked", states, expected, *tol, report)
    return states


def _check_windows(case: GoldenCase, states: torch.Tensor, audio_len: int, step: int, report: dict) -> None:
    """audio_len, padding and windows: exact from the stored states, within tolerance from ours."""
    assert_close("audio_len", torch.tensor([audio_len]), case["outputs.audio_len"], 0, 0, report)
    expected_padded = case["outputs.audio_prompts_padded"]
    expected_windows = case["outputs.audio_windows"]
    stored_states = case["outputs.encoder_hidden_states_stacked"]
    exact_padded = pad_hidden_states(stored_states, audio_len)
    assert_close("audio_prompts_padded_from_stored_states", exact_padded, expected_padded, 0, 0, report)
    exact_windows = frame_windows(expected_padded, audio_len, step)
    assert_close("audio_windows_from_stored_padded", exact_windows, expected_windows, 0, 0, report)

    tol = case.tolerance("encoder_hidden_states")
    padded = pad_hidden_states(states, audio_len)
    assert_close("audio_prompts_padded", padded, expected_padded, *tol, report)
    assert_close("audio_windows", frame_windows(padded, audio_len, step), expected_windows, *tol, report)


def _write_pcm16_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Write int16 samples ``(n,)`` or ``(n, channels)`` as a PCM_16 WAV file."""
    frames = pcm.reshape(pcm.shape[0], -1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.astype("<i2").tobytes())
