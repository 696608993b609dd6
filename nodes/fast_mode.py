"""DICE-Talk Fast Mode: the opt-in speed-ups of ``dicetalk_core.fast_mode`` as one node for the sampler.

Without it the sampler runs the exact path (the official numbers). Every option here changes the
video, and none was checked on the real weights yet: the speed-ups and deviations in the tooltips
were measured on random-weight models (``bench/fast_mode.py``, README "Performance"). The decode and
interpolation options reach the decode through the sampler and RIFE through DICE-Talk Frame
Interpolation's ``fast_mode`` input.
"""

from __future__ import annotations

from ..dicetalk_core.fast_mode import AUTOCAST_DTYPES, DEFAULT_CACHE_DEPTH, FastMode

CATEGORY = "DICE-Talk"
OFF = "off"
UNVALIDATED = " Not yet validated on the real DICE-Talk weights: compare with the exact video before relying on it."
MEASURED = " Measured (CPU, random weights, SVD-xt's UNet layout at a tenth of its width, 25 steps): "
HALF = [OFF, *AUTOCAST_DTYPES]
TRADE_OFFS = {
    "guidance_reuse": "k=3 x1.68 per clip, 64 dB PSNR against exact; k=2 x1.3, 66 dB.",
    "guidance_until": "0.6 gives x1.2, 50 dB PSNR against exact (smallest test model).",
    "autocast": "bf16 x1.63 per clip, 74 dB PSNR against exact, on a CPU with bf16 instructions; x0.16 on one without.",
    "cache_interval": "3 gives x2.19 per clip, 62 dB PSNR against exact; with guidance_reuse 3 and "
    "interval 6 the whole clip ran x5.3 faster than the official code.",
    "cache_depth": "a cached step costs 1/8.6 of a full one at depth 0, 1/3 at depth 1, 1/1.8 at "
    "depth 2; interval 3 at depth 2: x1.48 per clip, 64 dB (depth 0: x2.19, 62 dB).",
    "cache_threshold": "0.1 gives x3.18 per clip (4 of 50 UNet calls full), 58 dB PSNR against exact; "
    "with guidance_reuse 3 the whole clip ran x6.2 faster than the official code.",
    "decode_autocast": "bf16 decodes x2.2 faster, 54 dB PSNR against exact, on a CPU with bf16 "
    "instructions; not measured on a GPU.",
    "decode_chunk_size": "25 frames: 30 dB PSNR against exact; decode x1.27 on a CPU in a run whose "
    "noise was 40 % (no reliable gain); not measured on a GPU.",
    "interpolation_autocast": "bf16 interpolates x3.2 faster, 88 dB PSNR against exact, on a CPU with "
    "bf16 instructions; fp16 not measured on a GPU.",
    "interpolation_batch": "8 pairs: no gain beyond the noise on a CPU (x1.14), frames identical or within "
    "1e-7; meant for GPUs, not measured on one.",
}
"""Each option's measured speed-up and deviation (``bench/fast_mode.py``, ``bench/official.py``)."""


def _half_choice(value: str) -> str | None:
    return None if value == OFF else value


