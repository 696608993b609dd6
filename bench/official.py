"""The official DICE-Talk code beside ours: same random weights, same inputs, same settings, one process each.

What runs (CPU, ``--threads`` threads, fp32, one fresh process per side so each peak RSS is its own):

* ``official``: the official code (``toto222/DICE-Talk``, its own checkout and venv, given with
  ``--official-dir`` / ``--official-python``), called through its entry point
  ``DICE_Talk(...).process(...)`` by ``bench/official_driver.py``. That file's docstring lists what is
  patched to run it on a CPU with random weights: the YOLO face detector is replaced by the given face
  box, two ``"cuda"`` strings in ``dice_talk.test`` become ``"cpu"``, the pose guider's literal 320
  output channels become the UNet's first width, no mp4 is written, and torchvision's three transforms
  get a stand-in where torchvision is missing. Its denoising, decode and RIFE code run unchanged.
* ``exact``: our ``DiceTalkSession.run`` (the default, exact path), every model loaded up front.
* ``low-memory``: the same with ``DiceTalkSession.from_folder(low_memory=True)``: each stage reads its
  models when it starts and releases them when it ends (the reading counts in the stage's time).
* ``fast``: ``exact`` with ``FastMode(guidance_reuse=--fast-reuse)`` and ``--fast-steps`` steps.
* ``cache``: ``fast`` plus UNet feature caching (``--cache-interval``, ``--cache-depth``), run at
  ``--project-steps`` steps (25): cached calls cost another time than full ones, so this side is
  measured at the full step count, not projected.
* ``adaptive``: ``fast`` plus adaptive feature caching (``--cache-threshold``, ``--cache-depth``), at 25 steps.
* ``best``: the best combination found (``BEST`` in ``bench/fast_mode.py``: guidance reuse, feature
  caching, bf16 autocast for the UNet, the decode and RIFE, RIFE 8 pairs per call), at 25 steps.
  bf16 pays only on CPUs with bf16 instructions (``avx512_bf16``/AMX; this one has them).

Both sides read the same files, written once in the official layout and format
(``ROOT/checkpoints/{DICE-Talk/*.pth, stable-video-diffusion-img2vid-xt/ (fp16 variant files),
whisper-tiny/, RIFE/flownet.pkl}``; ours reads ``DICE-Talk/`` with the other three linked into it)
with random weights of the ``medium`` layout
(``dicetalk_core/models/layouts.py``; the only one whose sizes fit the official code's literals; whisper at
whisper-tiny's full layout, decoder included, as the official code loads the whole model; constant
tensors such as zero-initialised convolutions get small noise), and the same portrait (PNG, 320x320,
face box given), speech (16 kHz WAV) and emotion preset (pickled ``{'mu': (1, 256)}`` ``.npy``, the
official format). Per side it prints each stage's wall and CPU seconds and peak RSS (stages in
``bench/official_driver.py``), the per-clip totals, the ratios official / ours, a projection to
``--project-steps`` steps (``--project-fast-steps`` for the fast side) from the timed UNet calls, and
how far our outputs are from the official ones (final latents, frames before and after RIFE).

Setting up the official side (outside this repository; nothing of it enters it)::

    mkdir -p ~/.cache/dicetalk-official/src        # a checkout of toto222/DICE-Talk (a8a92b1) goes here
    git --git-dir=MIRROR archive HEAD | tar -x -C ~/.cache/dicetalk-official/src   # or: git clone ...
    python3 -m venv ~/.cache/dicetalk-official/venv
    ~/.cache/dicetalk-official/venv/bin/pip install torch==2.13.0              # the CPU build
    ~/.cache/dicetalk-official/venv/bin/pip install --prefer-binary diffusers==0.29.0 transformers==4.43.2 \\
        huggingface_hub==0.24.6 accelerate==0.28.0 einops==0.7.0 librosa==0.10.2.post1 numpy==1.26.4 \\
        "scipy<1.14" omegaconf==2.3.0 opencv-python-headless==4.8.1.78 "av>=12" sk-video==1.1.10 \\
        tqdm==4.65.2 imageio==2.31.1

(the official pins, except: no gradio/pydantic (UI only), av 11 has no wheel for Python 3.11, the
headless OpenCV build, and huggingface_hub < 0.26, which diffusers 0.29 needs). Then::

    python bench/official.py                       # 4 s of speech, 2 steps: ~25 min (official ~11, ours ~7 each)
    python bench/official.py --official-dir SRC --official-python VENV/bin/python
    python bench/official.py --decode-clips 2      # our decode: clips per VAE call (default auto: 1 on the CPU)
    python bench/official.py --sides exact fast    # our side only
    python bench/official.py --sides official exact fast cache best   # the feature-caching sides too

Without a usable official checkout and venv it says so, shows the setup above, runs our side only
and exits 0. Random weights: the video is noise; time, memory and the agreement are what count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
from official_driver import CLIP_STAGES, STAGES, StageClock, weights_mb

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))  # dicetalk_core, imported lazily (the child times its imports)
from dicetalk_core.fast_mode import FastMode  # noqa: E402  (light: torch and the errors module only)

OFFICIAL_HOME = Path.home() / ".cache" / "dicetalk-official"
DEFAULT_OFFICIAL_DIR = Path(os.environ.get("DICETALK_OFFICIAL_DIR", OFFICIAL_HOME / "src"))
DEFAULT_OFFICIAL_PYTHON = Path(os.environ.get("DICETALK_OFFICIAL_PYTHON", OFFICIAL_HOME / "venv" / "bin" / "python"))
DEFAULT_WORK = Path.home() / ".cache" / "dicetalk-bench"
FORMAT_VERSION = 2  # bump when the written files change
IMAGE_SIZE = 320
FACE_BOX = (96.0, 72.0, 128.0, 160.0)  # x, y, w, h in the 320x320 portrait
SAMPLE_RATE = 16000
SVD_FOLDER = "stable-video-diffusion-img2vid-xt"
DICE_FOLDER = "DICE-Talk"
SHARED_FOLDERS = (SVD_FOLDER, "whisper-tiny", "RIFE")
"""Official-layout folders beside ``DICE-Talk/`` that our layout wants inside it (linked, not copied)."""
CONFIG = "medium"  # the official code's literal sizes (audio projection, emotion model, 32 tokens) fit only it
SETUP_HEADING = "Setting up the official side (outside this repository; nothing of it enters it)::"
SETUP_END = "(the official pins"
OFFICIAL_IMPORTS = "import diffusers, transformers, librosa, omegaconf, cv2, einops, skvideo.io, av, accelerate"
SIDES = ("official", "exact", "low-memory", "fast", "cache", "adaptive", "best")
FULL_STEP_SIDES = ("cache", "adaptive", "best")
PER_RUN_ROWS = ("clip CPU s", "clip wall s")
"""Rows of the steps actually run: no ratio against a side run at another step count."""
"""Sides run at ``--project-steps`` steps (their UNet calls differ in cost: they are measured, not projected)."""


# ------------------------------------------------------------------------------- the shared files


def write_inputs(folder: Path, seconds: float, seed: int) -> dict[str, Path]:
    """Portrait PNG, 16 kHz PCM16 speech WAV and an emotion preset in the official pickled-dict format."""
    from clip import speech
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    coarse.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC).save(folder / "portrait.png")
    samples = np.round(speech(seconds) * 32767).astype(np.int16)
    with wave.open(str(folder / "speech.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    prior = rng.normal(0, 0.85, (1, 256)).astype(np.float32)
    # the official preset format, a pickled {'mu': prior} (np.save writes an object array as a pickle);
    # the official side loads it its own way, ours through the restricted preset loader
    np.save(folder / "emotion.npy", np.array({"mu": prior}, dtype=object))
    return {"image": folder / "portrait.png", "audio": folder / "speech.wav", "emotion": folder / "emotion.npy"}


def _perturb_constants(state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Give small noise to every float tensor whose entries are all equal (zero-initialised convolutions,
    norm scales, mix factors), so that every weight reaches the output and the agreement check sees it."""
    out = {}
    for key, value in state.items():
        if value.is_floating_point() and bool((value == value.flatten()[0]).all()):
            value = value + 0.02 * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        out[key] = value
    return out


