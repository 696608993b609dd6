"""One command for a GPU: the full-size DICE-Talk pipeline with random weights, measured part by part.

On one CUDA GPU it builds the official architectures (``dicetalk_core.models.layouts.OFFICIAL``: the
SVD-xt UNet with the DICE-Talk adapters, 1.627 B parameters; the SVD-xt VAE and CLIP image encoder;
whisper-tiny; the audio projection, emotion model and pose guider; RIFE) with random weights directly
on the device, nothing downloaded, and runs them with the official settings (512x512, fp16, 25 steps,
reference guidance 3.0, audio guidance 6.0). Parts, in order of value (``--parts`` picks):

* ``clip``: a 10 s clip end to end: seconds of compute per second of video, total and per stage
  (audio, conditioning, sampling with its time per UNet call, decode, interpolation), and each
  stage's peak device memory (``torch.cuda.max_memory_allocated``, reset between stages).
* ``decode60``: the decode of a 60 s clip from random latents: its peak memory, beside the 10 s one.
* ``lowvram``: the same clip (1 step) the low-VRAM way: only the running stage's modules on the device,
  the others in CPU memory, and the process capped at 12 GB (``--vram-target``); peak per stage.
* ``official`` (with ``--official DIR``): the official DICE-Talk code (its checkout and venv, as
  ``bench/official.py`` sets them up, with a CUDA build of torch in that venv on a GPU machine) on the
  same sizes and settings, in its own process, at ``--official-steps`` (5) steps: its time per UNet
  call, its other stages and its peak VRAM, as ratios to ours (its clip projected to our UNet calls).
* ``routing``: one UNet call (3 x 25 frames) with the exact routing against the reference routing
  (``set_routing("reference")``, the official attention math): time ratio and max abs difference.
* ``precision``: one window (25 frames, 25 steps) in fp16 against fp32: final latents max abs, frames PSNR.

Each part has a time budget for an H100-class GPU (the FLOP model of ``bench/flops.py`` at an assumed
250 TFLOP/s for the UNet, 125 for the decode, with margin); the parts run in order while their budgets
fit in ``--max-minutes`` (8), and each part's elapsed time is printed next to its budget. Results go
to a table on stdout and to a JSON file (``--json``).

Without CUDA the same code runs on the CPU at the ``tiny`` layout (fp32): that is how CI keeps it working.

    python bench/gpu_check.py                                   # CUDA: official layout, fp16, every part
    python bench/gpu_check.py --parts clip,decode60             # some parts
    python bench/gpu_check.py --official ~/.cache/dicetalk-official/src --official-python VENV/bin/python
    python bench/gpu_check.py --device cpu --config tiny        # what CI runs (seconds)
    python bench/gpu_check.py --device cpu --config tiny --seconds 1 --long-seconds 2 --steps 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import max_abs, psnr, time_interleaved
from diffusers.utils import logging as diffusers_logging
from process_memory import peak_rss_mb, reset_peak_rss, rss_mb

from dicetalk_core import defaults, memory
from dicetalk_core.audio import audio_windows
from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.interpolation import IFNet, interpolate_frames
from dicetalk_core.models.bundle import STAGE_MODULES, DiceTalkModels
from dicetalk_core.models.layouts import LAYOUTS, ModelLayout
from dicetalk_core.pipeline import GenerationSettings, InitialNoise, ReferenceInputs, build_conditioning, generate
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import build_models, build_whisper
from dicetalk_core.rates import GENERATION_FPS, SAMPLE_RATE
from dicetalk_core.sampler import SamplerSettings, sample
from dicetalk_core.vae_decode import decode_latents

MB = 2**20
GB = 2**30
PRIOR_DIM = 256
ASSUMED_UNET_TFLOPS = 250.0
"""Sustained fp16 throughput assumed for the UNet on an H100-class GPU (a quarter of its dense peak)."""
ASSUMED_DECODE_TFLOPS = 125.0
"""The same for the VAE decode (full-resolution convolutions and group norms are memory-bound)."""


# ------------------------------------------------------------------------------------------ measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Probe:
    """Seconds and peak memory of one block: CUDA max allocated on a GPU, peak RSS on the CPU (MB)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start_time = 0.0
        self.start_mb = 0.0

    def used_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / MB
        return rss_mb()

    def start(self) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()
        self.start_mb = self.used_mb()
        self.start_time = time.perf_counter()

    def stop(self) -> dict[str, float]:
        sync(self.device)
        seconds = time.perf_counter() - self.start_time
        peak = torch.cuda.max_memory_allocated(self.device) / MB if self.device.type == "cuda" else peak_rss_mb()
        return {"seconds": seconds, "peak_mb": peak, "above_start_mb": peak - self.start_mb}


