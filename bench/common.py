"""Shared pieces of the bench scripts: the random-weight model configs, timers, memory probes, FLOPs.

Configs (all random weights, nothing downloaded):

* ``medium``: runs on a 2-core CPU. SVD-xt's UNet layout (4 levels, 2 layers per block, 1 transformer
  layer, cross-attention width 1024, 32 audio + 32 emotion tokens, 25-frame windows) at a tenth of
  its width: channels (32, 64, 128, 128), heads (1, 1, 2, 2) (head width 32, 64, 64, 64); 256x256
  video (32x32 latents). VAE (32, 64, 128, 128); CLIP ViT 4 x 256; whisper-tiny's real layout (random); the
  audio projection and emotion model at their real sizes; the pose guider's real layout.
* ``tiny``: the golden test cases' sizes (width 32, 64x64 video); seconds per clip.
* ``svd``: the real SVD-xt sizes at 512x512 (a GPU is needed for it to finish in useful time).

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

from diffusers import (  # noqa: E402
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

from dicetalk_core.models import AudioProjection, EmotionModel, PoseGuider  # noqa: E402
from dicetalk_core.models.bundle import DiceTalkModels  # noqa: E402
from dicetalk_core.models.layouts import SVD_XT_SCHEDULER_CONFIG  # noqa: E402
from dicetalk_core.unet_adapters import DiceUNet, install_dice_adapters  # noqa: E402

SCHEDULER_CONFIG = SVD_XT_SCHEDULER_CONFIG


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one bench configuration (see the module docstring)."""

    name: str
    resolution: int
    channels: tuple[int, ...]
    heads: tuple[int, ...]
    layers_per_block: int
    cross_dim: int
    tokens: int
    window: int
    vae_channels: tuple[int, ...]
    clip_hidden: int
    clip_layers: int
    whisper_dim: int
    whisper_layers: int
    audio_hidden: int
    emotion_hidden: int
    pose_channels: tuple[int, ...]

    @property
    def latent(self) -> int:
        return self.resolution // 8

    def unet_config(self) -> dict:
        levels = len(self.channels)
        return dict(
            sample_size=None,
            in_channels=8,
            out_channels=4,
            num_frames=self.window,
            layers_per_block=self.layers_per_block,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1),
            block_out_channels=self.channels,
            num_attention_heads=self.heads,
            cross_attention_dim=self.cross_dim,
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=768,
            transformer_layers_per_block=1,
        )


CONFIGS = {
    "tiny": BenchConfig(
        "tiny", 64, (32, 32, 32), (2, 2, 2), 1, 32, 4, 25, (32, 32, 32, 32), 32, 2, 16, 2, 48, 40, (8, 16, 16, 32)
    ),
    "medium": BenchConfig(
        "medium",
        256,
        (32, 64, 128, 128),
        (1, 1, 2, 2),
        2,
        1024,
        32,
        25,
        (32, 64, 128, 128),
        256,
        4,
        384,
        4,
        1024,
        1024,
        (16, 32, 96, 256),
    ),
    "svd": BenchConfig(
        "svd",
        512,
        (320, 640, 1280, 1280),
        (5, 10, 20, 20),
        2,
        1024,
        32,
        25,
        (128, 256, 512, 512),
        1280,
        32,
        384,
        4,
        1024,
        1024,
        (16, 32, 96, 256),
    ),
}


def build_unet(cfg: BenchConfig, device="cpu", dtype=torch.float32, seed: int = 0) -> DiceUNet:
    """A random-weight DICE UNet of ``cfg``, in eval mode."""
    torch.manual_seed(seed)
    unet = install_dice_adapters(UNetSpatioTemporalConditionModel(**cfg.unet_config()), (cfg.tokens, cfg.tokens))
    return unet.to(device=device, dtype=dtype).eval()


def build_models(cfg: BenchConfig, device="cpu", dtype=torch.float32, seed: int = 0) -> DiceTalkModels:
    """Every DICE-Talk module of ``cfg`` with random weights (whisper and RIFE: see build_whisper/IFNet)."""
    unet = build_unet(cfg, device, dtype, seed)
    torch.manual_seed(seed + 1)
    levels = len(cfg.vae_channels)
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        block_out_channels=cfg.vae_channels,
        layers_per_block=2 if cfg.name != "tiny" else 1,
        latent_channels=4,
        sample_size=cfg.resolution,
        scaling_factor=0.18215,
        force_upcast=True,
    )
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=cfg.clip_hidden,
            intermediate_size=4 * cfg.clip_hidden,
            num_attention_heads=max(1, cfg.clip_hidden // 64),
            num_hidden_layers=cfg.clip_layers,
            image_size=224,
            patch_size=14 if cfg.name == "svd" else 32,
            projection_dim=cfg.cross_dim,
        )
    )
    window_inputs = 10 * (cfg.whisper_layers + 1) * cfg.whisper_dim
    models = DiceTalkModels(
        unet=unet,
        vae=vae.to(device=device, dtype=dtype).eval(),
        image_encoder=clip.to(device=device, dtype=dtype).eval(),
        pose_guider=PoseGuider(cfg.channels[0], cfg.pose_channels).to(device=device, dtype=dtype).eval(),
        audio_projection=AudioProjection(window_inputs, cfg.audio_hidden, cfg.cross_dim, cfg.tokens).to(device).eval(),
        emotion_model=EmotionModel(
            in_dim=256,
            dim=cfg.cross_dim,
            intermediate_dim=cfg.emotion_hidden,
            num_tokens=cfg.tokens,
            num_codes=64 if cfg.name != "tiny" else 8,
            num_heads=8 if cfg.cross_dim % 8 == 0 else 4,
            classifier=(32, 16, 8, 22),
        )
        .to(device)
        .eval(),
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
    )
    _tame_random_weights(models)
    return models


def _tame_random_weights(models: DiceTalkModels) -> None:
    """Shrink the random UNet's output layer so 25 steps from sigma 700 stay finite (random weights blow up)."""
    with torch.no_grad():
        models.unet.conv_out.weight.mul_(0.05)


def build_whisper(cfg: BenchConfig, device="cpu"):
    """whisper-tiny's layout (or the tiny config's) with random weights, as a WhisperAudioEncoder."""
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from dicetalk_core.audio import WhisperAudioEncoder

    torch.manual_seed(3)
    config = WhisperConfig(
        d_model=cfg.whisper_dim,
        encoder_layers=cfg.whisper_layers,
        encoder_attention_heads=max(2, cfg.whisper_dim // 64),
        encoder_ffn_dim=4 * cfg.whisper_dim,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
    )
    encoder = WhisperEncoder(config).to(device).eval()
    return WhisperAudioEncoder(WhisperFeatureExtractor(), encoder)


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


def print_header(title: str, cfg: BenchConfig, device: torch.device, threads: int) -> None:
    print(f"== {title}")
    print(
        f"config {cfg.name}: {cfg.resolution}x{cfg.resolution}, UNet channels {cfg.channels}, heads {cfg.heads}, "
        f"cross dim {cfg.cross_dim}, {cfg.tokens}+{cfg.tokens} tokens, window {cfg.window}; "
        f"device {device}, torch {torch.__version__}, {threads} thread(s)"
    )