def write_checkpoints(root: Path, config: str, seed: int) -> None:
    """Random weights of ``config`` in the official layout and formats (see the module docstring)."""
    from diffusers import UNetSpatioTemporalConditionModel
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from dicetalk_core.models import EmotionModel
    from dicetalk_core.models.layouts import LAYOUTS, OFFICIAL
    from dicetalk_core.random_models import build_models, write_rife_file

    layout = LAYOUTS[config]
    checkpoints = root / "checkpoints"
    dice, svd = checkpoints / DICE_FOLDER, checkpoints / SVD_FOLDER
    for folder in (dice, svd, checkpoints / "whisper-tiny", checkpoints / "RIFE"):
        folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed + 100)
    models = build_models(layout, seed=seed)
    torch.manual_seed(seed + 2)
    # the official classifier head: unused at inference, but the official file holds it
    emotion = EmotionModel(**{**layout.emotion_model, "classifier": OFFICIAL.emotion_model["classifier"]})
    unet_state = _perturb_constants(models.unet.state_dict(), generator)
    torch.save(unet_state, dice / "unet.pth")
    torch.save(_perturb_constants(models.audio_projection.state_dict(), generator), dice / "audio_linear.pth")
    torch.save(_perturb_constants(emotion.state_dict(), generator), dice / "emo_model.pth")
    torch.save(_perturb_constants(models.pose_guider.state_dict(), generator), dice / "pose_guider.pth")

    # SVD-xt folder: fp16 "variant" files, as the official from_pretrained(variant="fp16") reads them
    stock = UNetSpatioTemporalConditionModel(**layout.unet)
    stock.load_state_dict({k: v for k, v in unet_state.items() if ".processor." not in k})
    stock.half().save_pretrained(svd / "unet", variant="fp16")
    models.vae.load_state_dict(_perturb_constants(models.vae.state_dict(), generator))
    models.vae.half().save_pretrained(svd / "vae", variant="fp16")
    clip = models.image_encoder
    clip.load_state_dict(_perturb_constants(clip.state_dict(), generator))
    clip.config.save_pretrained(svd / "image_encoder")
    clip_state = {k: v.half().contiguous() for k, v in clip.state_dict().items()}
    save_file(clip_state, str(svd / "image_encoder" / "model.fp16.safetensors"), metadata={"format": "pt"})
    models.scheduler.save_pretrained(svd / "scheduler")

    # whisper: the whole model, decoder included (the official code loads it all)
    torch.manual_seed(seed + 3)
    WhisperModel(WhisperConfig(**layout.whisper)).save_pretrained(checkpoints / "whisper-tiny")
    WhisperFeatureExtractor().save_pretrained(checkpoints / "whisper-tiny")
    write_rife_file(checkpoints / "RIFE" / "flownet.pkl", seed=seed + 4)


