"""The FLOP model of the real DICE-Talk beside measured times.

Prints (1) the FLOP model of the real DICE-Talk at 512x512 (per-layer counts of the official
modules), with what the exact routing removes from it (computed here from the UNet layout: the
per-pixel temporal adapter K/V) and what the fast mode's single-branch steps save; (2) the per-run
totals for a few clip lengths; (3) for a bench config, the FLOPs of one UNet call counted with
``torch.utils.flop_counter`` (attention added from its shapes: the CPU SDPA kernel is not counted)
next to the measured time of that call.

    python bench/flops.py                       # model + medium config, measured (1 thread)
    python bench/flops.py --config tiny --repeat 3
    python bench/flops.py --no-measure          # the model only
"""

from __future__ import annotations

import argparse
import math

import torch
from common import CONFIGS, clock, print_header, time_interleaved
from torch.utils.flop_counter import FlopCounterMode
from unet_step import window_inputs

from dicetalk_core.models.layouts import LAYOUTS, OFFICIAL, ModelLayout
from dicetalk_core.random_models import build_unet

# Official modules at 512x512 (latent 64x64), counted layer by layer: TFLOP per UNet call of 3 x 25 frames.
UNET_CALL_TFLOP = 104.9
STOCK_UNET_CALL_TFLOP = 95.1
UNET_CALL_BREAKDOWN = {
    "spatial self-attn": 13.0,
    "spatial FF": 11.5,
    "temporal ff_in": 11.5,
    "temporal FF": 11.5,
    "temporal self-attn": 3.9,
    "spatial attn2": 2.4,
    "temporal attn2": 11.4,
}
DECODE_TFLOP_PER_FRAME = 3.04
RIFE_TFLOP_PER_FRAME = 0.067
VAE_ENCODE_TFLOP = 1.12


def cross_attention_layers(layout: ModelLayout) -> list[tuple[int, int]]:
    """(channels, latent positions) of every spatio-temporal transformer of the UNet."""
    widths, latent = layout.unet["block_out_channels"], layout.latent_size
    per_block = layout.unet["layers_per_block"]
    layers = []
    levels = len(widths)
    for i, channels in enumerate(widths[:-1]):  # down blocks with cross-attention
        layers += [(channels, (latent // 2**i) ** 2)] * per_block
    layers.append((widths[-1], (latent // 2 ** (levels - 1)) ** 2))  # mid block
    for i in range(levels - 2, -1, -1):  # up blocks with cross-attention
        layers += [(widths[i], (latent // 2**i) ** 2)] * (per_block + 1)
    return layers


def temporal_kv_flops(layout: ModelLayout, branches: int = 3, per_pixel: bool = True) -> float:
    """FLOPs of the temporal cross-attention K/V projections (CLIP + 2 adapters) of one UNet call."""
    total = 0.0
    for channels, positions in cross_attention_layers(layout):
        rows_clip = branches * (positions if per_pixel else 1)
        rows_tokens = branches * layout.tokens * (positions if per_pixel else 1)
        total += 2 * 2 * layout.unet["cross_attention_dim"] * channels * (rows_clip + 2 * rows_tokens)
    return total


def attention_flops(layout: ModelLayout, branches: int) -> float:
    """FLOPs of the attention products (QK^T and AV) of one UNet call, from the shapes."""
    window, tokens = layout.window, layout.tokens
    frames = branches * window
    total = 0.0
    for channels, positions in cross_attention_layers(layout):
        total += 4 * frames * positions * positions * channels  # spatial self-attention
        total += 4 * frames * positions * channels * (1 + 2 * tokens)  # spatial cross (CLIP + adapters)
        total += 4 * branches * positions * window * window * channels  # temporal self-attention
        total += 4 * frames * positions * channels * (1 + 2 * tokens)  # temporal cross
    return total


def counted_flops(layout: ModelLayout, branches: int, routing: str) -> float:
    unet = build_unet(layout)
    unet.set_routing(routing)
    args, kwargs = window_inputs(layout, "cpu", torch.float32, branches=branches)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(*args, **kwargs)
    return counter.get_total_flops() + attention_flops(layout, branches)


def print_model() -> None:
    waste = temporal_kv_flops(OFFICIAL) - temporal_kv_flops(OFFICIAL, per_pixel=False)
    exact = UNET_CALL_TFLOP - waste / 1e12
    print("-- the FLOP model, real DICE-Talk at 512x512 (TFLOP)")
    print(f"UNet call, 3-way CFG x 25 frames (official): {UNET_CALL_TFLOP}  (stock SVD: {STOCK_UNET_CALL_TFLOP})")
    for part, tflop in UNET_CALL_BREAKDOWN.items():
        print(f"  {part:>20}: {tflop:5.1f}")
    print(f"temporal K/V on per-pixel copies (from the layout): {waste / 1e12:.2f} (9.08 adapters + 0.14 CLIP)")
    print(f"UNet call, exact routing: {exact:.1f}  (-{100 * waste / 1e12 / UNET_CALL_TFLOP:.1f} %)")
    print(f"UNet call, single branch (fast-mode unguided/reuse steps): {exact / 3:.1f}")
    print(f"VAE decode {DECODE_TFLOP_PER_FRAME}/frame, encode {VAE_ENCODE_TFLOP} (once), ", end="")
    print(f"RIFE {RIFE_TFLOP_PER_FRAME}/frame")
    print("\n-- per run: UNet calls = 25 x ceil((N + 25) / 25), N = floor(25 T) // 2")
    print(f"{'audio':>6} {'N':>5} {'calls':>6} {'official PF':>12} {'exact PF':>9} {'decode PF':>10} {'RIFE PF':>8}")
    for seconds in (4, 10, 16, 60):
        n = int(25 * seconds) // 2
        calls = 25 * math.ceil((n + 25) / 25)
        decode = DECODE_TFLOP_PER_FRAME * (math.ceil(n / 10) * 10)  # padding chunks past N are skipped
        print(
            f"{seconds:>5}s {n:5d} {calls:6d} {calls * UNET_CALL_TFLOP / 1e3:12.1f} {calls * exact / 1e3:9.1f} "
            f"{decode / 1e3:10.2f} {RIFE_TFLOP_PER_FRAME * (n - 1) / 1e3:8.3f}"
        )
    print("(official decode: N + 25 frames; here only the chunks holding real frames are decoded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="medium", choices=[c for c in CONFIGS if c != OFFICIAL.name])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_model()
    if args.no_measure:
        return
    layout = LAYOUTS[args.config]
    print()
    print_header("counted FLOPs vs measured time, one UNet call", layout, torch.device("cpu"), args.threads)
    unet = build_unet(layout)
    rows = {}
    fns = {}
    for routing, branches in (("reference", 3), ("exact", 3), ("exact", 1)):
        name = f"{routing}, {branches} branch{'es' if branches > 1 else ''}"
        rows[name] = counted_flops(layout, branches, routing)
        call_args, kwargs = window_inputs(layout, "cpu", torch.float32, branches=branches)

        def call(routing=routing, call_args=call_args, kwargs=kwargs):
            unet.set_routing(routing)
            with torch.no_grad():
                unet(*call_args, **kwargs)

        fns[name] = call
    times = time_interleaved(fns, args.repeat)
    key = clock("cpu")
    waste = temporal_kv_flops(layout) - temporal_kv_flops(layout, per_pixel=False)
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
