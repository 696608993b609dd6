"""Emotion from a reference clip: face-expression and speech-emotion classifiers (tiny random transformers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_emotion_mixing import random_library
from transformers import (
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
)

from dicetalk_core.emotion import mix_emotions
from dicetalk_core.emotion.classifiers import (
    EXPRESSION_FOLDER,
    SPEECH_EMOTION_FOLDER,
    check_folder,
    classifier_folders,
    what_is_missing,
)
from dicetalk_core.emotion.expression import ExpressionClassifier, emotion_from_frames, sample_indices
from dicetalk_core.emotion.labels import LABEL_TO_PRESET, map_probabilities, preset_for_label
from dicetalk_core.emotion.speech import SpeechEmotionClassifier, emotion_from_speech
from dicetalk_core.errors import CheckpointError, InputError

FACE_LABELS = ["Anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "boredom"]
VOICE_LABELS = ["neu", "hap", "ang", "sad", "other"]


def write_face_classifier(folder: Path) -> Path:
    torch.manual_seed(3)
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        id2label=dict(enumerate(FACE_LABELS)),
        label2id={label: i for i, label in enumerate(FACE_LABELS)},
    )
    model = ViTForImageClassification(config)
    torch.nn.init.normal_(model.classifier.weight, std=2.0)  # random but far from uniform probabilities
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_voice_classifier(folder: Path) -> Path:
    torch.manual_seed(4)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        id2label=dict(enumerate(VOICE_LABELS)),
        label2id={label: i for i, label in enumerate(VOICE_LABELS)},
    )
    model = Wav2Vec2ForSequenceClassification(config)
    torch.nn.init.normal_(model.classifier.weight, std=3.0)
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("label", "preset"),
    [
        ("anger", "angry"),
        ("Angry", "angry"),
        ("happiness", "happy"),
        ("HAP", "happy"),
        ("surprise", "surprised"),
        ("fear", "fear"),
        ("fearful", "fear"),
        ("disgust", "disgusted"),
        ("contempt", "contempt"),
        ("sadness", "sad"),
        ("neutral", "neutral"),
        ("calm", "neutral"),
        ("pleasant surprise", "surprised"),
        ("boredom", None),
        ("LABEL_3", None),
    ],
)
def test_label_table(label, preset):
    assert preset_for_label(label) == preset


def test_probabilities_map_to_presets_and_unknowns_are_reported():
    installed = ["angry", "happy", "neutral", "sad"]
    mapping = map_probabilities({"anger": 0.2, "happiness": 0.3, "joy": 0.1, "boredom": 0.2, "fear": 0.2}, installed)
    assert mapping.weights == pytest.approx({"angry": 1 / 3, "happy": 2 / 3})
    assert mapping.unknown == {"boredom": 0.2} and mapping.not_installed == {"fear": 0.2}
    assert mapping.usable == pytest.approx(0.6)
    assert "'boredom'" in mapping.report() and "fear" in mapping.report()
    with pytest.raises(InputError, match="Known labels") as info:
        map_probabilities({"LABEL_0": 0.5, "LABEL_1": 0.5}, installed)
    assert all(label in str(info.value) for label in ("anger", "happiness", "surprise", "contempt"))
    assert set(LABEL_TO_PRESET.values()) == {
        "angry",
        "contempt",
        "disgusted",
        "fear",
        "happy",
        "neutral",
        "sad",
        "surprised",
    }


def test_missing_or_unsafe_classifier_files_are_named(tmp_path):
    root = tmp_path / EXPRESSION_FOLDER
    assert "does not exist" in what_is_missing(root, EXPRESSION_FOLDER)
    partial = root / "fer_vit"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    (partial / "pytorch_model.bin").write_bytes(b"pickle")
    message = what_is_missing(root, EXPRESSION_FOLDER)
    assert "fer_vit: missing preprocessor_config.json, model.safetensors" in message
    assert "config.json, model.safetensors and preprocessor_config.json" in message
    with pytest.raises(CheckpointError, match=r"missing preprocessor_config\.json, model\.safetensors"):
        check_folder(partial, EXPRESSION_FOLDER)
    with pytest.raises(CheckpointError, match="missing"):
        ExpressionClassifier.from_folder(partial)


def test_face_classifier_gives_the_probability_weighted_mix(tmp_path):
    lib = random_library(tmp_path / "emotions", ("angry", "disgusted", "fear", "happy", "neutral", "sad", "surprised"))
    folder = write_face_classifier(tmp_path / "models" / EXPRESSION_FOLDER / "tiny_vit")
    assert classifier_folders(tmp_path / "models" / EXPRESSION_FOLDER) == [folder]
    classifier = ExpressionClassifier.from_folder(folder)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.random((20, 48, 40, 3)).astype(np.float32))  # ComfyUI IMAGE layout
    result = emotion_from_frames(classifier, frames, lib, max_frames=5, crop_faces=False)

    # independent check: run the model on the same sampled frames, average, map by hand
    picked = sample_indices(20, 5)
    assert picked == [0, 5, 10, 14, 19]
    images = [(frames[i].numpy() * 255 + 0.5).astype(np.uint8) for i in picked]
    pixels = ViTImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.softmax(ViTForImageClassification.from_pretrained(folder)(pixel_values=pixels).logits, -1)
    mean = probs.mean(0)
    by_label = dict(zip(FACE_LABELS, mean.tolist(), strict=True))
    usable = sum(p for label, p in by_label.items() if label not in ("contempt", "boredom"))
    names = {"Anger": "angry", "disgust": "disgusted", "fear": "fear", "happiness": "happy"}
    names |= {"neutral": "neutral", "sadness": "sad", "surprise": "surprised"}
    expected = sum(by_label[label] / usable * lib.prior(preset) for label, preset in names.items())
    assert torch.allclose(result.emotion.prior(), expected, atol=1e-5)
    assert max(by_label.values()) > 0.3  # the tiny model is not uniform, so the test can tell mixes apart
    assert result.estimate.mapping.unknown == {"boredom": pytest.approx(by_label["boredom"])}
    assert result.estimate.mapping.not_installed == {"contempt": pytest.approx(by_label["contempt"])}
    assert "'boredom'" in result.report and "5 frames" in result.report
    assert result.emotion.provenance["source"] == "face"

    with_faces = emotion_from_frames(classifier, frames, lib, max_frames=2)  # no face in noise: whole frames
    assert "a face found in 0" in with_faces.report


def speech_like(seconds: float, rate: int, silent: tuple[float, float] | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.normal(size=t.size)
    if silent is not None:
        wave[int(silent[0] * rate) : int(silent[1] * rate)] = 0
    return np.stack([wave, wave * 0.9]).astype(np.float32)  # stereo (C, n)


def test_voice_classifier_makes_a_timeline_of_segments(tmp_path):
    lib = random_library(tmp_path / "emotions", ("angry", "happy", "neutral", "sad"))
    classifier = SpeechEmotionClassifier.from_folder(write_voice_classifier(tmp_path / SPEECH_EMOTION_FOLDER))
    audio = speech_like(6.8, 22_050, silent=(2.0, 4.0))  # segments 0-2, [2-4 silent], 4-6.8 (tail merged)
    voice = emotion_from_speech(classifier, audio, 22_050, lib, segment_seconds=2.0)
    assert voice.times == pytest.approx([1.0, 5.4], abs=1e-3)
    assert not voice.emotion.is_static
    frames = voice.emotion.priors(85)  # 6.8 s at 12.5 fps
    first, second = (e.prior for e in voice.estimates)
    assert not torch.allclose(first, second, atol=1e-3)
    assert torch.allclose(frames[0], first, atol=1e-6)  # before the first centre: held
    assert torch.allclose(frames[round(1.0 * 12.5)], first, atol=1e-5)
    assert torch.allclose(frames[round(5.4 * 12.5)], second, atol=1e-5)
    w = (40 / 12.5 - 1.0) / (5.4 - 1.0)  # frame 40 (3.2 s): linear between the centres
    assert torch.allclose(frames[40], (1 - w) * first + w * second, atol=1e-5)
    for estimate in voice.estimates:  # each segment: the mapped mix of that segment's probabilities
        probs = estimate.probabilities
        usable = 1.0 - probs["other"]
        expected = sum(
            probs[label] / usable * lib.prior(p)
            for label, p in zip(VOICE_LABELS[:4], ["neutral", "happy", "angry", "sad"], strict=True)
        )
        assert torch.allclose(estimate.prior, expected, atol=1e-5)
    assert "'other'" in voice.report and voice.emotion.provenance["source"] == "voice"

    with pytest.raises(InputError, match="silent"):
        emotion_from_speech(classifier, np.zeros((1, 16_000), np.float32), 16_000, lib)


def test_face_and_voice_combine_by_weight(tmp_path):
    lib = random_library(tmp_path / "emotions")
    face = emotion_from_frames(
        ExpressionClassifier.from_folder(write_face_classifier(tmp_path / "face")),
        np.random.default_rng(1).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8),
        lib,
        crop_faces=False,
    ).emotion
    voice = emotion_from_speech(
        SpeechEmotionClassifier.from_folder(write_voice_classifier(tmp_path / "voice")),
        speech_like(4.0, 16_000),
        16_000,
        lib,
    ).emotion
    combined = mix_emotions([(face, 0.25), (voice, 0.75)])
    assert torch.allclose(combined.priors(50), 0.25 * face.prior()[None] + 0.75 * voice.priors(50), atol=1e-6)