def prepare(work: Path, config: str, seconds: float, seed: int) -> tuple[Path, dict[str, Path]]:
    """The models root and the inputs, written once per (config, seed, length) and reused."""
    root = work / f"{config}-seed{seed}"
    stamp = root / "stamp.json"
    want = {"format": FORMAT_VERSION, "config": config, "seed": seed}
    if not stamp.is_file() or json.loads(stamp.read_text()) != want:
        print(f"writing random {config} weights in the official layout to {root} ...", flush=True)
        write_checkpoints(root, config, seed)
        stamp.write_text(json.dumps(want))
    dice = root / "checkpoints" / DICE_FOLDER
    for name in SHARED_FOLDERS:  # our models folder: DICE-Talk/ with the others linked in (the official ignores them)
        if not (dice / name).exists():
            (dice / name).symlink_to(Path("..") / name, target_is_directory=True)
    inputs = write_inputs(root / f"inputs-{seconds:g}s", seconds, seed)
    return root, inputs


# ------------------------------------------------------------------------------------ the two sides


def official_problem(official_dir: Path, official_python: Path) -> str | None:
    """Why the official side cannot run, or None."""
    if not (official_dir / "dice_talk.py").is_file() or not (official_dir / "src" / "pipelines").is_dir():
        return f"no official DICE-Talk checkout at {official_dir} (dice_talk.py and src/pipelines/ not found)"
    if not official_python.is_file():
        return f"no official venv python at {official_python}"
    check = subprocess.run(
        [str(official_python), "-c", OFFICIAL_IMPORTS], capture_output=True, text=True, env=child_env(1)
    )
    if check.returncode != 0:
        return f"{official_python} cannot import the official code's dependencies: {check.stderr.strip()[-400:]}"
    return None


