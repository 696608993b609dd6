"""Audio front end: decoding, mono/16 kHz, Whisper chunks, per-frame windows, errors, long audio.

A tiny random Whisper encoder is built here (real Whisper weights are never needed). Audio files are
written at test time with soundfile or PyAV.
"""

from __future__ import annotations

import logging
import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from dicetalk_core.audio import (
    WhisperAudioEncoder,
    audio_file_windows,
    audio_windows,
    frame_windows,
    load_audio_file,
    pad_hidden_states,
    to_mono_16k,
)
from dicetalk_core.errors import CancelledError, CheckpointError, InputError
from dicetalk_core.loaders.whisper import load_whisper
from dicetalk_core.models.layouts import TINY
from dicetalk_core.rates import SAMPLE_RATE

TINY_WHISPER = TINY.whisper
HIDDEN_STATES = (TINY_WHISPER["encoder_layers"] + 1, TINY_WHISPER["d_model"])
"""Per audio position: the embeddings and every encoder layer's output."""


@pytest.fixture(scope="module")
def tiny_encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    return WhisperEncoder(WhisperConfig(**TINY_WHISPER)).eval()


@pytest.fixture(scope="module")
def whisper(tiny_encoder: WhisperEncoder) -> WhisperAudioEncoder:
    return WhisperAudioEncoder(WhisperFeatureExtractor(), tiny_encoder)


@pytest.fixture(scope="module")
def short_clip(whisper) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """3.3 s at 24 kHz: (source samples, 16 kHz waveform, all hidden states)."""
    samples = speech_like(3.3, 24000)
    wave = to_mono_16k(samples, 24000)
    return samples, wave, whisper.hidden_states(wave)


@pytest.fixture(scope="module")
def long_clip(whisper) -> tuple[np.ndarray, torch.Tensor]:
    """70 s at 16 kHz (three Whisper chunks): (samples, all hidden states)."""
    samples = speech_like(70.0, SAMPLE_RATE)
    return samples, whisper.hidden_states(samples[0])


