"""``python -m dicetalk_core --models DIR --check --deep``: are these the right weights, and what can this machine do?

For a user who has just downloaded the real files. In about a minute on a GPU it:

1. loads every file the way a run does (safetensors, or weights-only ``torch.load``; strict key-for-key
   loading; the loaders' own messages for a missing, truncated or foreign file) and compares each
   module's keys, shapes and parameter count with the official architecture, which the pack's own
   classes give when built on the ``meta`` device (:data:`~.models.layouts.OFFICIAL`; no reference file
   is needed); it also reads the emotion presets that are present and checks the files belong together;
2. runs a 2-frame, 1-step generation at 256 px on the best device present;
3. prints the device, its free memory, the precision a run uses, the seconds of compute per second of
   video expected from a timed UNet call, and whether 512x512 fits in one pass (every model loaded) or
   needs the stage-by-stage path (only the running stage's models loaded), from :func:`plan_memory`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from . import defaults
from .audio import audio_windows
from .emotion.conditioning import emotion_conditioning
from .emotion.presets import load_emotion
from .errors import DiceTalkError
from .face import prepare_portrait
from .interpolation import IFNet
from .loaders.checkpoints import check_state_dict
from .loaders.dice_talk import ModelFiles, check_models_fit
from .loaders.rife import load_rife
from .loaders.stages import SESSION_STAGES
from .loaders.svd import build_scheduler
from .loaders.whisper import check_whisper_fits, load_whisper
from .memory import decode_frame_bytes, free_memory_bytes, unet_call_bytes
from .model_files import (
    AUDIO_PROJECTION_FILE,
    EMOTION_MODEL_FILE,
    EMOTIONS_FOLDER,
    OFFICIAL_PRESETS,
    POSE_GUIDER_FILE,
    RIFE_FILE,
    UNET_FILE,
    WHISPER_FOLDER,
    default_svd_path,
)
from .models import AudioProjection, EmotionModel, PoseGuider
from .models.bundle import DiceTalkModels
from .models.layouts import OFFICIAL, ModelLayout
from .pipeline import GenerationSettings, ReferenceInputs, generate
from .precision import DTYPES, Precision
from .rates import GENERATION_FPS, SAMPLE_RATE
from .sampler import SamplerSettings
from .unet_adapters import install_dice_adapters

SMOKE_FRAMES = 2
SMOKE_RESOLUTION = 256
SMOKE_CPU_WINDOW = 2
"""Frames per window of the smoke run on a CPU (the official 25-frame window would take minutes there)."""
CHECK_RESOLUTION = 512
REFERENCE_CLIP_SECONDS = 10.0
"""The clip length the seconds-per-second-of-video figure is given for."""
SPATIAL_ATTENTION_SHARE = 13.0 / 104.9
"""Share of spatial self-attention (quadratic in positions) in a 512 px UNet call (``bench/flops.py``)."""
CONDITIONING_FRAMES = 2
"""The VAE encode of the portrait holds about as much as decoding this many frames (fp32)."""
MEMORY_MARGIN = 0.9
"""Share of the free memory a plan may use (the allocator, the CUDA context and the OS take the rest)."""
GB = 2**30

Report = Callable[[str], None]


@dataclass(frozen=True)
class Expected:
    """One module of the official layout: how to build it and what to call it."""

    what: str
    build: Callable[[ModelLayout], nn.Module]


EXPECTED: dict[str, Expected] = {
    "unet": Expected(
        "the DICE-Talk UNet",
        lambda layout: install_dice_adapters(
            UNetSpatioTemporalConditionModel(**layout.unet), (layout.tokens, layout.tokens)
        ),
    ),
    "vae": Expected("the SVD-xt VAE", lambda layout: AutoencoderKLTemporalDecoder(**layout.vae)),
    "image_encoder": Expected(
        "the SVD-xt CLIP image encoder",
        lambda layout: CLIPVisionModelWithProjection(CLIPVisionConfig(**layout.image_encoder)),
    ),
    "pose_guider": Expected("the DICE-Talk pose guider", lambda layout: PoseGuider(**layout.pose_guider)),
    "audio_projection": Expected(
        "the DICE-Talk audio projection", lambda layout: AudioProjection(**layout.audio_projection)
    ),
    "emotion_model": Expected("the DICE-Talk emotion model", lambda layout: EmotionModel(**layout.emotion_model)),
    "whisper": Expected("the whisper-tiny encoder", lambda layout: WhisperEncoder(WhisperConfig(**layout.whisper))),
    "rife": Expected("the RIFE frame interpolator", lambda _layout: IFNet()),
}
"""Every module a run loads, in loading order."""


def expected_module(name: str, layout: ModelLayout) -> nn.Module:
    """The module ``name`` of ``layout`` built on the ``meta`` device: its keys and shapes, no memory."""
    with torch.device("meta"):
        module = EXPECTED[name].build(layout)
    return module.to("meta")  # a few scalars (diffusers' mix factors) are made on the CPU whatever the device


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def check_layout(module: nn.Module, name: str, layout: ModelLayout, source: str) -> int:
    """Raise the loaders' :class:`CheckpointError` unless ``module`` (loaded from ``source``) has the keys,
    shapes and parameter count of ``layout``'s module ``name``; returns the parameter count."""
    expected = expected_module(name, layout)
    what = f"{EXPECTED[name].what} of the {layout.name} layout"
    check_state_dict(expected, module.state_dict(), source=source, what=what)
    count, wanted = parameter_count(module), parameter_count(expected)
    if count != wanted:  # keys and shapes agree, so only shared or missing tensors could make this differ
        raise DiceTalkError(f"{source} has {count:,} parameters; {what} has {wanted:,}.")
    return count


