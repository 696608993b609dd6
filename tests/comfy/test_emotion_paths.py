"""One emotion, written the ways the nodes offer, gives the same frames in a real ComfyUI.

The ``basic`` example's preset is fanned out into: the preset node, the word in DICE-Talk Emotion
Timeline, a one-keyframe JSON timeline, DICE-Talk Emotion Mix of the preset alone, and a timeline that
holds the emotion; each goes through its own Emotion Bank and Sampler (same seed) into a lossless PNG.
All must be identical to the preset's frames, and another emotion's must not. Skips without
``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from dicetalk_harness import api_workflow, nodes_of, tiny
from PIL import Image

RUN_TIMEOUT = 600.0
SPELLINGS = {
    "timeline_word": {"class_type": "DICEEmotionTimeline", "inputs": {"keyframes": "happy"}},
    "timeline_json": {
        "class_type": "DICEEmotionTimeline",
        "inputs": {"keyframes": '[{"at": "0s", "emotion": "happy"}]'},
    },
    "held_timeline": {"class_type": "DICEEmotionTimeline", "inputs": {"keyframes": "happy, then happy at 1s"}},
    "other_emotion": {"class_type": "DICEEmotionPreset", "inputs": {"preset": "neutral", "intensity": 1.0}},
}


def fanned_out_prompt() -> dict:
    """``basic`` (tiny settings) with one bank + sampler + SaveImage per way of writing the emotion."""
    prompt = copy.deepcopy(tiny(api_workflow("basic")))
    (preset,) = nodes_of(prompt, "DICEEmotionPreset")
    (bank,) = nodes_of(prompt, "DICEEmotionBank")
    (sampler,) = nodes_of(prompt, "DICESampler")
    (encoder,) = nodes_of(prompt, "DICEAudioEncoder")
    kept = {preset, bank, sampler, *nodes_of(prompt, "LoadImage"), *nodes_of(prompt, "LoadAudio")}
    kept |= {encoder, *nodes_of(prompt, "DICEModelLoader")}
    prompt = {key: node for key, node in prompt.items() if key in kept}
    ids = {"preset": preset}
    for offset, (name, node) in enumerate(SPELLINGS.items()):
        ids[name] = str(100 + offset)
        prompt[ids[name]] = copy.deepcopy(node)
    ids["mix_of_one"] = "199"  # a zero-weight part is dropped: the mix of the preset alone
    prompt["199"] = {
        "class_type": "DICEEmotionMix",
        "inputs": {"emotion_1": [preset, 0], "weight_1": 1.0, "emotion_2": [ids["other_emotion"], 0], "weight_2": 0.0},
    }
    for offset, (name, source) in enumerate(ids.items()):
        bank_id, sampler_id, save_id = (str(200 + 3 * offset + k) for k in range(3))
        prompt[bank_id] = copy.deepcopy(prompt[bank])
        prompt[bank_id]["inputs"] |= {"emotion": [source, 0], "audio_features": [encoder, 0]}
        prompt[sampler_id] = copy.deepcopy(prompt[sampler])
        prompt[sampler_id]["inputs"]["emotion_cond"] = [bank_id, 0]
        prompt[save_id] = {
            "class_type": "SaveImage",
            "inputs": {"images": [sampler_id, 0], "filename_prefix": f"emotion_paths/{name}"},
        }
    del prompt[bank], prompt[sampler]
    return prompt


def saved_frames(files: list[str], name: str) -> np.ndarray:
    paths = sorted(Path(f) for f in files if Path(f).name.startswith(f"{name}_"))
    assert paths, f"no frames saved for {name}"
    return np.stack([np.asarray(Image.open(path)) for path in paths])


def test_one_emotion_written_five_ways_gives_the_same_frames(comfy_server):
    result = comfy_server.run_prompt(fanned_out_prompt(), timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    assert result.status == "success", f"{result.status}: {result.error}"
    frames = {name: saved_frames(result.output_files, name) for name in ("preset", *SPELLINGS, "mix_of_one")}
    for name in ("timeline_word", "timeline_json", "held_timeline", "mix_of_one"):
        assert np.array_equal(frames[name], frames["preset"]), name
    assert not np.array_equal(frames["other_emotion"], frames["preset"])
