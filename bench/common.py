"""Shared pieces of the bench scripts: the model layouts, timers, memory probes.

The benches build their random-weight models with ``dicetalk_core.random_models`` from the layouts of
``dicetalk_core.models.layouts`` (nothing downloaded):

* ``medium``: runs on a 2-core CPU. SVD-xt's UNet layout (4 levels, 2 layers per block, 1 transformer
  layer, cross-attention width 1024, 32 audio + 32 emotion tokens, 25-frame windows) at a tenth of
  its width; 256x256 video (32x32 latents); whisper-tiny's real layout; the audio projection, emotion
  model and pose guider at their real sizes.
* ``tiny``: the tests' layout (width 32, 64x64 video); seconds per clip.
* ``official``: the real sizes at 512x512 (a GPU is needed for it to finish in useful time).

Note on extrapolating: the waste the exact routing removes (per-pixel temporal K/V at width 1024)
shrinks relative to the rest as channels grow, so the ``medium`` ratios overstate the gain at full
width; ``bench/flops.py`` prints the full-size FLOP model beside them.
"""

from __future__ import annotations

import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from process_memory import peak_rss_mb, reset_peak_rss, rss_mb

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dicetalk_core.models.layouts import LAYOUTS, ModelLayout  # noqa: E402

CONFIGS = sorted(LAYOUTS)
"""The ``--config`` choices: the names of the model layouts."""


# ------------------------------------------------------------------------------------------- measuring


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall and process-CPU seconds of one run (on a shared CPU the CPU seconds are the steadier figure),
    and the peak memory it added above what was resident before it (CPU RSS; CUDA max allocated)."""

    wall: float
    cpu: float
    extra_mb: float = 0.0


def use_mmap_for_large_blocks() -> None:
    """Make glibc return freed large blocks to the system, so RSS follows live memory (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def time_once(fn: Callable[[], object], device="cpu") -> Timing:
    device = torch.device(device)
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = rss_mb()
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu)
    if device.type == "cuda":
        timing.extra_mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        timing.extra_mb = peak_rss_mb() - before
    return timing


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int, device="cpu") -> dict[str, Timing]:
    """Best (minimum) wall and CPU time of each function over ``repeat`` rounds, the functions taking turns.

    Taking turns and keeping the minimum cancels most of the noise of a machine shared with other jobs.
    """
    best: dict[str, Timing] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time_once(fn, device)
            old = best.get(name)
            if old is not None:
                t = Timing(min(old.wall, t.wall), min(old.cpu, t.cpu), max(old.extra_mb, t.extra_mb))
            best[name] = t
    return best


def clock(device) -> str:
    """Which figure ratios use: CUDA time on a GPU, process CPU time on the CPU."""
    return "wall" if torch.device(device).type == "cuda" else "cpu"


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def stage_memory(results: dict, name: str, device="cpu"):
    """Record ``name``: wall and CPU seconds, peak RSS (MB) and, on CUDA, max allocated (MB) over the block."""
    device = torch.device(device)
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    yield
    sync(device)
    entry = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_mb": rss_mb(),
    }
    if device.type == "cuda":
        entry["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    results[name] = entry


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of frames in [0, 1]."""
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def device_arg(value: str) -> torch.device:
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(value)


def print_header(title: str, layout: ModelLayout, device: torch.device, threads: int) -> None:
    unet = layout.unet
    print(f"== {title}")
    print(
        f"config {layout.name}: {layout.resolution}x{layout.resolution}, UNet channels "
        f"{tuple(unet['block_out_channels'])}, heads {tuple(unet['num_attention_heads'])}, cross dim "
        f"{unet['cross_attention_dim']}, {layout.tokens}+{layout.tokens} tokens, window {layout.window}; "
        f"device {device}, torch {torch.__version__}, {threads} thread(s)"
    )
