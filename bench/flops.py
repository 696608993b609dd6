"""The cost model of the spec (section 8) beside measured times.

Prints (1) the spec's FLOP model of the real DICE-Talk at 512x512, with what the exact routing removes
from it (computed here from the UNet layout: the per-pixel temporal adapter K/V) and what the fast
mode's single-branch steps save; (2) the per-run totals for a few clip lengths; (3) for a bench
config, the FLOPs of one UNet call counted with ``torch.utils.flop_counter`` (attention added from its
shapes: the CPU SDPA kernel is not counted) next to the measured time of that call.

    python bench/flops.py                       # model + medium config, measured (1 thread)
    python bench/flops.py --config tiny --repeat 3
    python bench/flops.py --no-measure          # the model only
"""

from __future__ import annotations

import argparse
import math

import torch
from common import CONFIGS, BenchConfig, build_unet, clock, print_header, time_interleaved
from torch.utils.flop_counter import FlopCounterMode
from unet_step import window_inputs

# Spec section 8.2/8.3: official modules at 512x512 (latent 64x64), per UNet call of 3 x 25 frames.
SPEC_UNET_TFLOP = 104.9
SPEC_STOCK_UNET_TFLOP = 95.1
SPEC_BREAKDOWN = {
    "spatial self-attn": 13.0,
    "spatial FF": 11.5,
    "temporal ff_in": 11.5,
    "temporal FF": 11.5,
    "temporal self-attn": 3.9,
    "spatial attn2": 2.4,
    "temporal attn2": 11.4,
}
SPEC_DECODE_TFLOP_PER_FRAME = 3.04
SPEC_RIFE_TFLOP_PER_FRAME = 0.067
SPEC_VAE_ENCODE_TFLOP = 1.12