def setup_help() -> str:
    """The setup steps of the module docstring, for the message when the official side is unusable."""
    steps = __doc__.split(SETUP_HEADING)[1].split(SETUP_END)[0].rstrip()
    return (
        f"To set it up (outside this repository):{steps}\n"
        "then pass --official-dir and --official-python (or set DICETALK_OFFICIAL_DIR / DICETALK_OFFICIAL_PYTHON)."
    )


def child_env(threads: int) -> dict[str, str]:
    """The same environment for every side: offline hub, thread counts, glibc returning freed blocks."""
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        MALLOC_MMAP_THRESHOLD_="131072",
        MALLOC_TRIM_THRESHOLD_="131072",
    )


def run_side(side: str, args: argparse.Namespace, root: Path, inputs: dict[str, Path], out_dir: Path) -> dict:
    """One side in its own process; returns its measurements (the tensors go to ``out_dir/side.pt``)."""
    result, tensors, log = (out_dir / f"{side_tag(side, args)}{suffix}" for suffix in (".json", ".pt", ".log"))
    common = [
        "--image",
        str(inputs["image"]),
        "--audio",
        str(inputs["audio"]),
        "--emotion",
        str(inputs["emotion"]),
        "--face-box",
        ",".join(f"{v:g}" for v in FACE_BOX),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--out",
        str(result),
        "--tensors",
        str(tensors),
    ]
    from dicetalk_core.models.layouts import LAYOUTS

    resolution = str(LAYOUTS[CONFIG].resolution)
    if side == "official":
        command = [
            str(args.official_python),
            str(BENCH / "official_driver.py"),
            "--official-dir",
            str(args.official_dir),
            "--models-root",
            str(root),
            "--resolution",
            resolution,
            "--steps",
            str(args.steps),
            *common,
        ]
        cwd = out_dir
    else:
        steps, fast = side_settings(side, args)
        command = [sys.executable, __file__, "--child", "--models-root", str(root), "--resolution", resolution]
        command += ["--steps", str(steps), "--fast-mode", fast_mode_json(fast), "--decode-clips", args.decode_clips]
        command += common
        if side == "low-memory":
            command.append("--low-memory")
        cwd = BENCH
    print(f"running {side} ... (log: {log})", flush=True)
    with open(log, "w") as log_file:
        done = subprocess.run(command, cwd=cwd, env=child_env(args.threads), stdout=log_file, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-25:]
        raise SystemExit(f"{side} failed (exit {done.returncode}); end of {log}:\n" + "\n".join(tail))
    return json.loads(result.read_text())


