"""A whole clip end to end, per stage: audio, conditioning, sampling, decode, interpolation.

For every clip length asked for, prints each stage's wall and CPU seconds, its peak memory (CPU: peak
RSS of the process during the stage, reset before each stage; CUDA: max allocated) and the RSS it
leaves behind; then, for two or more lengths, how much each stage's peak grew with the length, next
to the size of the stage's own output (frames are the result and grow with the clip by nature).

    python bench/clip.py                                  # medium config, 4 s of speech, 2 steps
    python bench/clip.py --seconds 4 16 --steps 1         # flat-in-length check
    python bench/clip.py --config tiny --seconds 4 16 --steps 25
    python bench/clip.py --routing reference              # the official code's attention math

Random weights: the video is noise; only time and memory mean anything. Sampling time grows as
steps x windows; the line "sampling per UNet call" lets you extrapolate to 25 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
from common import (
    CONFIGS,
    device_arg,
    print_header,
    rss_mb,
    stage_memory,
)

from dicetalk_core import defaults
from dicetalk_core.audio import audio_windows
from dicetalk_core.emotion.conditioning import EmotionConditioning, emotion_conditioning
from dicetalk_core.fast_mode import FastMode
from dicetalk_core.interpolation import IFNet, interpolate_frames
from dicetalk_core.models.layouts import LAYOUTS, ModelLayout
from dicetalk_core.pipeline import GenerationSettings, InitialNoise, ReferenceInputs, build_conditioning
from dicetalk_core.precision import DTYPES, Precision
from dicetalk_core.random_models import build_models, build_whisper
from dicetalk_core.rates import SAMPLE_RATE
from dicetalk_core.sampler import SamplerSettings, sample
from dicetalk_core.vae_decode import decode_latents


def speech(seconds: float) -> np.ndarray:
    """A voiced, syllable-modulated tone (random weights do not care what is said)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def reference_inputs(layout: ModelLayout) -> ReferenceInputs:
    g = torch.Generator().manual_seed(5)
    size = layout.resolution
    mask = torch.zeros(3, size, size)
    mask[:, size // 5 : 4 * size // 5, size // 4 : 3 * size // 4] = 1
    return ReferenceInputs(torch.rand(3, size, size, generator=g) * 2 - 1, torch.randn(3, 224, 224, generator=g), mask)


def run_clip(
    layout: ModelLayout,
    seconds: float,
    steps: int,
    precision: Precision,
    routing: str,
    fast: FastMode,
    interpolate: bool,
    models=None,
    whisper=None,
    rife=None,
) -> tuple[dict, dict]:
    """One clip; returns per-stage measurements and facts (frames, windows, calls)."""
    device = precision.device
    models.unet.set_routing(routing)
    settings = GenerationSettings(sampler=SamplerSettings(steps=steps, window=layout.window), fast=fast)
    stages: dict[str, dict] = {}
    outputs: dict[str, float] = {}

    with stage_memory(stages, "audio", device):
        windows = audio_windows(whisper, speech(seconds), SAMPLE_RATE).windows
    outputs["audio"] = windows.numel() * windows.element_size() / 2**20
    n_frames = windows.shape[0]
    total = n_frames + layout.window
    h = layout.latent_size
    noise = InitialNoise.from_seed(defaults.SEED, (layout.resolution, layout.resolution), (1, total, 4, h, h))

    with stage_memory(stages, "conditioning", device):
        prior = torch.randn(1, 256, generator=torch.Generator().manual_seed(6))
        emotion: EmotionConditioning = emotion_conditioning(models.emotion_model, prior)
        cond, ref_latents = build_conditioning(
            models, reference_inputs(layout), windows, emotion, settings, noise.augmentation, precision
        )
    outputs["conditioning"] = (
        sum(t.numel() * t.element_size() for t in (cond.audio, cond.emotion, cond.pose_features)) / 2**20
    )

    calls = [0]
    with stage_memory(stages, "sampling", device), torch.no_grad():
        latents = sample(
            models.unet,
            models.scheduler,
            cond,
            ref_latents,
            noise.latents.to(device=device, dtype=precision.diffusion),
            settings.sampler,
            fast=fast,
            on_window=lambda _: calls.__setitem__(0, calls[0] + 1),
        )
    outputs["sampling"] = latents.numel() * latents.element_size() / 2**20

    with stage_memory(stages, "decode", device):
        frames = decode_latents(models.vae, latents, n_frames, settings.decode_chunk_size)
    outputs["decode"] = frames.numel() * frames.element_size() / 2**20

    if interpolate:
        with stage_memory(stages, "interpolation", device):
            video = interpolate_frames(frames, rife)
        outputs["interpolation"] = video.numel() * video.element_size() / 2**20
    facts = {"frames": n_frames, "latent frames": total, "UNet calls": calls[0], "outputs_mb": outputs}
    return stages, facts


def print_run(seconds: float, stages: dict, facts: dict, layout: ModelLayout, steps: int) -> None:
    windows = math.ceil(facts["latent frames"] / layout.window)
    print(
        f"\n-- {seconds:g} s of speech: {facts['frames']} frames (+{layout.window} padding), "
        f"{facts['UNet calls']} UNet calls ({windows} windows x {steps})"
    )
    gpu = any("cuda_max_allocated_mb" in e for e in stages.values())
    header = f"{'stage':>14} {'wall s':>9} {'CPU s':>9} {'peak RSS MB':>12}"
    print(header + (f" {'CUDA max MB':>12}" if gpu else ""))
    for name, entry in stages.items():
        line = f"{name:>14} {entry['seconds']:9.2f} {entry['cpu_seconds']:9.2f} {entry['peak_rss_mb']:12.0f}"
        if gpu:
            line += f" {entry['cuda_max_allocated_mb']:12.0f}"
        print(line)
    calls = max(facts["UNet calls"], 1)
    wall, cpu = stages["sampling"]["seconds"] / calls, stages["sampling"]["cpu_seconds"] / calls
    print(f"sampling per UNet call: {wall:.2f} s wall, {cpu:.2f} s CPU -> 25 steps: ~{wall * 25 * windows:.0f} s wall")


def print_growth(runs: dict) -> None:
    lengths = sorted(runs)
    short, long = lengths[0], lengths[-1]
    gpu = any("cuda_max_allocated_mb" in e for e in runs[short][0].values())
    key = "cuda_max_allocated_mb" if gpu else "peak_rss_mb"
    print(f"\n-- growth from {short:g} s to {long:g} s of the stages' peak {key}")
    print(f"{'stage':>14} {'short MB':>9} {'long MB':>9} {'growth':>8} {'results growth':>15} {'rest':>8}")
    results = 0.0
    for name in runs[short][0]:
        a, b = runs[short][0][name][key], runs[long][0][name][key]
        results += runs[long][1]["outputs_mb"][name] - runs[short][1]["outputs_mb"][name]
        print(f"{name:>14} {a:9.0f} {b:9.0f} {b - a:8.0f} {results:15.0f} {b - a - results:8.0f}")
    print(
        "results growth = growth of the results held at that stage (its own and the earlier stages': whisper\n"
        "windows, tokens, latents, frames), which grow with the clip by nature; 'rest' near or below 0 = the\n"
        "working memory of the stage is flat in clip length."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="medium", choices=CONFIGS)
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0])
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (official 25; CPU default 2)")
    parser.add_argument("--routing", default="exact", choices=("exact", "reference"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady on a shared machine)")
    parser.add_argument("--no-interpolate", action="store_true")
    parser.add_argument("--autocast", choices=("bf16", "fp16"), default=None, help="fast mode: UNet autocast")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # child mode: one length, results to this file
    args = parser.parse_args()
    layout = LAYOUTS[args.config]

    if args.json is None:
        device = device_arg(args.device)
        print_header(f"whole clip, {args.steps} step(s), routing {args.routing}", layout, device, args.threads)
        print("each length runs in its own process (glibc: large blocks mmapped, so RSS follows live memory)")
        runs = {}
        for seconds in args.seconds:
            out = f"/tmp/dicetalk_bench_clip_{os.getpid()}_{seconds:g}.json"
            child = [sys.executable, __file__, *sys.argv[1:], "--json", out]
            child[child.index("--seconds") + 1 : child.index("--seconds") + 1 + len(args.seconds)] = (
                [str(seconds)] if "--seconds" in child else []
            )
            if "--seconds" not in child:
                child += ["--seconds", str(seconds)]
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
            subprocess.run(child, check=True, env=env)
            with open(out) as f:
                result = json.load(f)
            os.remove(out)
            runs[seconds] = (result["stages"], result["facts"])
            print_run(seconds, result["stages"], result["facts"], layout, args.steps)
            peak = max(entry["peak_rss_mb"] for entry in result["stages"].values())
            print(f"models' RSS {result['models_rss_mb']:.0f} MB; peak RSS over all stages {peak:.0f} MB")
        if len(runs) > 1:
            print_growth(runs)
        return

    torch.set_num_threads(args.threads)
    device = device_arg(args.device)
    precision = Precision(device=device, diffusion=DTYPES[args.dtype])
    models = build_models(layout, device=device).to_precision(precision)
    whisper = build_whisper(layout, device=device)
    torch.manual_seed(4)
    rife = IFNet().to(device).eval()
    fast = FastMode(autocast=args.autocast)
    models_rss = rss_mb()
    interpolate = not args.no_interpolate
    stages, facts = run_clip(
        layout, args.seconds[0], args.steps, precision, args.routing, fast, interpolate, models, whisper, rife
    )
    with open(args.json, "w") as f:
        json.dump({"stages": stages, "facts": facts, "models_rss_mb": models_rss}, f)


if __name__ == "__main__":
    main()
