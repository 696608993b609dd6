"""The emotion nodes inside a real ComfyUI server: timeline text, validation, save/reload, emotion from a clip.

Runs on its own server with a models folder of its own: the tiny DICE-Talk folder plus all eight
preset names (random priors), a tiny face-expression classifier and a tiny speech-emotion classifier
(and one incomplete classifier folder). Skips without ``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dicetalk_harness import api_workflow, nodes_of, pack_server, tiny
from safetensors import safe_open
from test_emotion_classifiers import write_face_classifier, write_voice_classifier
from test_emotion_mixing import random_library

from dicetalk_core.model_files import OFFICIAL_PRESETS
from dicetalk_core.random_models import write_models_folder

EMOTION_NODES = (
    "DICEEmotionPreset",
    "DICEEmotionTimeline",
    "DICEEmotionMix",
    "DICESaveEmotion",
    "DICEEmotionBank",
    "DICEEmotionEmbedder",
)
RUN_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def emotion_models(comfy_dest: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("emotion_models")
    dice = write_models_folder(root / "dice_talk")
    random_library(dice / "emotions", OFFICIAL_PRESETS)
    write_face_classifier(dice / "expression" / "tiny_vit")
    write_voice_classifier(dice / "speech_emotion" / "tiny_w2v")
    (dice / "speech_emotion" / "broken").mkdir()
    (dice / "speech_emotion" / "broken" / "config.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def server(comfy_dest: Path, emotion_models: Path, input_dir: Path, tmp_path_factory) -> Iterator:
    with pack_server(comfy_dest, emotion_models, input_dir, tmp_path_factory.mktemp("emotion_output")) as srv:
        yield srv


def run(server, prompt: dict):
    return server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=lambda *_: None)


def run_ok(server, prompt: dict):
    result = run(server, prompt)
    assert result.status == "success", f"{result.status}: {result.error}"
    return result


def preview_text(result, node_id: str) -> str:
    return result.outputs[node_id]["text"][0]


def with_timeline(keyframes: str, audio_features: bool = True) -> dict:
    """The basic example workflow with its preset replaced by a timeline and a preview of the summary."""
    prompt = copy.deepcopy(tiny(api_workflow("basic")))
    (preset,) = nodes_of(prompt, "DICEEmotionPreset")
    prompt[preset] = {"class_type": "DICEEmotionTimeline", "inputs": {"keyframes": keyframes}}
    (bank,) = nodes_of(prompt, "DICEEmotionBank")
    if audio_features:
        (encoder,) = nodes_of(prompt, "DICEAudioEncoder")
        prompt[bank]["inputs"]["audio_features"] = [encoder, 0]
    prompt["900"] = {"class_type": "PreviewAny", "inputs": {"source": [preset, 1]}}
    return prompt


def test_emotion_nodes_register_with_a_tooltip_on_every_input(server):
    info = server.assert_nodes(EMOTION_NODES)
    for name in EMOTION_NODES:
        node = info[name]
        assert node["category"] == "DICE-Talk" and node["display_name"].startswith("DICE-Talk")
        for group in ("required", "optional"):
            for key, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{key} has no tooltip"
    presets = info["DICEEmotionPreset"]["input"]["required"]["preset"][0]
    assert set(OFFICIAL_PRESETS) <= set(presets)
    embedder = info["DICEEmotionEmbedder"]["input"]["required"]
    assert embedder["face_model"][0] == ["auto", "expression/tiny_vit"]
    assert embedder["voice_model"][0] == ["auto", "speech_emotion/broken", "speech_emotion/tiny_w2v"]


def test_timeline_text_drives_a_whole_video(server):
    result = run_ok(server, with_timeline("slightly sad, then very happy at 1s"))
    assert any(f.endswith(".mp4") for f in result.output_files)
    assert preview_text(result, "900") == "slightly sad, then very happy at 1s [changes over time]"


def test_bad_text_is_refused_when_queued_with_the_known_words(server):
    from comfy_server import ComfyError

    with pytest.raises(ComfyError) as info:
        run(server, with_timeline("slightly hangry, then happy"))
    message = str(info.value)
    assert "Could not understand 'hangry'" in message
    assert "slightly (x0.5)" in message and "then" in message


def test_a_timeline_without_audio_features_says_what_to_connect(server):
    result = run(server, with_timeline("sad then happy", audio_features=False))
    assert result.status == "error"
    assert "connect the audio features" in result.error["exception_message"]


def test_save_an_emotion_and_use_it_as_a_preset(server, emotion_models):
    saved = {
        "1": {
            "class_type": "DICEEmotionTimeline",
            "inputs": {"keyframes": '[{"emotion": "sad"}, {"at": "1s", "emotion": "happy", "ease": "linear"}]'},
        },
        "2": {
            "class_type": "DICESaveEmotion",
            "inputs": {"emotion": ["1", 0], "name": "sad_to_happy", "overwrite": True},
        },
    }
    result = run_ok(server, saved)
    path = emotion_models / "dice_talk" / "emotions" / "sad_to_happy.safetensors"
    assert result.outputs["2"]["text"] == [str(path)]
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["kind"] == "timeline" and json.loads(meta["provenance"])["source"] == "json"

    prompt = copy.deepcopy(tiny(api_workflow("basic")))
    (preset,) = nodes_of(prompt, "DICEEmotionPreset")
    prompt[preset]["inputs"] = {"preset": "sad_to_happy", "intensity": 1.2}
    (bank,) = nodes_of(prompt, "DICEEmotionBank")
    (encoder,) = nodes_of(prompt, "DICEAudioEncoder")
    prompt[bank]["inputs"]["audio_features"] = [encoder, 0]
    run_ok(server, prompt)

    clash = copy.deepcopy(saved)
    clash["2"]["inputs"] |= {"name": "happy"}
    result = run(server, clash)
    assert result.status == "error" and "word of the emotion text" in result.error["exception_message"]


def test_emotion_from_a_clip_face_and_voice(server, emotion_models):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "dicetalk_portrait.png"}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": "dicetalk_speech.wav"}},
        "3": {
            "class_type": "DICEEmotionEmbedder",
            "inputs": {
                "face_model": "auto",
                "voice_model": "auto",
                "face_weight": 0.3,
                "segment_seconds": 1.0,
                "max_frames": 4,
                "frames": ["1", 0],
                "audio": ["2", 0],
            },
        },
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        "5": {"class_type": "DICESaveEmotion", "inputs": {"emotion": ["3", 0], "name": "from_clip", "overwrite": True}},
    }
    result = run_ok(server, prompt)
    report = preview_text(result, "4")
    assert report.startswith("face (tiny_vit): 1 frames")
    assert "voice (tiny_w2v), 2 segments" in report and "unknown labels (ignored): 'boredom'" in report
    with safe_open(str(emotion_models / "dice_talk" / "emotions" / "from_clip.safetensors"), framework="pt") as f:
        provenance = json.loads(f.metadata()["provenance"])
    assert provenance["source"] == "mix"
    assert [p["of"]["source"] for p in provenance["parts"]] == ["face", "voice"]
    assert [round(p["weight"], 2) for p in provenance["parts"]] == [0.3, 0.7]

    broken = copy.deepcopy(prompt)
    broken["3"]["inputs"]["voice_model"] = "speech_emotion/broken"
    result = run(server, broken)
    assert result.status == "error"
    assert "missing preprocessor_config.json, model.safetensors" in result.error["exception_message"]