class DICEFastMode:
    """Speed-ups for DICE-Talk Sampler that change the video a little (all off = the exact, official result)."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_FAST_MODE",)
    RETURN_NAMES = ("fast_mode",)
    OUTPUT_TOOLTIPS = ("Connect to DICE-Talk Sampler's (and Frame Interpolation's) fast_mode input.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guidance_reuse": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 4,
                        "tooltip": "Run the three-way guidance batch (3 UNet passes) only every k-th step; in between "
                        "one pass plus the guidance of the last full step. 1 = off."
                        + MEASURED
                        + TRADE_OFFS["guidance_reuse"]
                        + UNVALIDATED,
                    },
                ),
                "guidance_until": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Guidance only on this first fraction of the steps; later steps run one UNet pass "
                        "without guidance. 1.0 = off." + MEASURED + TRADE_OFFS["guidance_until"] + UNVALIDATED,
                    },
                ),
                "autocast": (
                    HALF,
                    {
                        "default": OFF,
                        "tooltip": "Run the UNet in bf16/fp16 autocast (for fp32 models). Pays on GPUs and on CPUs "
                        "with bf16 instructions (avx512_bf16/AMX); several times slower elsewhere; fp16 is slow on "
                        "CPUs." + MEASURED + TRADE_OFFS["autocast"] + UNVALIDATED,
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile the UNet: the first run compiles for minutes, later runs are "
                        "faster (x1.4-1.9 per UNet call measured on CPU); needs a C++ compiler. Frames match "
                        "exact to 1e-6. Not with feature caching.",
                    },
                ),
            },
            "optional": {
                "cache_interval": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 10,
                        "tooltip": "Feature caching (DeepCache): run the whole UNet every k-th step; in between only "
                        "the layers above cache_depth, reusing the deeper layers' output of the last full step. "
                        "1 = off." + MEASURED + TRADE_OFFS["cache_interval"] + UNVALIDATED,
                    },
                ),
                "cache_depth": (
                    "INT",
                    {
                        "default": DEFAULT_CACHE_DEPTH,
                        "min": 0,
                        "max": 11,
                        "tooltip": "Where feature caching cuts the UNet: the skip connection cached steps still "
                        "compute down to (0 = only the first convolution and the last up layer: cheapest; SVD-xt has "
                        "0-11). Deeper = closer to exact, less saved." + MEASURED + TRADE_OFFS["cache_depth"],
                    },
                ),
                "cache_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 0.5,
                        "step": 0.01,
                        "tooltip": "Adaptive feature caching (First-Block-Cache): a step reuses the deep features "
                        "while the first UNet layer's output changed by less than this (relative) since the last "
                        "full step. 0 = off; not together with cache_interval."
                        + MEASURED
                        + TRADE_OFFS["cache_threshold"]
                        + UNVALIDATED,
                    },
                ),
                "decode_autocast": (
                    HALF,
                    {
                        "default": OFF,
                        "tooltip": "VAE decode in bf16/fp16 autocast (for fp32 models; fp16 models decode in fp16 "
                        "already). Pays where half-precision convolutions are fast (GPUs, CPUs with bf16 "
                        "instructions); fp16 on a CPU is very slow." + MEASURED + TRADE_OFFS["decode_autocast"],
                    },
                ),
                "decode_chunk_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Frames per temporal-decoder clip (0 = the official 10). Other sizes mix frames "
                        "over other boundaries (the video changes) and need memory in proportion."
                        + MEASURED
                        + TRADE_OFFS["decode_chunk_size"],
                    },
                ),
                "interpolation_autocast": (
                    HALF,
                    {
                        "default": OFF,
                        "tooltip": "RIFE frame interpolation in bf16/fp16 autocast (connect this node to DICE-Talk "
                        "Frame Interpolation too). fp16 for GPUs; bf16 for CPUs with bf16 instructions."
                        + MEASURED
                        + TRADE_OFFS["interpolation_autocast"],
                    },
                ),
                "interpolation_batch": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Frame pairs per RIFE call (1 = one pair per call, as official; more pairs "
                        "need memory in proportion). Frames differ by float rounding only."
                        + MEASURED
                        + TRADE_OFFS["interpolation_batch"],
                    },
                ),
            },
        }

    def build(
        self,
        guidance_reuse: int,
        guidance_until: float,
        autocast: str,
        compile: bool,
        cache_interval: int = 1,
        cache_depth: int = DEFAULT_CACHE_DEPTH,
        cache_threshold: float = 0.0,
        decode_autocast: str = OFF,
        decode_chunk_size: int = 0,
        interpolation_autocast: str = OFF,
        interpolation_batch: int = 1,
    ):
        fast = FastMode(
            autocast=_half_choice(autocast),
            guidance_interval=(0.0, guidance_until),
            guidance_reuse=guidance_reuse,
            compile=compile,
            cache_interval=cache_interval,
            cache_depth=cache_depth,
            cache_threshold=cache_threshold,
            decode_autocast=_half_choice(decode_autocast),
            decode_chunk_size=decode_chunk_size or None,
            interpolation_autocast=_half_choice(interpolation_autocast),
            interpolation_batch=interpolation_batch,
        )
        fast.validate()
        return (fast,)
