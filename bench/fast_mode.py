"""Fast-mode options and combinations: speed-up over the exact path and deviation from it.

For each option, a whole clip (conditioning, sampling, decode, RIFE interpolation) runs with that
option alone, or with a combination, and is compared with the exact run: process CPU seconds of the
clip and of each stage, the clip's speed-up, UNet calls (full / cached), max abs error of the final
latents, PSNR of the interpolated frames against the exact ones. An option that changes only the
decode or the interpolation decodes the exact run's latents (its conditioning and sampling times are
the exact run's). Cases:

* ``golden``: the official golden case (its weights, inputs and noise; 4-frame windows, 3 steps),
  from ``DICETALK_GOLDEN_DIR`` (default ``../shared/golden``); also prints exact vs the official
  output. No RIFE (the case has none).
* ``tiny``: bench config ``tiny`` (random weights, 25-frame windows, 25 steps; 2 s of speech = 2 windows).
* ``medium``: bench config ``medium`` (SVD-xt's layout at a tenth of its width, 256x256; slow on a CPU).

    python bench/fast_mode.py                                    # golden + tiny, every option
    python bench/fast_mode.py --cases medium --options exact cache-3 best
    python bench/fast_mode.py --cases tiny --compile
    python bench/fast_mode.py --memory --cases medium --seconds 4 16   # sampling memory with caching

``--memory`` runs only the sampling (2 steps: one full, one cached) of clips of each ``--seconds``
and prints the peak memory above the sampling's start, exact against feature caching. ``--calls``
times one window's UNet call, full and cached at each cache depth, for 1 and 3 CFG branches
(best of 2; the adaptive mode's cached call also runs the first down layer).

    python bench/fast_mode.py --calls --cases medium

Random and golden weights are not the real DICE-Talk weights: the deviations only rank the options
and show their direction; judge the real effect on real videos.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
import time

import torch
from common import REPO, max_abs, psnr, use_mmap_for_large_blocks
from process_memory import peak_rss_mb, reset_peak_rss, rss_mb

from dicetalk_core import defaults
from dicetalk_core import sampler as sampler_module
from dicetalk_core.emotion.conditioning import emotion_conditioning
from dicetalk_core.fast_mode import FastMode
from dicetalk_core.interpolation import IFNet, interpolate_frames
from dicetalk_core.models.layouts import LAYOUTS, ModelLayout
from dicetalk_core.pipeline import GenerationSettings, InitialNoise, ReferenceInputs, build_conditioning, generate
from dicetalk_core.precision import Precision
from dicetalk_core.random_models import build_models, build_unet
from dicetalk_core.rates import AUDIO_WINDOW, GENERATION_FPS
from dicetalk_core.sampler import SamplerSettings
from dicetalk_core.vae_decode import decode_latents

BF16 = "bf16"
REUSE_3 = {"guidance_reuse": 3}
BEST_STAGES = {"decode_autocast": BF16, "interpolation_autocast": BF16, "interpolation_batch": 8}
OPTIONS: dict[str, tuple[FastMode, float]] = {
    # name: (fast mode, fraction of the steps to run; 1 = all)
    "exact": (FastMode(), 1.0),
    "autocast-bf16": (FastMode(autocast=BF16), 1.0),
    "autocast-fp16": (FastMode(autocast="fp16"), 1.0),
    "half-steps": (FastMode(), 0.5),
    "guidance-first-60%": (FastMode(guidance_interval=(0.0, 0.6)), 1.0),
    "guidance-reuse-2": (FastMode(guidance_reuse=2), 1.0),
    "guidance-reuse-3": (FastMode(**REUSE_3), 1.0),
    "cache-2": (FastMode(cache_interval=2), 1.0),
    "cache-3": (FastMode(cache_interval=3), 1.0),
    "cache-3-depth-1": (FastMode(cache_interval=3, cache_depth=1), 1.0),
    "cache-3-depth-2": (FastMode(cache_interval=3, cache_depth=2), 1.0),
    "cache-adaptive-0.05": (FastMode(cache_threshold=0.05), 1.0),
    "cache-adaptive-0.1": (FastMode(cache_threshold=0.1), 1.0),
    "cache-adaptive-0.2": (FastMode(cache_threshold=0.2), 1.0),
    "decode-bf16": (FastMode(decode_autocast=BF16), 1.0),
    "decode-fp16": (FastMode(decode_autocast="fp16"), 1.0),
    "decode-clip-25": (FastMode(decode_chunk_size=25), 1.0),
    "rife-batch-8": (FastMode(interpolation_batch=8), 1.0),
    "rife-bf16": (FastMode(interpolation_autocast=BF16), 1.0),
    "compile": (FastMode(compile=True), 1.0),
    # combinations
    "reuse-3+cache-3": (FastMode(**REUSE_3, cache_interval=3), 1.0),
    "reuse-3+cache-6": (FastMode(**REUSE_3, cache_interval=6), 1.0),
    "reuse-3+adaptive-0.1": (FastMode(**REUSE_3, cache_threshold=0.1), 1.0),
    "reuse-3+cache-6+bf16": (FastMode(**REUSE_3, cache_interval=6, autocast=BF16, **BEST_STAGES), 1.0),
    "reuse-3+cache-3+bf16": (FastMode(**REUSE_3, cache_interval=3, autocast=BF16, **BEST_STAGES), 1.0),
}
BEST = OPTIONS["reuse-3+cache-6+bf16"][0]
"""The best combination found on this bench's CPU (``bench/official.py`` runs it as its ``best`` side)."""
SLOW_OR_DEVICE_SPECIFIC = ("compile", "autocast-fp16", "decode-fp16")
DEFAULT_OPTIONS = [name for name in OPTIONS if name not in SLOW_OR_DEVICE_SPECIFIC]
TIMED_STAGES = ("conditioning", "sampling", "decode", "interpolation")


