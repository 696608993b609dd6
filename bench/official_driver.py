"""Runs the official DICE-Talk code on one clip and measures it per stage; started by ``bench/official.py``.

This file runs with the OFFICIAL code's own Python (its venv: diffusers 0.29, transformers 4.43) and
imports the official checkout (``toto222/DICE-Talk``) from ``--official-dir`` at run time; nothing of
that code is copied here. Only the standard library and torch are imported at module level, because
``bench/official.py`` also imports :class:`StageClock` from here to measure our side the same way.

It calls the official entry point ``DICE_Talk(...).process(image, audio, emotion, ...)``, which runs
the official preprocessing, whisper, audio projection, emotion model, ``DicePipeline`` (conditioning,
denoising loop, decode) and RIFE. To make it run on a CPU with random weights, these are changed
(and nothing else):

0. (not a patch) ``librosa.core.audio`` is imported while loading: librosa imports it lazily at the
   first ``librosa.load`` (3 s of imports), a one-time cost that would otherwise land in ``inputs``.
1. ``dice_talk.BASE_DIR`` points at the random-weight folder, so ``checkpoints/...`` resolves there.
2. ``DICE_Talk.config.weight_dtype = "fp32"`` (a value the official yaml offers; fp16 is slow or
   missing on CPUs) and ``DICE_Talk(device_id=-1)`` (its own switch for ``"cpu"``).
3. The YOLOv5 face detector (``AlignImage``, a TorchScript file) is replaced by a stub returning the
   box given with ``--face-box``: random weights find no face, and our side is given the same box.
4. ``PoseGuider(conditioning_embedding_channels=320, ...)``: the literal 320 (SVD-xt's first UNet
   width) becomes the UNet's first width from its ``config.json``, only when the two differ (the
   ``medium`` bench config is a tenth of SVD-xt's width).
5. ``dice_talk.test`` (whisper + audio/emotion tokens + pipeline call) hard-codes ``device="cuda"``
   twice; ``dice_talk.py`` is imported from its own source with those two strings (inside ``test``
   only) set to ``"cpu"``, through an importlib loader that neither reads nor writes bytecode caches.
6. ``save_videos_grid`` and the ``ffmpeg`` mux are replaced by a stub that keeps the final frames:
   neither side writes a video file in the bench (our side's ``session.run`` returns frames too).
7. Where torchvision is not installed (no CPU build of it for this torch was at hand), a stand-in
   module provides the three transforms the preprocessing uses (``Compose``, ``ToTensor``:
   uint8 / 255, ``Normalize``: (x - mean) / std), with the same arithmetic.

With ``--device cuda`` (``bench/gpu_check.py --official``) changes 2 and 5 are not made: the official
code runs as released, fp16 on GPU 0; each UNet call is then timed to its end (CUDA synchronised) and
the peak ``torch.cuda.max_memory_allocated`` is reported.

After the clip it checks that the official modules hold exactly the files' tensors (its ``unet.pth``
and ``emo_model.pth`` loads are ``strict=False``, which would hide a key mismatch) and saves the final
latents, the frames before RIFE and the video after it for the agreement check.

Stages are delimited by the first call of a model (forward pre-hooks) and by wrapping the pipeline's
``decode_latents``, identically on both sides (see :class:`StageClock`):

* ``load``: imports and model loading (reported apart from the per-clip total);
* ``inputs``: image, mask, CLIP pixels, audio file, log-mel features, emotion preset;
* ``audio``: whisper encoder and windows, up to the first audio-projection / emotion-model call;
* ``conditioning``: audio and emotion tokens, CLIP, VAE encode, pose guider, up to the first UNet call;
* ``sampling``: the denoising loop, up to ``decode_latents``;
* ``decode``: ``decode_latents`` and the frames' post-processing, up to the first RIFE call;
* ``interpolation``: RIFE, up to the end of the clip.

Run by hand (normally ``bench/official.py`` does it)::

    ~/.cache/dicetalk-official/venv/bin/python bench/official_driver.py --official-dir SRC \\
        --models-root ROOT --image face.png --audio speech.wav --emotion emo.npy --face-box 96,72,128,160 \\
        --resolution 256 --steps 2 --out RESULT.json --tensors RESULT.pt
"""

from __future__ import annotations

import argparse
import ast
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from process_memory import peak_rss_mb, reset_peak_rss, rss_mb

