"""Fast-mode options, one at a time: speed-up over the exact path and deviation from it.

For each option, a whole generation (conditioning, sampling, decode) runs with that option alone and
is compared with the exact run: sampling time ratio, max abs error of the final latents, PSNR of the
decoded frames against the exact frames. Cases:

* ``golden``: the official golden case (its weights, inputs and noise; 4-frame windows, 3 steps),
  from ``DICETALK_GOLDEN_DIR`` (default ``../shared/golden``); also prints exact vs the official output.
* ``tiny``: bench config ``tiny`` (random weights, 25-frame windows, 25 steps, 2 s of speech).
* ``medium``: bench config ``medium`` (slow on a CPU: pass ``--steps``).

    python bench/fast_mode.py                       # golden + tiny, every option but compile
    python bench/fast_mode.py --cases tiny --compile
    python bench/fast_mode.py --cases medium --steps 4 --options exact autocast-bf16

Random and golden weights are not the real DICE-Talk weights: the deviations only rank the options
and show their direction; judge the real effect on real videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

import torch
from common import CONFIGS, REPO, BenchConfig, build_models, max_abs, psnr

from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.fast_mode import FastMode
from dicetalk_core.pipeline import GenerationSettings, InitialNoise, ReferenceInputs, generate
from dicetalk_core.precision import Precision
from dicetalk_core.sampler import SamplerSettings

OPTIONS: dict[str, tuple[FastMode, float]] = {
    # name: (fast mode, fraction of the steps to run; 1 = all)
    "exact": (FastMode(), 1.0),
    "autocast-bf16": (FastMode(autocast="bf16"), 1.0),
    "autocast-fp16": (FastMode(autocast="fp16"), 1.0),
    "half-steps": (FastMode(), 0.5),
    "guidance-first-60%": (FastMode(guidance_interval=(0.0, 0.6)), 1.0),
    "guidance-reuse-2": (FastMode(guidance_reuse=2), 1.0),
    "guidance-reuse-3": (FastMode(guidance_reuse=3), 1.0),
    "compile": (FastMode(compile=True), 1.0),
}
DEFAULT_OPTIONS = [name for name in OPTIONS if name not in ("compile", "autocast-fp16")]


@dataclasses.dataclass
class Case:
    name: str
    models: object
    reference: ReferenceInputs
    windows: torch.Tensor
    emotion: object
    settings: GenerationSettings
    noise: InitialNoise
    official_latents: torch.Tensor | None = None


def golden_case() -> Case | None:
    sys.path.insert(0, str(REPO / "tests"))
    from golden import discover
    from parity_checks.pipeline_end_to_end import build_models as golden_models
    from parity_checks.pipeline_end_to_end import settings_of

    from dicetalk_core.audio import frame_windows, pad_hidden_states

    cases = [c for c in discover() if c.kind == "pipeline_end_to_end"]
    if not cases:
        print("golden case absent (set DICETALK_GOLDEN_DIR): skipped")
        return None
    case = cases[0]
    config = case.meta["config"]
    models = golden_models(case)
    padded = pad_hidden_states(case["inputs.whisper_hidden_states"], config["audio_len"])
    return Case(
        "golden",
        models,
        ReferenceInputs(case["inputs.ref_img"], case["inputs.clip_image"], case["inputs.face_mask"]),
        frame_windows(padded, config["audio_len"], config["step"]),
        emotion_conditioning(models.emotion_model, case["inputs.emo_prior"], retrieval=config["retrieval"]),
        settings_of(case),
        InitialNoise(case["inputs.aug_noise"], case["inputs.initial_noise"]),
        case["outputs.final_latents"],
    )


def random_case(cfg: BenchConfig, seconds: float, steps: int) -> Case:
    models = build_models(cfg)
    g = torch.Generator().manual_seed(7)
    n = int(seconds * 25) // 2
    windows = torch.randn(n, 10, cfg.whisper_layers + 1, cfg.whisper_dim, generator=g)
    size = cfg.resolution
    mask = torch.zeros(3, size, size)
    mask[:, size // 5 : 4 * size // 5, size // 4 : 3 * size // 4] = 1
    reference = ReferenceInputs(
        torch.rand(3, size, size, generator=g) * 2 - 1, torch.randn(3, 224, 224, generator=g), mask
    )
    emotion = emotion_conditioning(models.emotion_model, torch.randn(1, 256, generator=g))
    total = n + cfg.window
    noise = InitialNoise.from_seed(72589, (size, size), (1, total, 4, cfg.latent, cfg.latent))
    settings = GenerationSettings(sampler=SamplerSettings(steps=steps, window=cfg.window))
    return Case(cfg.name, models, reference, windows, emotion, settings, noise)


def run(case: Case, fast: FastMode, step_fraction: float) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    steps = max(1, round(case.settings.sampler.steps * step_fraction))
    settings = dataclasses.replace(
        case.settings, sampler=dataclasses.replace(case.settings.sampler, steps=steps), fast=fast
    )
    precision = Precision(device=torch.device("cpu"))
    wall, cpu = time.perf_counter(), time.process_time()
    frames, latents = generate(
        case.models, case.reference, case.windows, case.emotion, settings, precision, noise=case.noise
    )
    return frames, latents, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["golden", "tiny"], choices=("golden", "tiny", "medium"))
    parser.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS, choices=sorted(OPTIONS))
    parser.add_argument("--compile", action="store_true", help="add the torch.compile option (compiles: slow)")
    parser.add_argument("--steps", type=int, default=25, help="steps of the random-weight cases")
    parser.add_argument("--seconds", type=float, default=2.0, help="speech length of the random-weight cases")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = list(dict.fromkeys(["exact", *args.options, *(["compile"] if args.compile else [])]))

    print(f"== fast-mode options vs exact; torch {torch.__version__}, CPU, {args.threads} thread(s)")
    print("times: whole generate() (conditioning + sampling + decode), process CPU seconds")
    for name in args.cases:
        case = golden_case() if name == "golden" else random_case(CONFIGS[name], args.seconds, args.steps)
        if case is None:
            continue
        s = case.settings.sampler
        windows = math.ceil((case.windows.shape[0] + s.window) / (s.window - s.overlap))
        frames = case.windows.shape[0]
        print(f"\n-- case {case.name}: {frames} frames, window {s.window}, {s.steps} steps, {windows} windows")
        with torch.no_grad():
            exact_frames, exact_latents, _, exact_cpu = run(case, FastMode(), 1.0)
            if case.official_latents is not None:
                print(f"exact vs official final latents: max abs {max_abs(exact_latents, case.official_latents):.3g}")
            print(f"{'option':>20} {'CPU s':>8} {'speed-up':>9} {'latents max abs':>16} {'frames PSNR dB':>15}")
            for option in options:
                fast, fraction = OPTIONS[option]
                if option == "compile":  # the first run compiles; time the second
                    _, _, warm_wall, _ = run(case, fast, fraction)
                    print(f"{'(compile run)':>20} {warm_wall:8.2f} s wall")
                frames, latents, _, cpu = run(case, fast, fraction)
                if option == "exact":  # timed a second time: the first run paid the warm-up
                    exact_cpu = cpu
                err = max_abs(latents, exact_latents)
                print(f"{option:>20} {cpu:8.2f} {exact_cpu / cpu:8.2f}x {err:16.3g} {psnr(frames, exact_frames):15.1f}")


if __name__ == "__main__":
    main()