@dataclasses.dataclass
class Case:
    name: str
    models: object
    reference: ReferenceInputs
    windows: torch.Tensor
    emotion: object
    settings: GenerationSettings
    noise: InitialNoise
    rife: IFNet | None = None
    official_latents: torch.Tensor | None = None


@dataclasses.dataclass
class Run:
    video: torch.Tensor
    latents: torch.Tensor
    cpu: dict[str, float]
    calls: list[tuple[int, bool]]

    @property
    def clip_cpu(self) -> float:
        return sum(self.cpu.values())


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
        official_latents=case["outputs.final_latents"],
    )


def random_case(layout: ModelLayout, seconds: float, steps: int) -> Case:
    models = build_models(layout)
    g = torch.Generator().manual_seed(7)
    n = int(seconds * GENERATION_FPS)
    whisper = layout.whisper
    windows = torch.randn(n, AUDIO_WINDOW, whisper["encoder_layers"] + 1, whisper["d_model"], generator=g)
    size = layout.resolution
    mask = torch.zeros(3, size, size)
    mask[:, size // 5 : 4 * size // 5, size // 4 : 3 * size // 4] = 1
    reference = ReferenceInputs(
        torch.rand(3, size, size, generator=g) * 2 - 1, torch.randn(3, 224, 224, generator=g), mask
    )
    emotion = emotion_conditioning(models.emotion_model, torch.randn(1, 256, generator=g))
    total = n + layout.window
    latent = layout.latent_size
    noise = InitialNoise.from_seed(defaults.SEED, (size, size), (1, total, 4, latent, latent))
    settings = GenerationSettings(sampler=SamplerSettings(steps=steps, window=layout.window))
    torch.manual_seed(11)
    return Case(layout.name, models, reference, windows, emotion, settings, noise, IFNet().eval())


class CallLog:
    """Records the feature cache's calls of a run (the sampler makes one cache per run)."""

    def __init__(self) -> None:
        self.caches: list = []
        self._original = sampler_module.FeatureCache

    def __enter__(self) -> CallLog:
        original, caches = self._original, self.caches

        def make(*args, **kwargs):
            cache = original(*args, **kwargs)
            caches.append(cache)
            return cache

        sampler_module.FeatureCache = make
        return self

    def __exit__(self, *_: object) -> None:
        sampler_module.FeatureCache = self._original

    def calls(self) -> list[tuple[int, bool]]:
        return [call for cache in self.caches for call in cache.calls]


STAGE_ONLY = {"decode_autocast": None, "decode_chunk_size": None, "interpolation_autocast": None}


def changes_only_decode_or_interpolation(fast: FastMode) -> bool:
    return dataclasses.replace(fast, **STAGE_ONLY, interpolation_batch=1) == FastMode()


def run(case: Case, fast: FastMode, step_fraction: float, exact: Run | None = None) -> Run:
    """One clip with ``fast``; with ``exact`` and a decode/interpolation-only option, from exact's latents."""
    steps = max(1, round(case.settings.sampler.steps * step_fraction))
    settings = dataclasses.replace(
        case.settings, sampler=dataclasses.replace(case.settings.sampler, steps=steps), fast=fast
    )
    precision = Precision(device=torch.device("cpu"))
    marks: list[tuple[str, float]] = []
    if exact is not None and step_fraction == 1.0 and changes_only_decode_or_interpolation(fast):
        marks.append(("decode", time.process_time()))
        with fast.decode_context(precision.device):
            frames = decode_latents(
                case.models.vae,
                exact.latents,
                case.windows.shape[0],
                fast.decode_chunk_size or settings.decode_chunk_size,
                clips_per_call=settings.decode_clips_per_call,
            )
        latents, calls = exact.latents, []
        before = {stage: exact.cpu[stage] for stage in ("conditioning", "sampling")}
    else:
        with CallLog() as log:
            marks.append(("conditioning", time.process_time()))
            frames, latents = generate(
                case.models,
                case.reference,
                case.windows,
                case.emotion,
                settings,
                precision,
                noise=case.noise,
                on_stage=lambda stage, _memory: marks.append((stage, time.process_time())),
            )
        calls, before = log.calls(), {}
    marks.append(("interpolation", time.process_time()))
    video = frames
    if case.rife is not None:
        video = interpolate_frames(
            frames, case.rife, batch_size=fast.interpolation_batch, autocast=fast.interpolation_autocast
        )
    marks.append(("end", time.process_time()))
    cpu: dict[str, float] = dict(before)
    for (stage, start), (_, stop) in itertools.pairwise(marks):
        cpu[stage] = cpu.get(stage, 0.0) + stop - start
    return Run(video, latents, cpu, calls)


def describe_calls(calls: list[tuple[int, bool]]) -> str:
    """``full/cached`` counts of the 3-branch and 1-branch calls, e.g. ``3b 9/9 1b 0/32``."""
    parts = []
    for branches in (3, 1):
        full = sum(1 for b, f in calls if b == branches and f)
        cached = sum(1 for b, f in calls if b == branches and not f)
        if full or cached:
            parts.append(f"{branches}b {full}/{cached}")
    return " ".join(parts) or "-"


def compare(case: Case, options: list[str]) -> None:
    s = case.settings.sampler
    windows = math.ceil((case.windows.shape[0] + s.window) / (s.window - s.overlap))
    frames = case.windows.shape[0]
    print(f"\n-- case {case.name}: {frames} frames, window {s.window}, {s.steps} steps, {windows} windows")
    with torch.no_grad():
        exact = run(case, FastMode(), 1.0 / s.steps)  # warm-up: one step
        exact = run(case, FastMode(), 1.0)
        if case.official_latents is not None:
            print(f"exact vs official final latents: max abs {max_abs(exact.latents, case.official_latents):.3g}")
        head = "".join(f"{stage[:6]:>8}" for stage in TIMED_STAGES)
        print(
            f"{'option':>24} {'clip CPU s':>10} {'speed-up':>9}{head} {'sampling x':>10} "
            f"{'calls full/cached':>18} {'latents max abs':>16} {'video PSNR dB':>14}"
        )
        for option in options:
            fast, fraction = OPTIONS[option]
            if option == "compile":  # the first run compiles; time the second
                wall = time.perf_counter()
                run(case, fast, fraction)
                print(f"{'(compile run)':>24} {time.perf_counter() - wall:10.2f} s wall")
            result = exact if option == "exact" else run(case, fast, fraction, exact)
            stages = "".join(f"{result.cpu.get(stage, 0.0):8.2f}" for stage in TIMED_STAGES)
            sampling = exact.cpu["sampling"] / result.cpu["sampling"]
            err = max_abs(result.latents, exact.latents)
            quality = psnr(result.video, exact.video)
            print(
                f"{option:>24} {result.clip_cpu:10.2f} {exact.clip_cpu / result.clip_cpu:8.2f}x{stages} "
                f"{sampling:9.2f}x {describe_calls(result.calls):>18} {err:16.3g} {quality:14.1f}",
                flush=True,
            )


def sampling_memory(case: Case, options: list[str]) -> dict[str, float]:
    """Peak RSS above the sampling's start (MB) of 2 steps with each option."""
    precision = Precision(device=torch.device("cpu"))
    settings = case.settings
    cond, ref_latents = build_conditioning(
        case.models, case.reference, case.windows, case.emotion, settings, case.noise.augmentation, precision
    )
    peaks = {}
    for option in options:
        fast, _ = OPTIONS[option]
        reset_peak_rss()
        start = rss_mb()
        with torch.no_grad():
            sampler_module.sample(
                case.models.unet,
                case.models.scheduler,
                cond,
                ref_latents,
                case.noise.latents,
                dataclasses.replace(settings.sampler, steps=2),
                fast=dataclasses.replace(fast, cache_interval=2) if fast.cache_interval > 1 else fast,
            )
        peaks[option] = peak_rss_mb() - start
    return peaks


def call_costs(layout: ModelLayout, depths: list[int]) -> None:
    """CPU seconds of one window's UNet call: full, and cached at each depth (see the module docstring)."""
    from unet_step import window_inputs

    from dicetalk_core.feature_cache import ALL_BRANCHES, FULL_BRANCH, FeatureCache

    unet = build_unet(layout)
    frames = torch.arange(layout.window)

    def best_of_two(fn) -> float:
        times = []
        for _ in range(2):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return min(times)

    for branches, slots in ((1, FULL_BRANCH), (3, ALL_BRANCHES)):
        args, kwargs = window_inputs(layout, "cpu", torch.float32, branches=branches)
        with torch.no_grad():
            full = best_of_two(lambda args=args, kwargs=kwargs: unet(*args, **kwargs))
            parts = [f"{branches}-branch call: full {full:.2f} s"]
            for depth, threshold in [(d, 0.0) for d in depths] + [(0, 0.99)]:
                cache = FeatureCache(unet, depth, 1000, threshold, layout.window)
                cache(0, slots, frames, *args, **kwargs)
                cached = best_of_two(lambda c=cache, s=slots, a=args, k=kwargs: c(1, s, frames, *a, **k))
                name = f"depth {depth}" if threshold == 0 else "adaptive, depth 0"
                parts.append(f"{name} {cached:.2f} s (x{full / cached:.1f})")
        print(", ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["golden", "tiny"], choices=("golden", "tiny", "medium"))
    parser.add_argument("--options", nargs="+", default=DEFAULT_OPTIONS, choices=list(OPTIONS))
    parser.add_argument("--compile", action="store_true", help="add the torch.compile option (compiles: slow)")
    parser.add_argument("--steps", type=int, default=25, help="steps of the random-weight cases")
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=[2.0], help="speech length(s) of the random-weight cases"
    )
    parser.add_argument("--memory", action="store_true", help="sampling memory of exact vs caching (see above)")
    parser.add_argument("--calls", action="store_true", help="one UNet call, full vs cached per depth (see above)")
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 1, 2, 3, 5], help="depths --calls times")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    use_mmap_for_large_blocks()
    options = list(dict.fromkeys(["exact", *args.options, *(["compile"] if args.compile else [])]))

    if args.calls:
        for name in (c for c in args.cases if c != "golden"):
            print(f"== one window's UNet call, {name}, full vs cached; torch {torch.__version__}, CPU, process CPU s")
            call_costs(LAYOUTS[name], args.depths)
        return
    if args.memory:
        print(f"== sampling memory, exact vs feature caching (2 steps); torch {torch.__version__}, CPU")
        for name in (c for c in args.cases if c != "golden"):
            for seconds in args.seconds:
                case = random_case(LAYOUTS[name], seconds, 2)
                peaks = sampling_memory(case, options)
                frames = case.windows.shape[0] + case.settings.sampler.window
                line = ", ".join(f"{option} +{peak:.0f} MB" for option, peak in peaks.items())
                print(f"{name}, {seconds:g} s ({frames} latent frames): {line}", flush=True)
        return
    print(f"== fast-mode options vs exact; torch {torch.__version__}, CPU, {args.threads} thread(s)")
    print("times: process CPU seconds per stage of one clip; video = the frames after RIFE (golden: before)")
    for name in args.cases:
        for seconds in args.seconds if name != "golden" else [0.0]:
            case = golden_case() if name == "golden" else random_case(LAYOUTS[name], seconds, args.steps)
            if case is not None:
                compare(case, options)


if __name__ == "__main__":
    main()
