"""One denoising step of one window: the UNet call on the three-way CFG batch (3 x 25 frames).

Prints the best wall and CPU time, and the peak memory the call adds (CPU RSS; CUDA max allocated),
of the ``reference`` routing (the official code's math step for step: per-pixel temporal K/V, masks
resampled and repeated in every attention call) and of the ``exact`` routing (the default), their
ratio, their max abs difference, and the single-branch call that the fast mode's guidance options
use instead on some steps.

    python bench/unet_step.py                      # medium config, CPU, 1 thread
    python bench/unet_step.py --config tiny --repeat 5
    python bench/unet_step.py --device cuda --config official --dtype fp16
"""

from __future__ import annotations

import argparse

import torch
from common import (
    CONFIGS,
    clock,
    device_arg,
    max_abs,
    print_header,
    time_interleaved,
    use_mmap_for_large_blocks,
)

from dicetalk_core.models.layouts import LAYOUTS, ModelLayout
from dicetalk_core.precision import DTYPES
from dicetalk_core.random_models import build_unet


def window_inputs(layout: ModelLayout, device, dtype, branches: int = 3, seed: int = 1) -> tuple[tuple, dict]:
    """Random UNet inputs of one window, shaped as the sampler makes them."""
    g = torch.Generator().manual_seed(seed)
    h, size, window = layout.latent_size, layout.resolution, layout.window
    cross, tokens = layout.unet["cross_attention_dim"], layout.tokens
    frames = branches * window

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    mask = mask.to(device=device, dtype=dtype)
    args = (rand(branches, window, 8, h, h), torch.tensor(1.6377700567245483, device=device))
    kwargs = dict(
        image_embeds=rand(frames, 1, cross),
        adapter_tokens=[rand(frames, tokens, cross), rand(frames, tokens, cross)],
        added_time_ids=torch.tensor([[12.5, 8.0, 16.0]] * branches, device=device, dtype=dtype),
        pose_features=rand(1, layout.unet["block_out_channels"][0], h, h),
        masks=[mask, mask],
    )
    return args, kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="medium", choices=CONFIGS)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady on a shared machine)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-single", action="store_true", help="skip the single-branch (fast mode) timing")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    use_mmap_for_large_blocks()
    layout = LAYOUTS[args.config]
    device, dtype = device_arg(args.device), DTYPES[args.dtype]
    print_header("one denoising step of one window (UNet, 3-way CFG batch)", layout, device, args.threads)
    unet = build_unet(layout).to(device=device, dtype=dtype)
    call_args, kwargs = window_inputs(layout, device, dtype)
    one_args, one_kwargs = window_inputs(layout, device, dtype, branches=1)
    outputs = {}

    def run(name: str, routing: str, call_args=call_args, kwargs=kwargs):
        def call():
            unet.set_routing(routing)
            outputs[name] = unet(*call_args, **kwargs).sample

        return call

    fns = {"reference": run("reference", "reference"), "exact": run("exact", "exact")}
    if not args.no_single:
        fns["exact, 1 branch"] = run("exact, 1 branch", "exact", one_args, one_kwargs)
    with torch.no_grad():
        times = time_interleaved(fns, args.repeat, device)
    key = clock(device)
    for name, t in times.items():
        print(
            f"{name:>16}: {t.wall:.3f} s wall, {t.cpu:.3f} s CPU per UNet call (best of {args.repeat}), "
            f"peak +{t.extra_mb:.0f} MB"
        )
    ratio = getattr(times["reference"], key) / getattr(times["exact"], key)
    print(f"exact speed-up vs reference ({key} time): x{ratio:.2f}")
    print(f"max abs difference exact vs reference: {max_abs(outputs['exact'], outputs['reference']):.3g}")
    if not args.no_single:
        single = getattr(times["exact"], key) / getattr(times["exact, 1 branch"], key)
        print(f"single branch (the fast mode's unguided/reuse steps) vs 3-way batch: x{single:.2f}")


if __name__ == "__main__":
    main()