class StageClock:
    """Consecutive stages, each with its own :class:`Probe`; ``begin`` closes the open stage."""

    def __init__(self, device: torch.device) -> None:
        self.probe = Probe(device)
        self.stages: dict[str, dict[str, float]] = {}
        self.open: str | None = None

    def begin(self, name: str) -> None:
        self.end()
        self.open = name
        self.probe.start()

    def end(self) -> None:
        if self.open is not None:
            self.stages[self.open] = self.probe.stop()
            self.open = None


# ------------------------------------------------------------------------------------------ the run


@dataclass
class Context:
    """What every part shares: the layout, device, settings and the models built once."""

    layout: ModelLayout
    precision: Precision
    seconds: float
    long_seconds: float
    steps: int
    vram_target_gb: float
    official_steps: int = 5
    models: DiceTalkModels | None = None
    whisper: Any = None
    rife: IFNet | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.precision.device

    @property
    def resolution(self) -> int:
        return self.layout.resolution

    @property
    def latent(self) -> int:
        return self.resolution // 8

    def settings(self, steps: int | None = None, **decode: Any) -> GenerationSettings:
        sampler = SamplerSettings(steps=steps or self.steps)
        return GenerationSettings(sampler=sampler, **decode)


def speech(seconds: float) -> torch.Tensor:
    """A voiced, syllable-modulated tone at 16 kHz (random weights do not care what is said)."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    wave = 0.3 * torch.sin(2 * math.pi * 180 * t) * (1 + torch.sin(2 * math.pi * 3 * t)) / 2
    return wave.float()


def reference_inputs(size: int, seed: int = 5) -> ReferenceInputs:
    """A random portrait, CLIP image and a face mask over the middle of the frame."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(3, size, size)
    mask[:, size // 5 : 4 * size // 5, size // 4 : 3 * size // 4] = 1
    return ReferenceInputs(torch.rand(3, size, size, generator=g) * 2 - 1, torch.randn(3, 224, 224, generator=g), mask)


def emotion_prior(seed: int = 6) -> torch.Tensor:
    return torch.randn(1, PRIOR_DIM, generator=torch.Generator().manual_seed(seed))


def build(ctx: Context) -> dict[str, Any]:
    """Every module of the layout with random weights, built on the device (no CPU copy, no download)."""
    probe = Probe(ctx.device)
    probe.start()
    ctx.models = build_models(ctx.layout, device=ctx.device, dtype=ctx.precision.diffusion)
    ctx.whisper = build_whisper(ctx.layout, device=ctx.device)
    torch.manual_seed(4)
    ctx.rife = IFNet().to(ctx.device).eval()
    measured = probe.stop()
    params = {name: sum(p.numel() for p in getattr(ctx.models, name).parameters()) for name in DiceTalkModels.MODULES}
    params["whisper_encoder"] = sum(p.numel() for p in ctx.whisper.encoder.parameters())
    params["rife"] = sum(p.numel() for p in ctx.rife.parameters())
    return {**measured, "parameters": params}


def run_clip(
    ctx: Context,
    seconds: float,
    steps: int,
    *,
    on_stage: Callable[[str], None] | None = None,
    clips_per_call: int | str = "auto",
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """One clip end to end, per stage; ``on_stage`` runs before each stage (module placement)."""
    models = ctx.models
    clock = StageClock(ctx.device)
    place = on_stage or (lambda _stage: None)

    def enter(name: str, _memory: int = 0) -> None:
        clock.begin(name)
        place(name)

    enter("audio")
    windows = audio_windows(ctx.whisper, speech(seconds).numpy(), SAMPLE_RATE).windows
    n_frames = windows.shape[0]
    enter("emotion")
    emotion = emotion_conditioning(models.emotion_model, emotion_prior())
    settings = ctx.settings(steps, decode_clips_per_call=clips_per_call)
    total = n_frames + settings.sampler.window
    noise = InitialNoise.from_seed(defaults.SEED, (ctx.resolution,) * 2, (1, total, 4, ctx.latent, ctx.latent))
    calls = [0]
    models.unet.set_routing("exact")
    frames, _ = generate(
        models,
        reference_inputs(ctx.resolution),
        windows,
        emotion,
        settings,
        ctx.precision,
        noise=noise,
        on_window=lambda _result: calls.__setitem__(0, calls[0] + 1),
        on_stage=enter,
    )
    enter("interpolation")
    video = interpolate_frames(frames, ctx.rife)
    clock.end()
    stages = clock.stages
    emotion_stage = stages.pop("emotion")  # the emotion tokens are part of the conditioning
    stages["conditioning"]["seconds"] += emotion_stage["seconds"]
    stages["conditioning"]["peak_mb"] = max(stages["conditioning"]["peak_mb"], emotion_stage["peak_mb"])
    facts = {
        "seconds_of_speech": seconds,
        "frames": n_frames,
        "latent_frames": total,
        "unet_calls": calls[0],
        "windows_per_step": math.ceil(total / settings.sampler.window),
        "steps": steps,
        "video_frames": int(video.shape[0]),
        "frames_finite": bool(torch.isfinite(frames).all()),
    }
    return stages, facts


# ------------------------------------------------------------------------------------------ the parts


def part_clip(ctx: Context) -> dict[str, Any]:
    stages, facts = run_clip(ctx, ctx.seconds, ctx.steps)
    video_seconds = facts["frames"] / GENERATION_FPS
    for entry in stages.values():
        entry["per_video_second"] = entry["seconds"] / video_seconds
    total = sum(entry["seconds"] for entry in stages.values())
    per_call = stages["sampling"]["seconds"] / max(facts["unet_calls"], 1)
    return {
        **facts,
        "stages": stages,
        "total_seconds": total,
        "seconds_per_video_second": total / video_seconds,
        "seconds_per_unet_call": per_call,
        "peak_mb": max(entry["peak_mb"] for entry in stages.values()),
    }


def part_decode60(ctx: Context) -> dict[str, Any]:
    vae = ctx.models.vae
    n_frames = int(ctx.long_seconds * GENERATION_FPS)
    total = n_frames + defaults.WINDOW
    g = torch.Generator().manual_seed(7)
    latents = (0.18215 * torch.randn(1, total, 4, ctx.latent, ctx.latent, generator=g)).to(ctx.device, vae.dtype)
    clips = memory.decode_clips_per_call(vae, (ctx.latent, ctx.latent), defaults.DECODE_CHUNK, ctx.device)
    probe = Probe(ctx.device)
    probe.start()
    frames = decode_latents(vae, latents, n_frames, defaults.DECODE_CHUNK, clips_per_call=clips)
    measured = probe.stop()
    return {
        **measured,
        "seconds_of_speech": ctx.long_seconds,
        "frames": int(frames.shape[0]),
        "clips_per_call": clips,
        "frames_mb_on_cpu": frames.numel() * frames.element_size() / MB,
        "per_clip_estimate_mb": memory.decode_frame_bytes(vae, (ctx.latent, ctx.latent)) * defaults.DECODE_CHUNK / MB,
    }


def _module_names() -> list[str]:
    return [*DiceTalkModels.MODULES, "whisper", "rife"]


def _module(ctx: Context, name: str) -> torch.nn.Module:
    if name == "whisper":
        return ctx.whisper.encoder
    if name == "rife":
        return ctx.rife
    return getattr(ctx.models, name)


LOW_VRAM_STAGES = {
    "audio": ("whisper",),
    "emotion": ("emotion_model",),
    **STAGE_MODULES,
    "interpolation": ("rife",),
}
"""The modules each stage needs on the device in the low-VRAM run (the others wait in CPU memory)."""


def part_lowvram(ctx: Context) -> dict[str, Any]:
    """The clip with only the running stage's modules on the device, capped at ``vram_target_gb``."""
    cpu = torch.device("cpu")
    for name in _module_names():
        _module(ctx, name).to(cpu)
    capped = ctx.device.type == "cuda"
    target = ctx.vram_target_gb * GB
    if capped:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(ctx.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, target / total), ctx.device)

    def place(stage: str) -> None:
        needed = set(LOW_VRAM_STAGES[stage])
        for name in _module_names():
            _module(ctx, name).to(ctx.device if name in needed else cpu)
        if capped:
            torch.cuda.empty_cache()

    vae = ctx.models.vae
    per_clip = memory.decode_frame_bytes(vae, (ctx.latent, ctx.latent)) * defaults.DECODE_CHUNK
    free_at_decode = target - vae_bytes(vae) if capped else per_clip
    clips = max(1, min(memory.MAX_CLIPS_PER_CALL, int(free_at_decode * memory.MEMORY_SHARE) // max(per_clip, 1)))
    result: dict[str, Any] = {"target_mb": target / MB, "capped": capped, "decode_clips_per_call": clips}
    try:
        stages, facts = run_clip(ctx, ctx.seconds, 1, on_stage=place, clips_per_call=clips)
        result.update(stages=stages, **facts, out_of_memory=None)
        result["peak_mb"] = max(entry["peak_mb"] for entry in stages.values())
        result["fits"] = (not capped) or result["peak_mb"] <= target / MB
    except torch.cuda.OutOfMemoryError as err:
        result.update(out_of_memory=str(err).splitlines()[0], fits=False)
    finally:
        if capped:
            torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        for name in _module_names():
            _module(ctx, name).to(ctx.device)
    return result


def vae_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def window_inputs(ctx: Context, seed: int = 1) -> tuple[tuple, dict]:
    """Random UNet inputs of one window (3 CFG branches x 25 frames), shaped as the sampler makes them."""
    g = torch.Generator().manual_seed(seed)
    layout, h, window, dtype = ctx.layout, ctx.latent, defaults.WINDOW, ctx.precision.diffusion
    cross, tokens, frames = layout.unet["cross_attention_dim"], layout.tokens, 3 * window

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=ctx.device, dtype=dtype)

    size = ctx.resolution
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    mask = mask.to(device=ctx.device, dtype=dtype)
    args = (rand(3, window, 8, h, h), torch.tensor(1.6377700567245483, device=ctx.device))
    kwargs = dict(
        image_embeds=rand(frames, 1, cross),
        adapter_tokens=[rand(frames, tokens, cross), rand(frames, tokens, cross)],
        added_time_ids=torch.tensor([[12.5, 8.0, 16.0]] * 3, device=ctx.device, dtype=dtype),
        pose_features=rand(1, layout.unet["block_out_channels"][0], h, h),
        masks=[mask, mask],
    )
    return args, kwargs


def part_routing(ctx: Context) -> dict[str, Any]:
    unet = ctx.models.unet
    call_args, kwargs = window_inputs(ctx)
    outputs: dict[str, torch.Tensor] = {}

    def run(routing: str) -> Callable[[], None]:
        def call() -> None:
            unet.set_routing(routing)
            outputs[routing] = unet(*call_args, **kwargs).sample

        return call

    with torch.no_grad():
        run("exact")()  # warm-up: kernels chosen, workspace allocated
        times = time_interleaved({"reference": run("reference"), "exact": run("exact")}, 3, ctx.device)
    unet.set_routing("exact")
    return {
        "reference_seconds": times["reference"].wall,
        "exact_seconds": times["exact"].wall,
        "speedup": times["reference"].wall / times["exact"].wall,
        "reference_extra_mb": times["reference"].extra_mb,
        "exact_extra_mb": times["exact"].extra_mb,
        "max_abs_difference": max_abs(outputs["exact"], outputs["reference"]),
    }


def _one_window(
    models: DiceTalkModels, ctx: Context, precision: Precision, decoder: torch.nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final latents and decoded frames of one 25-frame window at ``ctx.steps`` steps (decoded by
    ``decoder``, default ``models.vae``)."""
    window = defaults.WINDOW
    settings = ctx.settings()
    windows = audio_windows(ctx.whisper, speech(window / GENERATION_FPS + 0.1).numpy(), SAMPLE_RATE).windows[:window]
    emotion = emotion_conditioning(models.emotion_model, emotion_prior())
    noise = InitialNoise.from_seed(defaults.SEED, (ctx.resolution,) * 2, (1, window, 4, ctx.latent, ctx.latent))
    cond, ref_latents = build_conditioning(
        models, reference_inputs(ctx.resolution), windows, emotion, settings, noise.augmentation, precision
    )
    frame_fields = ("audio", "audio_uncond", "emotion", "emotion_uncond")
    cond = dataclasses.replace(cond, **{name: getattr(cond, name)[:window] for name in frame_fields})
    models.unet.set_routing("exact")
    latents = sample(
        models.unet,
        models.scheduler,
        cond,
        ref_latents,
        noise.latents.to(device=precision.device, dtype=precision.diffusion),
        settings.sampler,
    )
    frames = decode_latents(decoder or models.vae, latents, window, defaults.DECODE_CHUNK)
    return latents.float().cpu(), frames


def part_precision(ctx: Context) -> dict[str, Any]:
    """fp16 (the GPU default) against fp32 on the same weights: one window, every module of it.

    On the CPU the fp16 side's frames are decoded by the fp32 VAE: fp16 convolutions have no fast kernel
    there (a 25-frame tiny decode takes a minute), and the CPU run only keeps this code working.
    """
    half = ctx.models
    if ctx.precision.diffusion == torch.float32:
        low = Precision(device=ctx.device, diffusion=torch.float16)
        full_models, low_models = half, _cast_copy(half, torch.float16)
    else:
        low = ctx.precision
        full_models, low_models = _cast_copy(half, torch.float32), half
    full = Precision(device=ctx.device, diffusion=torch.float32)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    try:
        with torch.no_grad():
            probe = Probe(ctx.device)
            probe.start()
            decoder = full_models.vae if ctx.device.type == "cpu" else None
            latents_16, frames_16 = _one_window(low_models, ctx, low, decoder)
            seconds_16 = probe.stop()["seconds"]
            probe.start()
            latents_32, frames_32 = _one_window(full_models, ctx, full)
            seconds_32 = probe.stop()["seconds"]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    return {
        "steps": ctx.steps,
        "latents_max_abs": max_abs(latents_16, latents_32),
        "latents_scale": latents_32.abs().max().item(),
        "frames_psnr_db": psnr(frames_16, frames_32),
        "finite": bool(torch.isfinite(latents_16).all() and torch.isfinite(latents_32).all()),
        "fp16_seconds": seconds_16,
        "fp32_seconds": seconds_32,
        "fp16_decoded_in": "fp32 (CPU)" if ctx.device.type == "cpu" else "fp16",
    }


def _cast_copy(models: DiceTalkModels, dtype: torch.dtype) -> DiceTalkModels:
    """The same weights in ``dtype`` (the diffusion modules; the conditioning modules stay fp32)."""
    copies = {name: getattr(models, name) for name in DiceTalkModels.MODULES}
    for name in DiceTalkModels.MODULES:
        if name not in DiceTalkModels.CONDITIONING_MODULES:
            copies[name] = copy.deepcopy(copies[name]).to(dtype=dtype)
    return DiceTalkModels(**copies, scheduler=copy.deepcopy(models.scheduler))


def part_official(ctx: Context, official: Path | None, official_python: Path | None) -> dict[str, Any]:
    """The official code on the same sizes and settings in its own process (``bench/official_driver.py``)."""
    if official is None:
        return {"skipped": "needs --official DIR (and --official-python): see python bench/official.py --help"}
    if ctx.layout.name != "official":
        return {"skipped": "the official code's literal sizes need the official layout (--config official)"}
    import official as side_by_side

    python = official_python or side_by_side.DEFAULT_OFFICIAL_PYTHON
    problem = side_by_side.official_problem(official, python)
    if problem is not None:
        return {"skipped": problem}
    work = Path(os.environ.get("DICETALK_GPU_CHECK_WORK", Path.home() / ".cache" / "dicetalk-gpu-check"))
    started = time.perf_counter()
    root, inputs = side_by_side.prepare(work, "svd", ctx.seconds, defaults.SEED)
    written = time.perf_counter() - started
    out = work / "official-result.json"
    command = [
        str(python),
        str(Path(__file__).with_name("official_driver.py")),
        "--official-dir",
        str(official),
        "--models-root",
        str(root),
        "--image",
        str(inputs["image"]),
        "--audio",
        str(inputs["audio"]),
        "--emotion",
        str(inputs["emotion"]),
        "--face-box",
        ",".join(f"{v:g}" for v in side_by_side.FACE_BOX),
        "--resolution",
        str(ctx.resolution),
        "--steps",
        str(ctx.official_steps),
        "--device",
        "cuda",
        "--out",
        str(out),
        "--tensors",
        str(work / "official-tensors.pt"),
    ]
    log = work / "official.log"
    with open(log, "w") as log_file:
        done = subprocess.run(
            command,
            cwd=work,
            env=side_by_side.child_env(os.cpu_count() or 1),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().strip().splitlines()[-15:])
        return {"failed": f"exit {done.returncode}; end of {log}:\n{tail}"}
    result = json.loads(out.read_text())
    return {**_official_ratios(result, ctx), "weights_written_seconds": written, "log": str(log)}


def _official_ratios(official: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Official per-stage seconds beside ours (the ``clip`` part), sampling compared per UNet call."""
    ours = ctx.results.get("clip", {})
    calls = [c for c in official["unet_calls"] if c["branches"] == 3]
    per_call = sum(c["seconds"] for c in calls[1:]) / max(len(calls) - 1, 1)  # the first call warms up
    stages = {
        name: official["stages"].get(name, {}).get("seconds")
        for name in ("audio", "conditioning", "sampling", "decode", "interpolation")
    }
    result: dict[str, Any] = {
        "steps": ctx.official_steps,
        "stages": stages,
        "seconds_per_unet_call": per_call,
        "unet_calls": len(calls),
        "peak_mb": official.get("cuda_max_allocated_mb"),
        "versions": official.get("versions"),
        "weights_check": official.get("weights"),
    }
    if ours:
        result["unet_call_ratio"] = per_call / ours["seconds_per_unet_call"]
        projected = per_call * ours["unet_calls"] + sum(
            v for k, v in stages.items() if v is not None and k != "sampling"
        )
        result["projected_clip_seconds"] = projected
        result["clip_ratio"] = projected / ours["total_seconds"]
        if result["peak_mb"]:
            result["peak_ratio"] = result["peak_mb"] / ours["peak_mb"]
    return result


# ------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Part:
    name: str
    budget: float
    """Seconds allowed on an H100-class GPU at the official layout."""
    what: str


PARTS = (
    Part("clip", 130, "10 s clip end to end: s of compute per s of video, per stage, peak VRAM per stage"),
    Part("decode60", 45, "decode of a 60 s clip from random latents: peak VRAM"),
    Part("lowvram", 45, "the clip (1 step) with one stage's modules on the GPU, capped at the VRAM target"),
    Part("official", 150, "the official code, same sizes and settings, own process (needs --official)"),
    Part("routing", 20, "one UNet call: exact vs reference routing, time ratio and max abs difference"),
    Part("precision", 100, "one window, 25 steps: fp16 vs fp32, latents max abs and frames PSNR"),
)
"""The parts in order of value, each with its budget."""
SETUP_BUDGET = 30.0
"""Building every module on the device."""


def plan(names: list[str] | None, max_seconds: float, official: bool) -> tuple[list[Part], list[Part]]:
    """The parts to run and the ones left out: asked-for parts run as given; otherwise the parts in order
    of value while the sum of their budgets (and the setup's) stays within ``max_seconds``."""
    by_name = {part.name: part for part in PARTS}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
        return [by_name[n] for n in names], []
    chosen, left, spent = [], [], SETUP_BUDGET
    for part in PARTS:
        if part.name == "official" and not official:
            continue
        if spent + part.budget <= max_seconds:
            chosen.append(part)
            spent += part.budget
        else:
            left.append(part)
    return chosen, left


def estimate(layout: ModelLayout, seconds: float, steps: int) -> dict[str, float]:
    """The FLOP model's seconds for the ``clip`` part at the assumed throughputs (official layout only)."""
    from flops import DECODE_TFLOP_PER_FRAME, UNET_CALL_TFLOP, temporal_kv_flops

    if layout.name != "official":
        return {}
    n = int(seconds * GENERATION_FPS)
    calls = steps * math.ceil((n + defaults.WINDOW) / defaults.WINDOW)
    exact = UNET_CALL_TFLOP - (temporal_kv_flops(layout) - temporal_kv_flops(layout, per_pixel=False)) / 1e12
    decoded = math.ceil(n / defaults.DECODE_CHUNK) * defaults.DECODE_CHUNK
    return {
        "unet_call_tflop": exact,
        "unet_calls": calls,
        "sampling_seconds": calls * exact / ASSUMED_UNET_TFLOPS,
        "decode_seconds": decoded * DECODE_TFLOP_PER_FRAME / ASSUMED_DECODE_TFLOPS,
    }


# ------------------------------------------------------------------------------------------ printing


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} {props.name} ({props.total_memory / GB:.0f} GB)"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_part(name: str, result: dict[str, Any]) -> None:
    if "skipped" in result or "failed" in result:
        print(f"-- {name}: {result.get('skipped') or result.get('failed')}")
        return
    printer = PRINTERS.get(name)
    if printer is not None:
        printer(result)


def _stage_table(stages: dict[str, dict[str, float]], video_seconds: float | None) -> None:
    print(f"{'stage':>14} {'seconds':>9} {'s per s video':>14} {'peak MB':>9} {'above start MB':>15}")
    for name, entry in stages.items():
        per = f"{entry['seconds'] / video_seconds:14.3f}" if video_seconds else f"{'':>14}"
        print(f"{name:>14} {entry['seconds']:9.2f} {per} {entry['peak_mb']:9.0f} {entry['above_start_mb']:15.0f}")


def print_clip(r: dict[str, Any]) -> None:
    video = r["frames"] / GENERATION_FPS
    print(
        f"-- clip: {r['seconds_of_speech']:g} s of speech -> {r['frames']} frames (+{defaults.WINDOW} padding), "
        f"{r['unet_calls']} UNet calls ({r['windows_per_step']} windows x {r['steps']} steps), "
        f"{r['video_frames']} frames after RIFE"
    )
    _stage_table(r["stages"], video)
    print(
        f"{'total':>14} {r['total_seconds']:9.2f} {r['seconds_per_video_second']:14.3f} {r['peak_mb']:9.0f}"
        f"   sampling: {r['seconds_per_unet_call']:.3f} s per UNet call"
    )


def print_decode60(r: dict[str, Any]) -> None:
    print(
        f"-- decode60: {r['frames']} frames ({r['seconds_of_speech']:g} s) in {r['seconds']:.1f} s, "
        f"{r['clips_per_call']} clip(s) of {defaults.DECODE_CHUNK} per VAE call: peak {r['peak_mb']:.0f} MB "
        f"({r['above_start_mb']:.0f} MB above the models; one clip estimated at {r['per_clip_estimate_mb']:.0f} MB); "
        f"frames kept in CPU memory: {r['frames_mb_on_cpu']:.0f} MB"
    )


def print_lowvram(r: dict[str, Any]) -> None:
    cap = f"capped at {r['target_mb'] / 1024:.0f} GB" if r["capped"] else "no cap (not CUDA)"
    if r.get("out_of_memory"):
        print(f"-- lowvram ({cap}): OUT OF MEMORY: {r['out_of_memory']}")
        return
    print(
        f"-- lowvram ({cap}), 1 step, {r['decode_clips_per_call']} decode clip(s) per call: "
        f"peak {r['peak_mb']:.0f} MB -> {'fits' if r['fits'] else 'DOES NOT FIT'}"
    )
    _stage_table(r["stages"], None)


def print_official(r: dict[str, Any]) -> None:
    print(f"-- official: {r['unet_calls']} UNet calls at {r['steps']} steps, {r['seconds_per_unet_call']:.3f} s each")
    for name, seconds in r["stages"].items():
        print(f"{name:>14} {'-' if seconds is None else f'{seconds:9.2f}'}")
    if "unet_call_ratio" in r:
        print(
            f"official / ours: UNet call x{r['unet_call_ratio']:.2f}, clip x{r['clip_ratio']:.2f} "
            f"(official clip with our UNet call count: {r['projected_clip_seconds']:.1f} s)"
            + (f", peak VRAM x{r['peak_ratio']:.2f}" if "peak_ratio" in r else "")
        )


def print_routing(r: dict[str, Any]) -> None:
    print(
        f"-- routing: one UNet call, reference {r['reference_seconds']:.3f} s, exact {r['exact_seconds']:.3f} s: "
        f"x{r['speedup']:.2f}; extra memory {r['reference_extra_mb']:.0f} -> {r['exact_extra_mb']:.0f} MB; "
        f"max abs difference {r['max_abs_difference']:.3g}"
    )


def print_precision(r: dict[str, Any]) -> None:
    print(
        f"-- precision: one window, {r['steps']} steps: fp16 vs fp32 latents max abs {r['latents_max_abs']:.3g} "
        f"(latents up to {r['latents_scale']:.3g}), frames PSNR {r['frames_psnr_db']:.1f} dB "
        f"(fp16 side decoded in {r['fp16_decoded_in']}); "
        f"fp16 {r['fp16_seconds']:.1f} s, fp32 {r['fp32_seconds']:.1f} s"
    )


PRINTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "clip": print_clip,
    "decode60": print_decode60,
    "lowvram": print_lowvram,
    "official": print_official,
    "routing": print_routing,
    "precision": print_precision,
}


def print_summary(rows: list[tuple[str, float, float | None, str]]) -> None:
    print(f"\n{'part':>10} {'budget s':>9} {'elapsed s':>10}  status")
    for name, budget, elapsed, status in rows:
        print(f"{name:>10} {budget:9.0f} {'-' if elapsed is None else f'{elapsed:10.1f}':>10}  {status}")


# ------------------------------------------------------------------------------------------ main


@contextmanager
def timed(rows: list, name: str, budget: float):
    started = time.perf_counter()
    status = ["ok"]
    try:
        yield status
    finally:
        elapsed = time.perf_counter() - started
        if status[0] == "ok" and elapsed > budget:
            status[0] = "over budget"
        rows.append((name, budget, elapsed, status[0]))
        print(f"   [{name}: {elapsed:.1f} s of a {budget:.0f} s budget]", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument(
        "--config", choices=sorted(LAYOUTS), help="model layout (default: official on CUDA, tiny on CPU)"
    )
    parser.add_argument("--parts", help=f"comma-separated, in this order of value: {','.join(p.name for p in PARTS)}")
    parser.add_argument("--seconds", type=float, default=10.0, help="speech of the clip (default 10)")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="speech of the decode60 part (default 60)")
    parser.add_argument(
        "--steps", type=int, default=defaults.STEPS, help=f"denoising steps (official {defaults.STEPS})"
    )
    parser.add_argument("--official-steps", type=int, default=5, help="steps of the official side (projected to ours)")
    parser.add_argument("--vram-target", type=float, default=12.0, help="GB the lowvram part is capped at")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="without --parts: budgets to fit in")
    parser.add_argument("--official", type=Path, help="a checkout of toto222/DICE-Talk (see bench/official.py)")
    parser.add_argument("--official-python", type=Path, help="the official venv's python")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where the results go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()  # casting random models with .to(dtype) is intended here
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = LAYOUTS[args.config or ("official" if device.type == "cuda" else "tiny")]
    precision = Precision.resolve("auto", device)
    ctx = Context(layout, precision, args.seconds, args.long_seconds, args.steps, args.vram_target, args.official_steps)
    names = [n.strip() for n in args.parts.split(",") if n.strip()] if args.parts else None
    chosen, left = plan(names, 60 * args.max_minutes if device.type == "cuda" else math.inf, args.official is not None)

    dtype = str(precision.diffusion).removeprefix("torch.")
    print(
        f"== DICE-Talk GPU check: {layout.name} layout, {layout.resolution}x{layout.resolution}, {dtype}, "
        f"{args.steps} steps, ref {defaults.REF_GUIDANCE} / audio {defaults.AUDIO_GUIDANCE}; {device_line(device)}; "
        f"torch {torch.__version__}"
    )
    print(
        f"parts: {', '.join(p.name for p in chosen)}"
        + (f"; left out by the budget: {', '.join(p.name for p in left)} (pass --parts to run them)" if left else "")
    )
    if layout.name != "official":
        print("budgets are for an H100-class GPU at the official layout; here they only show the order")
    expected = estimate(layout, args.seconds, args.steps)
    if expected:
        print(
            f"FLOP model: {expected['unet_calls']} UNet calls x {expected['unet_call_tflop']:.1f} TFLOP -> sampling "
            f"~{expected['sampling_seconds']:.0f} s at {ASSUMED_UNET_TFLOPS:.0f} TFLOP/s, decode "
            f"~{expected['decode_seconds']:.1f} s at {ASSUMED_DECODE_TFLOPS:.0f} TFLOP/s"
        )
    rows: list[tuple[str, float, float | None, str]] = []
    report: dict[str, Any] = {
        "layout": layout.name,
        "device": device_line(device),
        "torch": torch.__version__,
        "dtype": dtype,
        "settings": {
            "resolution": layout.resolution,
            "steps": args.steps,
            "seconds": args.seconds,
            "ref_guidance": defaults.REF_GUIDANCE,
            "audio_guidance": defaults.AUDIO_GUIDANCE,
        },
        "flop_model": expected,
        "parts": ctx.results,
    }
    with timed(rows, "setup", SETUP_BUDGET):
        report["setup"] = build(ctx)
    unet_params = report["setup"]["parameters"]["unet"]
    print(f"built on {device}: UNet {unet_params / 1e9:.3f} B parameters, {report['setup']['peak_mb']:.0f} MB peak")
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "clip": lambda: part_clip(ctx),
        "decode60": lambda: part_decode60(ctx),
        "lowvram": lambda: part_lowvram(ctx),
        "official": lambda: part_official(ctx, args.official, args.official_python),
        "routing": lambda: part_routing(ctx),
        "precision": lambda: part_precision(ctx),
    }
    for part in chosen:
        with timed(rows, part.name, part.budget) as status, torch.no_grad():
            result = runners[part.name]()
            ctx.results[part.name] = result
            if "skipped" in result:
                status[0] = "skipped"
            elif "failed" in result:
                status[0] = "FAILED"
            elif result.get("fits") is False:
                status[0] = "DOES NOT FIT"
        print_part(part.name, result)
    rows += [(part.name, part.budget, None, "left out (budget)") for part in left]
    print_summary(rows)
    report["timing"] = [dict(zip(("part", "budget_s", "elapsed_s", "status"), row, strict=True)) for row in rows]
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print(f"results: {args.json}")
    return 0 if all(row[3] in ("ok", "skipped", "left out (budget)", "over budget") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