def speech_like(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic modulated chirp plus noise, float32 ``(channels, n)`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.4 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * (150 + 200 * t) * t)
    noise = 0.03 * rng.standard_normal((channels, t.size))
    return np.clip(tone + noise, -1, 1).astype(np.float32)


def official_windows(states: torch.Tensor, audio_len: int, step: int) -> torch.Tensor:
    """The slicing of the official test(), restated: cut, zero-pad 4/6, frame i at 2*step*i."""
    prompts = states[:, : audio_len * 2]
    prompts = torch.cat([torch.zeros_like(prompts[:, :4]), prompts, torch.zeros_like(prompts[:, :6])], 1)
    clips = [prompts[:, i * 2 * step : i * 2 * step + 10] for i in range(audio_len // step)]
    return torch.cat(clips)


def write_with_pyav(path, samples: np.ndarray, rate: int, codec: str) -> None:
    """Encode float ``(channels, n)`` samples with PyAV (planar float input)."""
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


# ----------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "PCM_U8"])
def test_wav_decoding_matches_soundfile(tmp_path, subtype):
    path = tmp_path / "clip.wav"
    sf.write(path, speech_like(0.5, 22050, channels=2).T, 22050, subtype=subtype)
    samples, rate = load_audio_file(path)
    expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == expected_rate == 22050
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, expected.T)


def test_flac_decoding_is_lossless(tmp_path):
    pcm = np.round(speech_like(1.0, 44100, channels=2) * 32767).astype(np.int16)
    path = tmp_path / "clip.flac"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T.reshape(1, -1)), format="s16", layout="stereo")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    samples, rate = load_audio_file(path)
    assert rate == 44100
    np.testing.assert_array_equal(samples, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize(("suffix", "codec"), [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_lossy_files_decode_through_pyav(tmp_path, suffix, codec):
    source = speech_like(2.0, 44100, channels=2)
    path = tmp_path / f"clip.{suffix}"
    write_with_pyav(path, source, 44100, codec)
    samples, rate = load_audio_file(path)
    assert rate == 44100
    assert samples.shape[0] == 2
    assert abs(samples.shape[1] - source.shape[1]) < 0.1 * 44100
    rms = np.sqrt((samples**2).mean())
    assert rms == pytest.approx(np.sqrt((source**2).mean()), rel=0.1)


def test_decoding_stops_at_max_seconds(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, speech_like(3.0, 8000).T, 8000, subtype="PCM_16")
    samples, _ = load_audio_file(path, max_seconds=1.25)
    full, _ = load_audio_file(path)
    np.testing.assert_array_equal(samples, full[:, :10000])


def test_missing_or_broken_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio_file(tmp_path / "nope.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(InputError, match="could not be decoded"):
        load_audio_file(text)


# ----------------------------------------------------------------------------------- mono and 16 kHz


def test_stereo_is_the_channel_mean():
    stereo = speech_like(1.0, 44100, channels=2)
    mono = stereo.mean(axis=0)
    np.testing.assert_array_equal(to_mono_16k(stereo, 44100), to_mono_16k(mono, 44100))
    np.testing.assert_array_equal(to_mono_16k(stereo, SAMPLE_RATE), mono)
    same = np.stack([mono, mono])
    np.testing.assert_array_equal(to_mono_16k(same, 44100), to_mono_16k(mono, 44100))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resampling_keeps_pitch_level_and_length(rate):
    n = rate  # one second
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    out = to_mono_16k(tone, rate)
    assert out.dtype == np.float32
    assert out.shape == (math.ceil(n * SAMPLE_RATE / rate),)
    spectrum = np.abs(np.fft.rfft(out[:SAMPLE_RATE]))  # 1 Hz per bin
    assert np.argmax(spectrum) == 440
    middle = out[2000:-2000]
    assert np.sqrt((middle**2).mean()) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_16k_input_is_not_resampled():
    wave = speech_like(0.3, SAMPLE_RATE)[0]
    np.testing.assert_array_equal(to_mono_16k(wave, SAMPLE_RATE), wave)


def test_comfy_audio_waveform_layout():
    stereo = speech_like(0.5, 32000, channels=2)
    comfy = torch.from_numpy(stereo)[None]
    np.testing.assert_array_equal(to_mono_16k(comfy, 32000), to_mono_16k(stereo, 32000))
    with pytest.raises(InputError, match="batch of 2"):
        to_mono_16k(torch.zeros(2, 1, 100), 32000)
    with pytest.raises(InputError, match="shape"):
        to_mono_16k(np.zeros((1, 1, 1, 100)), 32000)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5])
def test_bad_sample_rate_raises(rate):
    with pytest.raises(InputError, match="sample rate"):
        to_mono_16k(np.ones(100, np.float32), rate)


# ------------------------------------------------------------------------------- whisper and windows


def test_hidden_states_stack_embedding_layers_and_final_norm(whisper, tiny_encoder, short_clip):
    _, wave, states = short_clip
    features = whisper.features(wave)
    assert features.shape == (1, 80, 3000)
    assert states.shape == (1, 1500, *HIDDEN_STATES)
    with torch.no_grad():
        out = tiny_encoder(features, output_hidden_states=True)
    torch.testing.assert_close(states[:, :, -1], out.last_hidden_state, rtol=0, atol=0)
    for index, layer_state in enumerate(out.hidden_states):
        torch.testing.assert_close(states[:, :, index], layer_state, rtol=0, atol=0)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_windows_follow_the_official_slicing(whisper, short_clip, step):
    samples, wave, states = short_clip
    result = audio_windows(whisper, samples, 24000, step=step)
    audio_len = wave.shape[0] // 640
    assert result.audio_len == audio_len
    assert result.num_video_frames == audio_len // step
    expected = official_windows(states, audio_len, step)
    torch.testing.assert_close(result.windows, expected, rtol=0, atol=0)
    assert result.windows.shape == (audio_len // step, 10, *HIDDEN_STATES)


def test_padding_is_zeros_around_the_used_states():
    states = torch.randn(1, 1500, 3, 4)
    padded = pad_hidden_states(states, 7)
    assert padded.shape == (1, 4 + 14 + 6, 3, 4)
    assert not padded[:, :4].any() and not padded[:, -6:].any()
    torch.testing.assert_close(padded[:, 4:18], states[:, :14], rtol=0, atol=0)
    windows = frame_windows(padded, 7, step=2)
    assert windows.shape == (3, 10, 3, 4)
    torch.testing.assert_close(windows[2], padded[0, 8:18], rtol=0, atol=0)


def test_long_audio_goes_through_several_chunks(whisper, long_clip):
    samples, states = long_clip
    calls: list[tuple[int, int]] = []
    result = audio_windows(whisper, samples, SAMPLE_RATE, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert result.audio_len == 70 * 25
    assert result.windows.shape == (875, 10, *HIDDEN_STATES)
    expected = official_windows(states, 1750, 2)
    torch.testing.assert_close(result.windows, expected, rtol=0, atol=0)


def test_cancel_stops_between_chunks(whisper, long_clip):
    samples, _ = long_clip
    calls: list[tuple[int, int]] = []
    checks = iter([False, True])
    with pytest.raises(CancelledError):
        audio_windows(
            whisper,
            samples,
            SAMPLE_RATE,
            progress=lambda done, total: calls.append((done, total)),
            should_stop=lambda: next(checks),
        )
    assert calls == [(1, 3)]


def test_max_frames_caps_and_logs(whisper, long_clip, caplog):
    samples, states = long_clip
    calls: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="dicetalk_core.audio"):
        result = audio_windows(
            whisper, samples, SAMPLE_RATE, max_frames=500, progress=lambda d, t: calls.append((d, t))
        )
    assert "max_frames=500" in caplog.text
    assert calls == [(1, 1)]
    assert result.audio_len == 500
    expected = official_windows(states, 500, 2)
    torch.testing.assert_close(result.windows, expected, rtol=0, atol=0)


def test_capped_file_decoding_gives_the_full_clip_result(whisper, tmp_path):
    path = tmp_path / "long.wav"
    samples = speech_like(70.0, 44100, channels=2)
    sf.write(path, samples.T, 44100, subtype="FLOAT")
    max_frames = 751  # just past one 30 s chunk: the second chunk is needed in full
    result = audio_file_windows(whisper, path, max_frames=max_frames)
    wave = to_mono_16k(samples, 44100)
    expected = official_windows(whisper.hidden_states(wave, 2), max_frames, 2)
    torch.testing.assert_close(result.windows, expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- errors


def test_empty_audio_raises(whisper, tmp_path):
    with pytest.raises(InputError, match="empty"):
        audio_windows(whisper, np.zeros(0, np.float32), SAMPLE_RATE)
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.int16), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(InputError, match="no audio samples"):
        audio_file_windows(whisper, path)


@pytest.mark.parametrize("level", [0.0, 3e-5])
def test_silent_audio_raises(whisper, level):
    quiet = np.full((2, SAMPLE_RATE), level, np.float32)
    with pytest.raises(InputError, match="silent"):
        audio_windows(whisper, quiet, SAMPLE_RATE)


def test_non_finite_audio_raises(whisper):
    samples = speech_like(0.5, SAMPLE_RATE)
    samples[0, 10] = np.nan
    with pytest.raises(InputError, match="NaN"):
        audio_windows(whisper, samples, SAMPLE_RATE)


def test_audio_shorter_than_one_video_frame(whisper):
    with pytest.raises(InputError, match="one video frame needs at least 80 ms"):
        audio_windows(whisper, speech_like(0.07, SAMPLE_RATE), SAMPLE_RATE)
    result = audio_windows(whisper, speech_like(0.08, SAMPLE_RATE), SAMPLE_RATE)
    assert result.audio_len == 2
    assert result.windows.shape == (1, 10, *HIDDEN_STATES)
    assert not result.windows[0, :4].any() and not result.windows[0, 8:].any()


@pytest.mark.parametrize(("step", "max_frames"), [(0, 10), (2, 0), (2.0, 10)])
def test_bad_settings_raise(whisper, step, max_frames):
    with pytest.raises(InputError):
        audio_windows(whisper, speech_like(1.0, SAMPLE_RATE), SAMPLE_RATE, step=step, max_frames=max_frames)


# -------------------------------------------------------------------------------------- whisper folder


def save_whisper_folder(folder, encoder: WhisperEncoder, weights_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    state = {f"model.encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["model.decoder.layer_norm.weight"] = torch.ones(encoder.config.d_model)
    if weights_name.endswith(".safetensors"):
        save_file(state, folder / weights_name)
    else:
        torch.save(state, folder / weights_name)


@pytest.mark.parametrize("weights_name", ["model.safetensors", "pytorch_model.bin"])
def test_load_whisper_from_a_local_folder(tmp_path, tiny_encoder, short_clip, weights_name):
    save_whisper_folder(tmp_path / "whisper-tiny", tiny_encoder, weights_name)
    loaded = load_whisper(tmp_path / "whisper-tiny")
    _, wave, states = short_clip
    torch.testing.assert_close(loaded.hidden_states(wave), states, rtol=0, atol=0)


def test_load_whisper_names_what_is_missing(tmp_path, tiny_encoder):
    with pytest.raises(CheckpointError, match=r"not found.*config\.json"):
        load_whisper(tmp_path / "absent")
    folder = tmp_path / "partial"
    folder.mkdir()
    tiny_encoder.config.save_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"lacks preprocessor_config\.json, model\.safetensors or pytorch"):
        load_whisper(folder)


def test_load_whisper_rejects_foreign_weights(tmp_path, tiny_encoder):
    folder = tmp_path / "wrong"
    save_whisper_folder(folder, tiny_encoder, "model.safetensors")
    save_file({"proj1.weight": torch.zeros(2, 2)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="no Whisper encoder weights"):
        load_whisper(folder)


def test_preprocessor_must_fit_the_encoder(tiny_encoder):
    with pytest.raises(CheckpointError, match="does not fit the encoder"):
        WhisperAudioEncoder(WhisperFeatureExtractor(feature_size=128), tiny_encoder)
