"""DICE-Talk Fast Mode: the opt-in speed-ups of ``dicetalk_core.fast_mode`` as one node for the sampler.

Without it the sampler runs the exact path (the official numbers). Every option here changes the
video, and none was checked on the real weights yet: the speed-ups and deviations in the tooltips
were measured on random-weight models (``bench/fast_mode.py``, README "Performance").
"""

from __future__ import annotations

from ..dicetalk_core.fast_mode import AUTOCAST_DTYPES, FastMode

CATEGORY = "DICE-Talk"
OFF = "off"
UNVALIDATED = " Not yet validated on the real DICE-Talk weights: compare with the exact video before relying on it."


class DICEFastMode:
    """Speed-ups for DICE-Talk Sampler that change the video a little (all off = the exact, official result)."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_FAST_MODE",)
    RETURN_NAMES = ("fast_mode",)
    OUTPUT_TOOLTIPS = ("Connect to DICE-Talk Sampler's fast_mode input.",)
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
                        "one pass plus the guidance of the last full step. 1 = off. Measured: k=2 x1.4, k=3 x2.1 "
                        "faster, 62-64 dB PSNR against exact." + UNVALIDATED,
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
                        "without guidance. 1.0 = off. Measured: 0.6 gives x1.3, 49 dB PSNR against exact."
                        + UNVALIDATED,
                    },
                ),
                "autocast": (
                    [OFF, *AUTOCAST_DTYPES],
                    {
                        "default": OFF,
                        "tooltip": "Run the UNet in bf16/fp16 autocast (for fp32 models). About 2x on GPUs with fast "
                        "half-precision math; slower on CPUs without bf16 instructions. Measured deviation: 74 dB "
                        "PSNR against exact." + UNVALIDATED,
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile the UNet: the first run compiles for minutes, later runs are "
                        "faster (x1.4-1.9 per UNet call measured on CPU); needs a C++ compiler. Frames match "
                        "exact to 1e-6.",
                    },
                ),
            }
        }

    def build(self, guidance_reuse: int, guidance_until: float, autocast: str, compile: bool):
        fast = FastMode(
            autocast=None if autocast == OFF else autocast,
            guidance_interval=(0.0, guidance_until),
            guidance_reuse=guidance_reuse,
            compile=compile,
        )
        fast.validate()
        return (fast,)
