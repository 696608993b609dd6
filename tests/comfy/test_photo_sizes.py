"""Any photo reaches a saved video: every example workflow through core Save Video, photos of any size.

H.264 in yuv420p (core Save Video's mp4) needs an even width and height. The sampler's frames always
have sides that are multiples of 64; DICE-Talk Paste Back gives the photo's size made even (its
``even_size`` input: crop by default, or pad). Each API twin in ``tests/comfy/workflows/`` (so a new
example joins by adding its twin) runs with its portrait replaced by photos of odd and even sizes,
portrait and landscape, including the 1451x1451 size that once failed in Save Video after the whole
generation; the saved mp4 is read back: size, frame count, fps and the length of its sound.

Runs on its own server with the tiny DICE-Talk folder plus all eight preset names and tiny face and
voice emotion classifiers, so examples using any emotion node find what they need. Skips without
``COMFYUI_DIR`` (see ``dicetalk_harness.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dicetalk_harness import (
    EXAMPLES,
    GENERATED_FRAMES,
    WORKFLOWS,
    api_workflow,
    astronaut,
    nodes_of,
    pack_server,
    tiny,
    video_size,
    write_inputs,
)
from PIL import Image
from test_emotion_classifiers import write_face_classifier, write_voice_classifier
from test_emotion_mixing import random_library

from dicetalk_core.compositing import EVEN_SIZES, even_size
from dicetalk_core.face import model_size
from dicetalk_core.model_files import OFFICIAL_PRESETS
from dicetalk_core.random_models import write_models_folder
from dicetalk_core.rates import GENERATION_FPS
from dicetalk_core.video_io import read_video_info

logger = logging.getLogger(__name__)

RUN_TIMEOUT = 600.0
AAC_FRAME = 1024

TWINS = sorted(path.name.removesuffix("_api.json") for path in WORKFLOWS.glob("*_api.json"))

PHOTOS = {  # name: (width, height)
    "odd_square_1451": (1451, 1451),
    "odd_portrait": (201, 299),
    "odd_width_landscape": (383, 256),
    "even_portrait": (240, 320),
    "odd_height_landscape": (384, 251),
}


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut at the shorter side's size, in a frame of ``width`` x ``height`` filled with its edges."""
    side = min(width, height)
    left, top = (width - side) * 2 // 3, (height - side) // 3
    return np.pad(astronaut(side), ((top, height - side - top), (left, width - side - left), (0, 0)), mode="edge")