def cross_attention_layers(cfg: BenchConfig) -> list[tuple[int, int]]:
    """(channels, latent positions) of every spatio-temporal transformer of the UNet."""
    layers = []
    levels = len(cfg.channels)
    for i, channels in enumerate(cfg.channels[:-1]):  # down blocks with cross-attention
        positions = (cfg.latent // 2**i) ** 2
        layers += [(channels, positions)] * cfg.layers_per_block
    last = (cfg.channels[-1], (cfg.latent // 2 ** (levels - 1)) ** 2)
    layers.append(last)  # mid block
    for i in range(levels - 2, -1, -1):  # up blocks with cross-attention
        layers += [(cfg.channels[i], (cfg.latent // 2**i) ** 2)] * (cfg.layers_per_block + 1)
    return layers


def temporal_kv_flops(cfg: BenchConfig, branches: int = 3, per_pixel: bool = True) -> float:
    """FLOPs of the temporal cross-attention K/V projections (CLIP + 2 adapters) of one UNet call."""
    total = 0.0
    for channels, positions in cross_attention_layers(cfg):
        rows_clip = branches * (positions if per_pixel else 1)
        rows_tokens = branches * cfg.tokens * (positions if per_pixel else 1)
        total += 2 * 2 * cfg.cross_dim * channels * (rows_clip + 2 * rows_tokens)
    return total


def attention_flops(cfg: BenchConfig, branches: int) -> float:
    """FLOPs of the attention products (QK^T and AV) of one UNet call, from the shapes."""
    frames = branches * cfg.window
    total = 0.0
    for channels, positions in cross_attention_layers(cfg):
        total += 4 * frames * positions * positions * channels  # spatial self-attention
        total += 4 * frames * positions * channels * (1 + 2 * cfg.tokens)  # spatial cross (CLIP + adapters)
        total += 4 * branches * positions * cfg.window * cfg.window * channels  # temporal self-attention
        total += 4 * frames * positions * channels * (1 + 2 * cfg.tokens)  # temporal cross
    return total


def counted_flops(cfg: BenchConfig, branches: int, routing: str) -> float:
    unet = build_unet(cfg)
    unet.set_routing(routing)
    args, kwargs = window_inputs(cfg, "cpu", torch.float32, branches=branches)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(*args, **kwargs)
    return counter.get_total_flops() + attention_flops(cfg, branches)


def print_model() -> None:
    svd = CONFIGS["svd"]
    waste = temporal_kv_flops(svd) - temporal_kv_flops(svd, per_pixel=False)
    exact = SPEC_UNET_TFLOP - waste / 1e12
    print("-- the spec's cost model, real DICE-Talk at 512x512 (TFLOP)")
    print(f"UNet call, 3-way CFG x 25 frames (official): {SPEC_UNET_TFLOP}  (stock SVD: {SPEC_STOCK_UNET_TFLOP})")
    for part, tflop in SPEC_BREAKDOWN.items():
        print(f"  {part:>20}: {tflop:5.1f}")
    print(f"temporal K/V on per-pixel copies (from the layout): {waste / 1e12:.2f} (spec: 9.08 adapters + 0.14 CLIP)")
    print(f"UNet call, exact routing: {exact:.1f}  (-{100 * waste / 1e12 / SPEC_UNET_TFLOP:.1f} %)")
    print(f"UNet call, single branch (fast-mode unguided/reuse steps): {exact / 3:.1f}")
    print(f"VAE decode {SPEC_DECODE_TFLOP_PER_FRAME}/frame, encode {SPEC_VAE_ENCODE_TFLOP} (once), RIFE 0.067/frame")
    print("\n-- per run: UNet calls = 25 x ceil((N + 25) / 25), N = floor(25 T) // 2")
    print(f"{'audio':>6} {'N':>5} {'calls':>6} {'official PF':>12} {'exact PF':>9} {'decode PF':>10} {'RIFE PF':>8}")
    for seconds in (4, 10, 16, 60):
        n = int(25 * seconds) // 2
        calls = 25 * math.ceil((n + 25) / 25)
        decode = SPEC_DECODE_TFLOP_PER_FRAME * (math.ceil(n / 10) * 10)  # padding chunks past N are skipped
        print(
            f"{seconds:>5}s {n:5d} {calls:6d} {calls * SPEC_UNET_TFLOP / 1e3:12.1f} {calls * exact / 1e3:9.1f} "
            f"{decode / 1e3:10.2f} {SPEC_RIFE_TFLOP_PER_FRAME * (n - 1) / 1e3:8.3f}"
        )
    print("(official decode: N + 25 frames; here only the chunks holding real frames are decoded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="medium", choices=sorted(c for c in CONFIGS if c != "svd"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_model()
    if args.no_measure:
        return
    cfg = CONFIGS[args.config]
    print()
    print_header("counted FLOPs vs measured time, one UNet call", cfg, torch.device("cpu"), args.threads)
    unet = build_unet(cfg)
    rows = {}
    fns = {}
    for routing, branches in (("reference", 3), ("exact", 3), ("exact", 1)):
        name = f"{routing}, {branches} branch{'es' if branches > 1 else ''}"
        rows[name] = counted_flops(cfg, branches, routing)
        call_args, kwargs = window_inputs(cfg, "cpu", torch.float32, branches=branches)

        def call(routing=routing, call_args=call_args, kwargs=kwargs):
            unet.set_routing(routing)
            with torch.no_grad():
                unet(*call_args, **kwargs)

        fns[name] = call
    times = time_interleaved(fns, args.repeat)
    key = clock("cpu")
    waste = temporal_kv_flops(cfg) - temporal_kv_flops(cfg, per_pixel=False)
    print(f"temporal K/V on per-pixel copies in this config (model): {waste / 1e9:.3g} GFLOP per 3-way call")
    print(f"{'call':>20} {'GFLOP':>9} {'model ratio':>12} {f'{key} s':>8} {'measured ratio':>15} {'GFLOP/s':>8}")
    base = "reference, 3 branches"
    for name, flops in rows.items():
        seconds = getattr(times[name], key)
        print(
            f"{name:>20} {flops / 1e9:9.1f} {rows[base] / flops:11.2f}x {seconds:8.2f} "
            f"{getattr(times[base], key) / seconds:14.2f}x {flops / 1e9 / seconds:8.1f}"
        )
    print("model ratio = FLOPs saved; measured ratio also includes the memory traffic removed (repeats, copies).")


if __name__ == "__main__":
    main()