STAGES = ("load", "inputs", "audio", "conditioning", "sampling", "decode", "interpolation")
CLIP_STAGES = STAGES[1:]
STAND_IN = ("transforms", "utils", "ops")  # torchvision submodules the official code imports


# ------------------------------------------------------------------------------------------ measuring


def weights_mb(modules: list[torch.nn.Module]) -> float:
    """MB of the parameters and buffers of ``modules`` held in memory (storage shared between tensors counted
    once; released ``meta`` tensors count 0)."""
    storages = {}
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_meta:
                continue
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20


class StageClock:
    """Consecutive stages: wall and CPU seconds and peak RSS of each, stage boundaries set by events.

    ``begin(name)`` closes the open stage and opens ``name``; ``once(name)`` gives a callback that
    does so the first time it fires (for forward pre-hooks). The peak-RSS mark is reset at each
    boundary, so a stage's peak is its own; the process peak is the largest of them (``load`` is not
    reset at its start and so covers the interpreter and imports too). UNet calls are timed one by
    one (:meth:`watch_unet`) to extrapolate sampling to other step counts.
    """

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.unet_calls: list[dict[str, float]] = []
        self._open: str | None = None
        self._wall = self._cpu = 0.0
        self._fired: set[str] = set()

    def begin(self, name: str, *, reset: bool = True) -> None:
        self.end()
        if reset:
            reset_peak_rss()
        self._open, self._wall, self._cpu = name, time.perf_counter(), time.process_time()

    def end(self) -> None:
        if self._open is None:
            return
        self.stages[self._open] = {
            "seconds": time.perf_counter() - self._wall,
            "cpu_seconds": time.process_time() - self._cpu,
            "peak_rss_mb": peak_rss_mb(),
            "rss_after_mb": rss_mb(),
        }
        self._open = None

    def once(self, name: str) -> Callable[..., None]:
        def fire(*_: Any, **__: Any) -> None:
            if name not in self._fired:
                self._fired.add(name)
                self.begin(name)

        return fire

    def watch_unet(self, unet: torch.nn.Module) -> None:
        """Start ``sampling`` at the first UNet call and time every call (batch = CFG branches)."""
        start: list[float] = [0.0, 0.0]
        sampling = self.once("sampling")

        def before(_module: torch.nn.Module, args: tuple) -> None:
            sampling()
            start[:] = [time.perf_counter(), time.process_time()]

        def after(_module: torch.nn.Module, args: tuple, _output: Any) -> None:
            self.unet_calls.append(
                {
                    "branches": int(args[0].shape[0]),
                    "seconds": time.perf_counter() - start[0],
                    "cpu_seconds": time.process_time() - start[1],
                }
            )

        unet.register_forward_pre_hook(before)
        unet.register_forward_hook(after)

    def peak_mb(self) -> float:
        return max(entry["peak_rss_mb"] for entry in self.stages.values())

    def result(self) -> dict[str, Any]:
        return {"stages": self.stages, "unet_calls": self.unet_calls, "peak_rss_mb": self.peak_mb()}


# ------------------------------------------------------------------------------- the official code


def _torchvision_stand_in() -> None:
    """Register a minimal ``torchvision`` (transforms only) when the real one is not installed.

    Called after diffusers and transformers are imported, so their "is torchvision available" checks
    see the truth; ``utils`` and ``ops`` are empty (only the bypassed video writer and YOLO use them).
    """
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass
    import numpy as np

    class Compose:
        def __init__(self, transforms: list) -> None:
            self.transforms = transforms

        def __call__(self, x: Any) -> Any:
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:
        def __call__(self, pic: Any) -> torch.Tensor:
            array = np.array(pic, dtype=np.uint8, copy=True)
            if array.ndim == 2:
                array = array[:, :, None]
            return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)

    class Normalize:
        def __init__(self, mean: tuple, std: tuple) -> None:
            self.mean, self.std = mean, std

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            mean = torch.as_tensor(self.mean, dtype=x.dtype)[:, None, None]
            std = torch.as_tensor(self.std, dtype=x.dtype)[:, None, None]
            return x.sub(mean).div(std)

    modules = {name: types.ModuleType(name) for name in ("torchvision", *(f"torchvision.{m}" for m in STAND_IN))}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        if name != "torchvision":
            setattr(modules["torchvision"], name.split(".")[1], module)
    transforms = modules["torchvision.transforms"]
    transforms.Compose, transforms.ToTensor, transforms.Normalize = Compose, ToTensor, Normalize
    sys.modules.update(modules)