# ------------------------------------------------------------------------------------------ memory plan


@dataclass(frozen=True)
class MemoryPlan:
    """How a 512x512 run fits a device.

    Attributes:
        one_pass: bytes with every model loaded and the largest stage's working memory.
        by_stage: bytes of the largest stage with only its own models loaded.
        free: bytes free on the device.
        verdict: ``"one pass"``, ``"stage by stage"`` or ``"does not fit"``.
    """

    one_pass: int
    by_stage: int
    free: int
    verdict: str


def plan_memory(
    weights: Mapping[str, int],
    working: Mapping[str, int],
    free: int,
    stages: Mapping[str, tuple[str, ...]] = SESSION_STAGES,
    margin: float = MEMORY_MARGIN,
) -> MemoryPlan:
    """Whether a run fits ``free`` bytes with every model loaded, only stage by stage, or not at all.

    Args:
        weights: bytes of each module as it runs (device dtype), by the names of ``stages``.
        working: bytes each stage needs beyond its modules (activations, outputs); stages not named need 0.
        free: free bytes on the device before anything is loaded.
        stages: each stage's modules.
        margin: share of ``free`` a plan may use.
    """
    one_pass = sum(weights.values()) + max(working.values(), default=0)
    by_stage = max(sum(weights.get(m, 0) for m in modules) + working.get(stage, 0) for stage, modules in stages.items())
    budget = free * margin
    verdict = "one pass" if one_pass <= budget else "stage by stage" if by_stage <= budget else "does not fit"
    return MemoryPlan(one_pass, by_stage, free, verdict)


def call_cost_ratio(from_resolution: int, from_frames: int, to_resolution: int, to_frames: int) -> float:
    """How many times more a UNet call at (``to_resolution``, ``to_frames``) costs than at the ``from`` shape:
    linear in frames x positions, the spatial self-attention quadratic in positions."""
    scale = (to_frames / from_frames) * (to_resolution / from_resolution) ** 2
    attention = scale * (to_resolution / from_resolution) ** 2
    return 1 / ((1 - SPATIAL_ATTENTION_SHARE) / scale + SPATIAL_ATTENTION_SHARE / attention)