def run_ours_child(args: argparse.Namespace) -> None:
    """Child process: our session on the shared files, measured like the official driver measures its side."""
    clock = StageClock()
    clock.begin("load", reset=False)
    torch.set_num_threads(args.threads)
    from fast_mode import CallLog

    from dicetalk_core import pipeline as pipeline_module
    from dicetalk_core import sampler as sampler_module
    from dicetalk_core.precision import Precision
    from dicetalk_core.sampler import SamplerSettings
    from dicetalk_core.session import DiceTalkSession

    fast = fast_mode_from_json(args.fast_mode)
    args.compile = fast.compile
    watch = watch_layer_calls if fast.caches_features else StageClock.watch_unet

    checkpoints = Path(args.models_root) / "checkpoints"
    precision = Precision(device=torch.device("cpu"), diffusion=torch.float32)
    session = DiceTalkSession.from_folder(checkpoints / DICE_FOLDER, precision=precision, low_memory=args.low_memory)
    models = session.models
    loader = session.stage_loader
    if loader is None:  # every module loaded: each stage starts at its first module's first call
        session.whisper.encoder.register_forward_pre_hook(clock.once("audio"))
        models.audio_projection.register_forward_pre_hook(clock.once("conditioning"))
        models.emotion_model.register_forward_pre_hook(clock.once("conditioning"))
        if not args.compile:
            watch(clock, models.unet)
        session.rife.register_forward_pre_hook(clock.once("interpolation"))
    else:  # low memory: each stage starts when its modules are read, so their reading counts in it
        enter, read_unet = loader.enter, loader.loaders["unet"]

        def timed_enter(stage: str) -> None:
            clock.once("conditioning" if stage == "emotion" else stage)()
            enter(stage)

        def watched_unet() -> torch.nn.Module:
            unet = read_unet()
            if not args.compile:
                watch(clock, unet)
            return unet

        loader.enter, loader.loaders["unet"] = timed_enter, watched_unet
    captured: dict[str, torch.Tensor] = {}
    our_decode = pipeline_module.decode_latents

    def decode_latents(vae: Any, latents: torch.Tensor, num_frames: int, *a: Any, **kw: Any) -> torch.Tensor:
        clock.once("decode")()
        frames = our_decode(vae, latents, num_frames, *a, **kw)
        captured["latents"], captured["frames"] = latents.detach().float().clone(), frames
        return frames

    pipeline_module.decode_latents = decode_latents
    if args.compile:  # time the compiled module's calls (hooks inside it would be traced, not run)
        compile_unet = sampler_module.compiled_unet

        def watched_compiled(unet: torch.nn.Module) -> torch.nn.Module:
            compiled = compile_unet(unet)
            if not getattr(compiled, "_bench_watched", False):
                clock.watch_unet(compiled)
                compiled._bench_watched = True
            return compiled

        sampler_module.compiled_unet = watched_compiled
    clips = args.decode_clips if args.decode_clips == "auto" else int(args.decode_clips)
    settings = pipeline_module.GenerationSettings(
        sampler=SamplerSettings(steps=args.steps),
        fast=fast,
        decode_clips_per_call=clips,
    )
    clock.begin("inputs")
    with CallLog() as cache_log:
        result = session.run(
            args.image,
            args.audio,
            args.emotion,
            settings,
            seed=args.seed,
            face_box=tuple(args.face_box),
            min_resolution=args.resolution,
        )
    clock.end()
    captured["video"] = result.frames
    torch.save(captured, args.tensors)
    out = clock.result()
    modules = [models.unet, models.vae, models.image_encoder, models.pose_guider, models.audio_projection]
    out.update(
        frames=int(captured["frames"].shape[0]),
        latent_frames=int(captured["latents"].shape[1]),
        weights_mb=weights_mb([*modules, models.emotion_model, session.whisper.encoder, session.rife]),
        cache_calls=cache_log.calls(),
    )
    Path(args.out).write_text(json.dumps(out))