class _GivenFace:
    """Stands in for the official ``AlignImage`` (YOLOv5-face): always finds the given ``(x, y, w, h)``."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __call__(self, image: Any, maxface: bool = False) -> tuple[list, list, list]:
        import numpy as np

        return [np.zeros((5, 2))], [1.0], [np.asarray(self.box, dtype=np.float64)]


class _OnCpuLoader(importlib.machinery.SourceFileLoader):
    """Loads a module from its source file with the ``"cuda"`` strings inside one function set to ``"cpu"``.

    Only that function's lines change (found with ``ast``; line numbers stay), and there must be exactly
    ``expected`` such strings, so a changed official file stops the bench instead of running half
    patched. ``get_code`` compiles the patched source every time: a cached ``.pyc`` of the unpatched
    file is never used, and none of the patched one is written.
    """

    def __init__(self, fullname: str, path: str, function: str, expected: int) -> None:
        super().__init__(fullname, path)
        self.function, self.expected = function, expected

    def get_code(self, fullname: str) -> types.CodeType:
        source = self.get_source(fullname)
        lines = source.splitlines(keepends=True)
        nodes = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == self.function]
        if len(nodes) != 1:
            raise RuntimeError(f"{self.path}: {len(nodes)} top-level functions {self.function}, 1 expected")
        (node,) = nodes
        start = min(d.lineno for d in (node, *node.decorator_list)) - 1
        body = "".join(lines[start : node.end_lineno])
        found = body.count('"cuda"')
        if found != self.expected:
            raise RuntimeError(
                f'{self.path}: {self.function} has {found} "cuda" strings, {self.expected} expected: check the patch'
            )
        patched = "".join(lines[:start]) + body.replace('"cuda"', '"cpu"') + "".join(lines[node.end_lineno :])
        return self.source_to_code(patched, self.path)


def _import_on_cpu(name: str, path: Path, function: str, expected: int) -> tuple[types.ModuleType, list[str]]:
    """Import module ``name`` from ``path`` as :class:`_OnCpuLoader` patches it; returns it and what changed."""
    loader = _OnCpuLoader(name, str(path), function, expected)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module, [f'{name}.{function}: {expected} x "cuda" -> "cpu"']


def _unet_width(models_root: Path) -> int:
    config = models_root / "checkpoints" / "stable-video-diffusion-img2vid-xt" / "unet" / "config.json"
    return int(json.loads(config.read_text())["block_out_channels"][0])


def _check_weights(model: Any, models_root: Path) -> dict[str, Any]:
    """Whether the official modules hold exactly the files' tensors (its unet/emo loads are strict=False)."""
    folder = models_root / "checkpoints" / "DICE-Talk"
    modules = {
        "unet.pth": model.pipe.unet,
        "emo_model.pth": model.emo_model,
        "audio_linear.pth": model.audio_linear,
        "pose_guider.pth": model.pipe.pose_guider,
    }
    report = {}
    for name, module in modules.items():
        expected = torch.load(folder / name, map_location="cpu", weights_only=True)
        held = module.state_dict()
        differing = [k for k in expected if k in held and not torch.equal(held[k].float(), expected[k].float())]
        report[name] = {
            "missing_in_module": sorted(set(expected) - set(held)),
            "not_in_file": sorted(set(held) - set(expected)),
            "differing": differing,
        }
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = StageClock()
    clock.begin("load", reset=False)
    torch.set_num_threads(args.threads)
    official = Path(args.official_dir).resolve()
    models_root = Path(args.models_root).resolve()
    sys.path.insert(0, str(official))
    _torchvision_stand_in()
    on_gpu = args.device == "cuda"
    if on_gpu:  # the official "cuda" strings stay as they are
        dice_talk, on_cpu = importlib.import_module("dice_talk"), []
    else:
        dice_talk, on_cpu = _import_on_cpu("dice_talk", official / "dice_talk.py", "test", expected=2)
    import librosa.core.audio  # noqa: F401  (lazily imported at the first librosa.load: 3 s, a one-time cost)

    patches = [f"dice_talk.BASE_DIR -> {models_root}", "AlignImage -> given box"]
    dice_talk.BASE_DIR = str(models_root)
    if not on_gpu:  # on a GPU the official fp16 and "cuda" strings stay as they are
        dice_talk.DICE_Talk.config.weight_dtype = "fp32"
        patches.append('config.weight_dtype -> "fp32"')
    _GivenFace.box = tuple(args.face_box)
    dice_talk.AlignImage = _GivenFace
    width = _unet_width(models_root)
    if width != 320:
        official_pose_guider = dice_talk.PoseGuider

        def pose_guider(conditioning_embedding_channels: int, **kwargs: Any) -> Any:
            return official_pose_guider(conditioning_embedding_channels=width, **kwargs)

        dice_talk.PoseGuider = pose_guider
        patches.append(f"PoseGuider conditioning_embedding_channels 320 -> {width}")
    patches += on_cpu

    captured: dict[str, torch.Tensor] = {}

    def keep_video(video: torch.Tensor, path: str, **_: Any) -> None:
        clock.end()
        captured["video"] = video[0].permute(1, 0, 2, 3).contiguous()  # (1, 3, T, H, W) -> (T, 3, H, W)

    dice_talk.save_videos_grid = keep_video
    no_ffmpeg = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    no_ffmpeg.system = lambda command: 0
    no_ffmpeg.remove = lambda path: None
    dice_talk.os = no_ffmpeg
    patches.append("save_videos_grid / ffmpeg -> keep the frames, write nothing")

    model = dice_talk.DICE_Talk(device_id=0 if on_gpu else -1, enable_interpolate_frame=True)
    pipe = model.pipe
    if on_gpu:  # each UNet call timed to its end: synchronise before the clock's hooks run
        pipe.unet.register_forward_pre_hook(lambda *_: torch.cuda.synchronize())
        pipe.unet.register_forward_hook(lambda *_: torch.cuda.synchronize())
        torch.cuda.reset_peak_memory_stats()
    model.whisper.encoder.register_forward_pre_hook(clock.once("audio"))
    model.audio_linear.register_forward_pre_hook(clock.once("conditioning"))
    model.emo_model.register_forward_pre_hook(clock.once("conditioning"))
    clock.watch_unet(pipe.unet)
    model.rife.flownet.register_forward_pre_hook(clock.once("interpolation"))
    official_decode = pipe.decode_latents

    def decode_latents(latents: torch.Tensor, num_frames: int, decode_chunk_size: int = 14) -> torch.Tensor:
        clock.once("decode")()
        frames = official_decode(latents, num_frames, decode_chunk_size)
        captured["latents"] = latents.detach().float().clone()
        return frames

    pipe.decode_latents = decode_latents
    original_test = dice_talk.test

    def test(*a: Any, **kw: Any) -> torch.Tensor:
        video = original_test(*a, **kw)
        captured["frames"] = video[0].permute(1, 0, 2, 3).float().clone()  # (1, 3, N, H, W) -> (N, 3, H, W)
        return video

    dice_talk.test = test

    clock.begin("inputs")
    status = model.process(
        str(args.image),
        str(args.audio),
        str(args.emotion),
        str(Path(args.tensors).with_suffix(".mp4")),
        min_resolution=args.resolution,
        inference_steps=args.steps,
        seed=args.seed,
    )
    clock.end()
    if status != 0:
        raise RuntimeError(f"the official process() returned {status}")
    torch.save({k: v.contiguous() for k, v in captured.items()}, args.tensors)

    import diffusers
    import transformers

    result = clock.result()
    modules = [pipe.unet, pipe.vae, pipe.image_encoder, pipe.pose_guider, model.whisper, model.audio_linear]
    result.update(
        weights_mb=weights_mb([*modules, model.emo_model, model.rife.flownet]),
        patches=patches,
        weights=_check_weights(model, models_root),
        versions={
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        frames=int(captured["frames"].shape[0]),
        cuda_max_allocated_mb=torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        latent_frames=int(captured["latents"].shape[1]),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-dir", required=True, help="checkout of toto222/DICE-Talk")
    parser.add_argument("--models-root", required=True, help="folder holding checkpoints/ in the official layout")
    parser.add_argument("--image", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--emotion", required=True, help="emotion preset (.npy, official format)")
    parser.add_argument("--face-box", required=True, type=lambda s: [float(v) for v in s.split(",")], help="x,y,w,h")
    parser.add_argument("--resolution", type=int, default=256, help="min_resolution (official 512)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=72589)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: official fp16 on GPU 0")
    parser.add_argument("--out", required=True, help="JSON with the measurements")
    parser.add_argument("--tensors", required=True, help="torch file with the final latents, frames and video")
    args = parser.parse_args()
    Path(args.out).write_text(json.dumps(run(args)))


if __name__ == "__main__":
    main()