def unet_calls(seconds: float, steps: int = defaults.STEPS, window: int = defaults.WINDOW) -> int:
    """UNet calls of a clip of ``seconds`` of speech at the official settings."""
    frames = int(seconds * GENERATION_FPS)
    return steps * -(-(frames + window) // window)


# ------------------------------------------------------------------------------------------ the check


@dataclass
class Loaded:
    """Modules loaded so far, and the problems met."""

    modules: dict[str, nn.Module]
    problems: list[str]


def _load(
    name: str, source: str, read: Callable[[], nn.Module], layout: ModelLayout, loaded: Loaded, report: Report
) -> None:
    try:
        module = read()
        count = check_layout(module, name, layout, source)
    except (DiceTalkError, OSError, RuntimeError, ValueError) as err:
        loaded.problems.append(source)
        report(f"FAIL  {source}\n      {str(err).replace(chr(10), chr(10) + '      ')}")
        return
    loaded.modules[name] = module
    report(f"ok    {source:<60} {count:>14,} parameters")


def load_and_check(
    models_dir: Path, svd: Path, layout: ModelLayout, precision: Precision, report: Report
) -> tuple[Loaded, DiceTalkModels | None, object]:
    """Every module read and compared with ``layout``; the DICE-Talk bundle and whisper when all loaded."""
    loaded = Loaded({}, [])
    try:
        files = ModelFiles.find(models_dir, svd, precision)
    except DiceTalkError as err:
        loaded.problems.append(str(models_dir))
        report(f"FAIL  {err}")
        return loaded, None, None
    for name in DiceTalkModels.MODULES:
        _load(name, _source(files, name), lambda name=name: files.load(name), layout, loaded, report)
    whisper_folder = models_dir / WHISPER_FOLDER
    whisper_box: dict[str, object] = {}

    def read_whisper() -> nn.Module:
        whisper_box["encoder"] = load_whisper(whisper_folder, device=precision.device, dtype=precision.conditioning)
        return whisper_box["encoder"].encoder

    _load("whisper", str(whisper_folder), read_whisper, layout, loaded, report)
    _load(
        "rife",
        str(models_dir / RIFE_FILE),
        lambda: load_rife(models_dir / RIFE_FILE, device=precision.device),
        layout,
        loaded,
        report,
    )
    for preset in OFFICIAL_PRESETS:
        path = models_dir / EMOTIONS_FOLDER / f"{preset}.npy"
        if path.is_file():
            try:
                load_emotion(path)
                report(f"ok    {path}")
            except DiceTalkError as err:
                loaded.problems.append(str(path))
                report(f"FAIL  {path}\n      {err}")
    if not all(name in loaded.modules for name in (*DiceTalkModels.MODULES, "whisper")):
        return loaded, None, whisper_box.get("encoder")
    models = DiceTalkModels(
        **{name: loaded.modules[name] for name in DiceTalkModels.MODULES},
        scheduler=build_scheduler(files.configs.scheduler),
    )
    try:
        check_models_fit(models, files.paths)
        check_whisper_fits(models.audio_projection, whisper_box["encoder"], whisper_folder)
    except DiceTalkError as err:
        loaded.problems.append("the files together")
        report(f"FAIL  {err}")
        return loaded, None, whisper_box["encoder"]
    return loaded, models, whisper_box["encoder"]


RELEASE_FILES = {
    "unet": UNET_FILE,
    "pose_guider": POSE_GUIDER_FILE,
    "audio_projection": AUDIO_PROJECTION_FILE,
    "emotion_model": EMOTION_MODEL_FILE,
}
"""The DICE-Talk release file of each module read from one (the others come from SVD-xt)."""


def _source(files: ModelFiles, name: str) -> str:
    """The file (or SVD-xt subfolder) the module ``name`` is read from."""
    if name in RELEASE_FILES:
        return str(files.paths[RELEASE_FILES[name]])
    return str(files.svd_path / name if files.svd_path.is_dir() else files.svd_path)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CallTimer:
    """Seconds of every UNet call (CUDA synchronised), through forward hooks on the UNet."""

    def __init__(self, unet: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds: list[float] = []
        self._start = 0.0
        self._handles = [unet.register_forward_pre_hook(self._before), unet.register_forward_hook(self._after)]

    def _before(self, *_: object) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def _after(self, *_: object) -> None:
        _sync(self.device)
        self.seconds.append(time.perf_counter() - self._start)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def smoke_run(
    models: DiceTalkModels, whisper: object, models_dir: Path, precision: Precision
) -> tuple[torch.Tensor, float, list[float], int]:
    """A 2-frame, 1-step generation at 256 px: frames, seconds, UNet call seconds, frames per window."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SMOKE_RESOLUTION, SMOKE_RESOLUTION, 3), dtype=np.uint8)
    size = SMOKE_RESOLUTION
    portrait = prepare_portrait(image, (size / 4, size / 5, size / 2, 3 * size / 5), min_resolution=size)
    reference = ReferenceInputs(portrait.ref_image, portrait.clip_image, portrait.face_mask)
    t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
    windows = audio_windows(whisper, tone, SAMPLE_RATE).windows[:SMOKE_FRAMES]
    neutral = models_dir / EMOTIONS_FOLDER / "neutral.npy"
    prior = load_emotion(neutral) if neutral.is_file() else torch.zeros(1, 256)
    emotion = emotion_conditioning(models.emotion_model, prior)
    window = defaults.WINDOW if precision.device.type == "cuda" else SMOKE_CPU_WINDOW
    settings = GenerationSettings(sampler=SamplerSettings(steps=1, window=window))
    timer = CallTimer(models.unet, precision.device)
    started = time.perf_counter()
    try:
        frames, _ = generate(models, reference, windows, emotion, settings, precision, seed=defaults.SEED)
    finally:
        timer.remove()
    return frames, time.perf_counter() - started, timer.seconds, window


def timed_call_512(models: DiceTalkModels, precision: Precision) -> tuple[float, int] | None:
    """Seconds and peak extra bytes of one official UNet call (3 x 25 frames at 512 px) on a GPU; None elsewhere
    or when it does not fit."""
    device, dtype = precision.device, precision.diffusion
    if device.type != "cuda":
        return None
    unet = models.unet
    h, window = CHECK_RESOLUTION // 8, defaults.WINDOW
    cross = unet.config.cross_attention_dim
    tokens = unet.adapter_processors()[0].num_tokens
    g = torch.Generator().manual_seed(1)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    frames = 3 * window
    kwargs = dict(
        image_embeds=rand(frames, 1, cross),
        adapter_tokens=[rand(frames, tokens[0], cross), rand(frames, tokens[1], cross)],
        added_time_ids=torch.tensor([[GENERATION_FPS, 8.0, 16.0]] * 3, device=device, dtype=dtype),
        pose_features=rand(1, unet.config.block_out_channels[0], h, h),
    )
    sample = rand(3, window, unet.config.in_channels, h, h)
    timestep = torch.tensor(1.0, device=device)
    try:
        with torch.no_grad():
            unet(sample, timestep, **kwargs)  # warm-up: kernels picked, workspace allocated
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            started = time.perf_counter()
            unet(sample, timestep, **kwargs)
            _sync(device)
            seconds = time.perf_counter() - started
        return seconds, torch.cuda.max_memory_allocated(device) - before
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def free_bytes(device: torch.device) -> tuple[int, int | None]:
    """Free and total memory of ``device``: the driver's count on CUDA, available RAM elsewhere."""
    free = free_memory_bytes(device)
    if free is not None:
        return free, torch.cuda.mem_get_info(device)[1]
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(fields["MemAvailable"].split()[0]) * 1024, int(fields["MemTotal"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, None


def dtype_name(dtype: torch.dtype) -> str:
    """``fp16``, ``bf16``, ``fp32`` (the names of ``--precision``)."""
    return next((name for name, value in DTYPES.items() if value == dtype), str(dtype))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device)


def run_deep_check(
    models_dir: str | Path,
    svd: str | Path | None = None,
    *,
    precision: Precision | None = None,
    layout: ModelLayout = OFFICIAL,
    report: Report = print,
) -> int:
    """The deep check (see the module docstring); returns 0 when every file fits and the smoke run worked."""
    models_dir = Path(models_dir)
    svd = Path(svd) if svd is not None else default_svd_path(models_dir)
    precision = precision or Precision.resolve("auto")
    device = precision.device
    free, total = free_bytes(device)
    report(f"\ndeep check of {models_dir.resolve()} against the {layout.name} layout")
    loaded, models, whisper = load_and_check(models_dir, svd, layout, precision, report)
    if loaded.problems:
        report(f"{len(loaded.problems)} problem(s) above: re-download the file(s) named FAIL, then check again.")
        return 1
    report(f"all files fit the {layout.name} layout")
    total_text = f" of {total / GB:.1f} GB" if total else ""
    report(f"device: {device_name(device)}, {free / GB:.1f} GB free{total_text}")
    diffusion, conditioning = dtype_name(precision.diffusion), dtype_name(precision.conditioning)
    report(f"precision: {diffusion} (UNet, VAE, CLIP, pose guider), {conditioning} (whisper, audio, emotion)")
    try:
        with torch.no_grad():
            frames, seconds, calls, window = smoke_run(models, whisper, models_dir, precision)
    except (DiceTalkError, RuntimeError) as err:
        report(f"FAIL  smoke run ({SMOKE_FRAMES} frames, 1 step, {SMOKE_RESOLUTION} px): {err}")
        return 1
    finite = bool(torch.isfinite(frames).all())
    shape = "x".join(str(s) for s in frames.shape)
    report(
        f"{'ok  ' if finite else 'FAIL'}  smoke run: {SMOKE_FRAMES} frames, 1 step, {SMOKE_RESOLUTION} px, windows of "
        f"{window} frames: {seconds:.1f} s, frames {shape}, {'finite' if finite else 'NOT FINITE'}"
    )
    if not finite:
        return 1
    measured = timed_call_512(models, precision)
    latent = (CHECK_RESOLUTION // 8, CHECK_RESOLUTION // 8)
    calls_per_second = unet_calls(REFERENCE_CLIP_SECONDS) / REFERENCE_CLIP_SECONDS
    if measured is not None:
        call, work = measured
        how = "measured"
    else:
        ratio = call_cost_ratio(SMOKE_RESOLUTION, 3 * window, CHECK_RESOLUTION, 3 * defaults.WINDOW)
        call = min(calls) * ratio
        work = unet_call_bytes(models.unet.config, latent, 3 * defaults.WINDOW, precision.diffusion)
        how = f"{min(calls):.2f} s at {SMOKE_RESOLUTION} px x {ratio:.0f} (cost model)"
    report(
        f"UNet call at {CHECK_RESOLUTION} px (3 x {defaults.WINDOW} frames): {call:.2f} s ({how}) -> about "
        f"{call * calls_per_second:.0f} s of sampling per second of video ({unet_calls(REFERENCE_CLIP_SECONDS)} "
        f"calls for {REFERENCE_CLIP_SECONDS:g} s of speech; decode and RIFE add a few percent)"
    )
    weights = {name: module_bytes(module) for name, module in loaded.modules.items()}
    per_frame = decode_frame_bytes(models.vae, latent)
    working = {
        "sampling": work,
        "decode": per_frame * defaults.DECODE_CHUNK,
        "conditioning": per_frame * 2 * CONDITIONING_FRAMES,
    }
    plan = plan_memory(weights, working, free)
    advice = {
        "one pass": "fits with every model loaded",
        "stage by stage": "needs the stage-by-stage path (the command line's default; in ComfyUI it is automatic)",
        "does not fit": "does not fit even stage by stage: lower the resolution",
    }[plan.verdict]
    report(
        f"{CHECK_RESOLUTION}x{CHECK_RESOLUTION}: {plan.one_pass / GB:.1f} GB with every model loaded, "
        f"{plan.by_stage / GB:.1f} GB stage by stage; {free / GB:.1f} GB free -> {advice}"
    )
    return 0