@pytest.fixture(scope="module")
def server(comfy_dest: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("photo_sizes")
    dice = write_models_folder(root / "models" / "dice_talk")
    random_library(dice / "emotions", OFFICIAL_PRESETS)
    write_face_classifier(dice / "expression" / "tiny_vit")
    write_voice_classifier(dice / "speech_emotion" / "tiny_w2v")
    inputs = write_inputs(root / "input")
    for name, (width, height) in PHOTOS.items():
        Image.fromarray(photo(width, height)).save(inputs / f"{name}.png")
    with pack_server(comfy_dest, root / "models", inputs, root / "output") as srv:
        yield srv


def portrait_loader(prompt: dict) -> str:
    """The LoadImage node whose picture reaches DICE-Talk Sampler's ``image`` (through a face crop, say)."""
    (sampler,) = nodes_of(prompt, "DICESampler")
    queue = [prompt[sampler]["inputs"]["image"][0]]
    while queue:
        node_id = queue.pop(0)
        if prompt[node_id]["class_type"] == "LoadImage":
            return node_id
        queue += [value[0] for value in prompt[node_id]["inputs"].values() if isinstance(value, list)]
    raise AssertionError("no LoadImage feeds the sampler's image")


def expected_video(prompt: dict, width: int, height: int) -> tuple[tuple[int, int], int, float]:
    """(width, height), frame count and fps the saved video must have for a photo of that size."""
    (sampler,) = nodes_of(prompt, "DICESampler")
    paste = nodes_of(prompt, "DICEPasteBack")
    if paste:
        rule = prompt[paste[0]]["inputs"].get("even_size", EVEN_SIZES[0])
        out_height, out_width = even_size(height, width, rule)
        size = (out_width, out_height)
    else:
        size = model_size(width, height, prompt[sampler]["inputs"]["resolution"])
    if nodes_of(prompt, "DICEFrameInterpolation"):
        return size, 2 * GENERATED_FRAMES - 1, 2 * GENERATION_FPS
    return size, GENERATED_FRAMES, GENERATION_FPS


def saved_mp4(result) -> Path:
    files = [Path(f) for f in result.output_files if f.endswith(".mp4")]
    assert len(files) == 1, f"expected one mp4 from Save Video, got {result.output_files}"
    return files[0]


def test_every_example_has_an_api_twin_with_its_nodes(server):
    """The twins are what this module runs: each example has one, with the same backend nodes."""
    examples = sorted(path.stem for path in EXAMPLES.glob("*.json"))
    assert examples == TWINS, f"examples without an API twin in {WORKFLOWS}: {sorted(set(examples) - set(TWINS))}"
    used = {node["class_type"] for name in TWINS for node in api_workflow(name).values()}
    info = server.assert_nodes(sorted(used))  # raises with the import traceback when the pack did not load
    for name in TWINS:
        ui = json.loads((EXAMPLES / f"{name}.json").read_text())
        backend = {str(node["id"]): node["type"] for node in ui["nodes"] if node["type"] in info}
        assert {key: node["class_type"] for key, node in api_workflow(name).items()} == backend, name


@pytest.mark.parametrize("photo_name", list(PHOTOS))
@pytest.mark.parametrize("example", TWINS)
def test_every_example_saves_a_video_of_any_photo(server, example, photo_name):
    width, height = PHOTOS[photo_name]
    prompt = tiny(api_workflow(example))
    prompt[portrait_loader(prompt)]["inputs"]["image"] = f"{photo_name}.png"
    for save in nodes_of(prompt, "SaveVideo"):
        prompt[save]["inputs"]["filename_prefix"] = f"sizes/{example}_{photo_name}"
    result = server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    assert result.status == "success", f"{result.status}: {result.error}"
    path = saved_mp4(result)
    size, frames, fps = expected_video(prompt, width, height)
    info = read_video_info(path)
    logger.info("%s, %dx%d photo: %s in %.1f s", example, width, height, video_size(path), result.seconds)
    assert video_size(path) == size and size[0] % 2 == 0 and size[1] % 2 == 0
    assert (info.n_frames, info.fps) == (frames, pytest.approx(fps))
    assert info.channels > 0 and info.audio_rate, "the video has no sound"
    assert info.duration == pytest.approx(frames / fps, abs=1e-6)
    assert info.audio_duration == pytest.approx(frames / fps, abs=AAC_FRAME / info.audio_rate + 1e-6)


def test_paste_back_pads_an_odd_photo_when_asked(server):
    prompt = tiny(api_workflow("crop_paste_back"), seed=3)
    prompt[portrait_loader(prompt)]["inputs"]["image"] = "odd_portrait.png"
    (paste,) = nodes_of(prompt, "DICEPasteBack")
    prompt[paste]["inputs"]["even_size"] = "pad"
    result = server.run_prompt(prompt, timeout=RUN_TIMEOUT, on_event=lambda *_: None)
    assert result.status == "success", f"{result.status}: {result.error}"
    assert video_size(saved_mp4(result)) == (202, 300)


def test_keeping_an_odd_size_is_refused_when_queued(server):
    """No choice leaves odd frames for Save Video to refuse after the generation: it fails at queue time."""
    prompt = tiny(api_workflow("crop_paste_back"))
    (paste,) = nodes_of(prompt, "DICEPasteBack")
    prompt[paste]["inputs"]["even_size"] = "keep"
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": server.client_id})
    assert status == 400, body
    (error,) = body["node_errors"][paste]["errors"]
    assert error["type"] == "value_not_in_list" and "even_size" in error["details"]