def watch_layer_calls(clock: StageClock, unet: torch.nn.Module) -> None:
    """:meth:`StageClock.watch_unet` for feature caching, which calls the UNet's layers, not its forward.

    Every call starts with the time embedding and ends with ``conv_out``; the branches are counted from
    ``conv_out``'s batch (CFG branches x window frames).
    """
    from dicetalk_core.sampler import SamplerSettings

    start: list[float] = [0.0, 0.0]
    sampling = clock.once("sampling")
    window = SamplerSettings().window

    def before(*_: Any) -> None:
        sampling()
        start[:] = [time.perf_counter(), time.process_time()]

    def after(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
        clock.unet_calls.append(
            {
                "branches": int(output.shape[0]) // window,
                "seconds": time.perf_counter() - start[0],
                "cpu_seconds": time.process_time() - start[1],
            }
        )

    unet.time_embedding.register_forward_pre_hook(before)
    unet.conv_out.register_forward_hook(after)


def describe_fast(fast: FastMode) -> str:
    """``FastMode(...)`` with only the options that are not off."""
    changed = {k: v for k, v in dataclasses.asdict(fast).items() if v != getattr(FastMode(), k)}
    return "FastMode(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"


def fast_mode_json(fast: FastMode) -> str:
    """A :class:`FastMode` as JSON for the child's command line."""
    return json.dumps(dataclasses.asdict(fast))


def fast_mode_from_json(text: str) -> FastMode:
    fields = json.loads(text)
    fields["guidance_interval"] = tuple(fields["guidance_interval"])
    return FastMode(**fields)


# -------------------------------------------------------------------------------------- reporting


def clip_total(result: dict, key: str) -> float:
    return sum(result["stages"][s][key] for s in CLIP_STAGES if s in result["stages"])


def clip_peak(result: dict) -> float:
    return max(result["stages"][s]["peak_rss_mb"] for s in CLIP_STAGES if s in result["stages"])


def projected_cpu(result: dict, steps: int, target_steps: int, fast: FastMode) -> float | None:
    """CPU seconds of the clip at ``target_steps`` steps, from the timed UNet calls of this run.

    A run at ``target_steps`` steps is its measured clip time. Feature caching is not projected (its
    calls' costs depend on which are cached): None.

    Sampling = UNet calls (per step: one per window, 3 branches on "full" steps, 1 on "reuse" steps,
    the kinds from ``FastMode.step_kinds``) + the rest of the loop, linear in steps; other stages as measured.
    With ``compiled``, the first call of each batch size (it compiles) is left out of the mean and of
    the total: compiling is a one-time cost per process, reported apart (:func:`compile_seconds`).
    """
    from dicetalk_core.fast_mode import FULL

    if steps == target_steps and not fast.compile:
        return clip_total(result, "cpu_seconds")
    if fast.caches_features:
        return None
    calls = result["unet_calls"]
    per_branches: dict[int, list[float]] = {}
    for call in calls:
        per_branches.setdefault(call["branches"], []).append(call["cpu_seconds"])
    if fast.compile:
        per_branches = {b: v[1:] for b, v in per_branches.items() if len(v) > 1}
    mean = {b: sum(v) / len(v) for b, v in per_branches.items()}
    kinds = fast.step_kinds(target_steps)
    needed = {3 if kind == FULL else 1 for kind in kinds}
    if not needed <= set(mean):
        return None
    windows = len(calls) // steps
    sampling = result["stages"]["sampling"]["cpu_seconds"]
    loop_rest = (sampling - sum(c["cpu_seconds"] for c in calls)) / steps
    projected_sampling = target_steps * loop_rest + windows * sum(mean[3 if k == FULL else 1] for k in kinds)
    return clip_total(result, "cpu_seconds") - sampling + projected_sampling


def compile_seconds(result: dict) -> float:
    """Wall seconds the first call of each batch size took beyond the mean of the later ones (compiling)."""
    per_branches: dict[int, list[float]] = {}
    for call in result["unet_calls"]:
        per_branches.setdefault(call["branches"], []).append(call["seconds"])
    return sum(v[0] - sum(v[1:]) / len(v[1:]) for v in per_branches.values() if len(v) > 1)


def agreement(out_dir: Path, sides: list[str], args: argparse.Namespace) -> list[str]:
    from common import max_abs, psnr

    if "official" not in sides:
        return []
    official = torch.load(out_dir / "official.pt", weights_only=True)
    lines = []
    for side in sides:
        if side == "official":
            continue
        if side_settings(side, args)[0] != args.steps:
            steps = side_settings(side, args)[0]
            lines.append(f"{side} vs official: not compared ({steps} steps against {args.steps})")
            continue
        ours = torch.load(out_dir / f"{side_tag(side, args)}.pt", weights_only=True)
        parts = []
        for key in ("latents", "frames", "video"):
            a, b = official[key], ours[key]
            if a.shape != b.shape:
                parts.append(f"{key} shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
                continue
            text = f"{key} max abs {max_abs(a, b):.3g}"
            if key != "latents":
                text += f" (PSNR {psnr(a.clamp(0, 1), b.clamp(0, 1)):.1f} dB)"
            parts.append(text)
        lines.append(f"{side} vs official: " + ", ".join(parts))
    return lines


def side_tag(side: str, args: argparse.Namespace) -> str:
    """File name stem of a side's results (the fast sides' settings are part of it)."""
    if side in ("official", "exact", "low-memory"):
        return side
    steps, fast = side_settings(side, args)
    changed = {k: v for k, v in dataclasses.asdict(fast).items() if v != getattr(FastMode(), k)}
    parts = [
        k.replace("_", "") + ("-".join(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in changed.items()
    ]
    return "-".join([side, *parts, f"steps{steps}"])


def side_settings(side: str, args: argparse.Namespace) -> tuple[int, FastMode]:
    """(steps, fast mode) a side runs with."""
    from fast_mode import BEST

    reuse = {"guidance_reuse": args.fast_reuse}
    if side == "fast":
        return args.fast_steps or args.steps, FastMode(**reuse, compile=args.fast_compile)
    caching = {"cache_depth": args.cache_depth, **reuse}
    if side == "cache":
        return args.project_steps, FastMode(cache_interval=args.cache_interval, **caching)
    if side == "adaptive":
        return args.project_steps, FastMode(cache_threshold=args.cache_threshold, **caching)
    if side == "best":
        return args.project_steps, BEST
    return args.steps, FastMode()  # exact and low-memory


def projection_steps(side: str, args: argparse.Namespace) -> int:
    """Steps the projection of ``side`` is made for."""
    if side == "fast" and args.project_fast_steps:
        return args.project_fast_steps
    if side in FULL_STEP_SIDES:
        return args.project_steps
    return round(args.project_steps * side_settings(side, args)[0] / args.steps)


def summary_rows(results: dict[str, dict], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per-clip totals of each side: CPU and wall seconds, peaks, projection (the ratio rows)."""
    projected = "projected CPU s*"
    rows: dict[str, dict[str, float]] = {
        "clip CPU s": {},
        "clip wall s": {},
        projected: {},
        "clip peak RSS MB": {},
        "process peak RSS MB": {},
        "clip peak above models MB": {},
        "models held between runs MB": {},
    }
    for side, result in results.items():
        steps, fast = side_settings(side, args)
        target = projection_steps(side, args)
        rows["clip CPU s"][side] = clip_total(result, "cpu_seconds")
        rows["clip wall s"][side] = clip_total(result, "seconds")
        rows[projected][side] = projected_cpu(result, steps, target, fast) or math.nan
        rows["clip peak RSS MB"][side] = clip_peak(result)
        rows["process peak RSS MB"][side] = result["peak_rss_mb"]
        rows["clip peak above models MB"][side] = clip_peak(result) - result["stages"]["load"]["rss_after_mb"]
        rows["models held between runs MB"][side] = result.get("weights_mb", math.nan)
    return rows


def report(results: dict[str, dict], args: argparse.Namespace, out_dir: Path) -> None:
    sides = list(results)
    labels = {side: side for side in sides}
    if "fast" in labels:
        compiled = ", compile" if args.fast_compile else ""
        labels["fast"] = f"fast(reuse {args.fast_reuse}, {side_settings('fast', args)[0]} st{compiled})"
    for side in set(FULL_STEP_SIDES) & set(labels):
        labels[side] = f"{side}({side_settings(side, args)[0]} st)"
    first = results[sides[0]]
    print(
        f"\n== per clip: {args.seconds:g} s of speech -> {first['frames']} frames (+25 padding), config "
        f"{CONFIG}, {args.steps} step(s), CPU, {args.threads} thread(s), fp32, seed {args.seed}; "
        f"our decode_clips_per_call={args.decode_clips}"
    )
    if "official" in results:
        print("official side: " + ", ".join(f"{k} {v}" for k, v in results["official"]["versions"].items()))
    print(f"our side: torch {torch.__version__}")
    width = 24
    print(f"{'':>14}" + "".join(f" {labels[s]:>{width}}" for s in sides))
    print(f"{'stage':>14}" + f" {'wall s':>8}{'CPU s':>8}{'peak MB':>8}" * len(sides))
    for stage in STAGES:
        line = f"{stage:>14}"
        for side in sides:
            entry = results[side]["stages"].get(stage)
            if entry is None:
                line += f" {'-':>{width}}"
            else:
                line += f" {entry['seconds']:8.1f}{entry['cpu_seconds']:8.1f}{entry['peak_rss_mb']:8.0f}"
        print(line)
    rows = summary_rows(results, args)
    print()
    for name, values in rows.items():
        print(f"{name:>26}" + "".join(f" {values[s]:{width - 10}.1f}" for s in sides))
    for side in sides:
        by: dict[int, list[float]] = {}
        for call in results[side]["unet_calls"]:
            by.setdefault(call["branches"], []).append(call["cpu_seconds"])
        text = ", ".join(f"{len(v)} x {b}-branch {sum(v) / len(v):.1f} s" for b, v in sorted(by.items(), reverse=True))
        print(f"{labels[side]:>26} UNet calls (CPU s each): {text}")
        if results[side].get("cache_calls"):
            from fast_mode import describe_calls

            calls = [tuple(call) for call in results[side]["cache_calls"]]
            print(f"{'':>26} feature caching, full/cached calls by branches: {describe_calls(calls)}")
    for side in (s for s in sides if s not in ("official", "exact", "low-memory")):
        print(f"{labels[side]:>26} = {describe_fast(side_settings(side, args)[1])}")
    at = ", ".join(f"{labels[s]} {projection_steps(s, args)}" for s in sides)
    print(
        f"* projected: this run's other stages + its timed UNet calls at more steps ({at}); "
        "a side run at that many steps: its measured clip"
    )
    if "fast" in results and args.fast_compile:
        print(
            f"  the fast side's compiling ({compile_seconds(results['fast']):.0f} s wall, once per process, partly in "
            "compiler worker processes) is left out of its CPU seconds and projection"
        )
    if "official" in results:
        print("\nofficial / ours (> 1: ours faster or smaller):")
        for side in sides[1:] if sides[0] == "official" else [s for s in sides if s != "official"]:
            same_steps = side_settings(side, args)[0] == args.steps
            comparable = [name for name in rows if same_steps or name not in PER_RUN_ROWS]
            ratios = {name: rows[name]["official"] / rows[name][side] for name in comparable if rows[name][side]}
            parts = [f"{name} x{ratio:.2f}" for name, ratio in ratios.items() if not math.isnan(ratio)]
            print(f"  {labels[side]}: " + "; ".join(parts))
        bad = {k: v for k, v in results["official"]["weights"].items() if any(v.values())}
        print("official modules hold exactly the files' tensors: " + ("yes" if not bad else f"NO: {bad}"))
    for line in agreement(out_dir, sides, args):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-dir", type=Path, default=DEFAULT_OFFICIAL_DIR, help="official checkout")
    parser.add_argument("--official-python", type=Path, default=DEFAULT_OFFICIAL_PYTHON, help="its venv's python")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the speech")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps, both sides (official 25)")
    parser.add_argument("--fast-reuse", type=int, default=3, help="fast side: FastMode(guidance_reuse=K)")
    parser.add_argument("--fast-steps", type=int, default=None, help="fast side: steps (default --steps)")
    parser.add_argument(
        "--fast-compile", action="store_true", help="fast side: also FastMode(compile=True) (compiling takes minutes)"
    )
    parser.add_argument("--project-steps", type=int, default=25, help="steps of the projected CPU time")
    parser.add_argument(
        "--project-fast-steps", type=int, default=None, help="fast side: steps of its projection (default as run)"
    )
    parser.add_argument("--cache-interval", type=int, default=3, help="cache side: FastMode(cache_interval=N)")
    parser.add_argument("--cache-depth", type=int, default=0, help="cache and adaptive sides: cache_depth")
    parser.add_argument("--cache-threshold", type=float, default=0.1, help="adaptive side: FastMode(cache_threshold=T)")
    parser.add_argument("--sides", nargs="+", default=["official", "exact", "low-memory", "fast"], choices=SIDES)
    parser.add_argument(
        "--decode-clips", default="auto", help="our sides: decode_clips_per_call (int or auto, the default)"
    )
    parser.add_argument("--seed", type=int, default=72589)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per side (1: steady on a shared machine)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where weights, inputs and outputs go")
    parser.add_argument("--reuse", action="store_true", help="report a side's saved results of the same settings")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--models-root", "--image", "--audio", "--emotion", "--out", "--tensors"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--face-box", type=lambda s: [float(v) for v in s.split(",")], help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--low-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fast-mode", default=fast_mode_json(FastMode()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_ours_child(args)
        return

    sides = list(dict.fromkeys(args.sides))
    if "official" in sides:
        problem = official_problem(args.official_dir.resolve(), args.official_python)
        if problem is not None:
            print(f"official side skipped: {problem}.\n{setup_help()}\n")
            sides.remove("official")
    if not sides:
        return
    root, inputs = prepare(args.work, CONFIG, args.seconds, args.seed)
    out_dir = root / f"run-{args.seconds:g}s-{args.steps}steps-decode{args.decode_clips}"
    out_dir.mkdir(exist_ok=True)
    results = {}
    for side in sides:
        saved = out_dir / f"{side_tag(side, args)}.json"
        if args.reuse and saved.is_file() and saved.with_suffix(".pt").is_file():
            print(f"{side}: reusing {saved}")
            results[side] = json.loads(saved.read_text())
        else:
            results[side] = run_side(side, args, root, inputs, out_dir)
    report(results, args, out_dir)


if __name__ == "__main__":
    main()
