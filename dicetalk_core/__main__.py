"""Command line: portrait + speech + emotion -> talking-head mp4 with the speech muxed in.

python -m dicetalk_core --image face.png --audio speech.wav --emotion happy --models DIR --out out.mp4
python -m dicetalk_core --models DIR --check
python -m dicetalk_core --models DIR --check --deep
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import defaults
from .errors import DiceTalkError
from .model_files import EMOTIONS_FOLDER, OFFICIAL_PRESETS, format_report, weight_files

if TYPE_CHECKING:
    from .emotion.value import Emotion

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dicetalk_core", description=__doc__.splitlines()[1])
    p.add_argument("--models", required=True, type=Path, help="DICE-Talk folder (see README: weights table)")
    p.add_argument("--check", action="store_true", help="list every weight file needed, found or missing, and exit")
    p.add_argument(
        "--deep",
        action="store_true",
        help="with --check: load every file and compare it with the official architecture, run a 2-frame "
        "generation, and tell the device, precision, expected speed and whether 512x512 fits in memory",
    )
    p.add_argument("--image", type=Path, help="portrait image")
    p.add_argument("--audio", type=Path, help="speech recording (wav, mp3, flac, m4a, ...)")
    p.add_argument(
        "--emotion",
        default="neutral",
        help=f"preset name ({', '.join(OFFICIAL_PRESETS)}), a preset file (.npy/.safetensors), or a text "
        "such as 'slightly sad, then very happy at 3s' (see README: emotion control)",
    )
    p.add_argument("--out", type=Path, default=Path("out.mp4"), help="output mp4")
    p.add_argument(
        "--svd",
        type=Path,
        help="SVD-xt diffusers folder or svd_xt.safetensors "
        "(default: MODELS/stable-video-diffusion-img2vid-xt or MODELS/svd_xt.safetensors)",
    )
    official = "(official %(default)s)"
    p.add_argument("--seed", type=int, default=defaults.SEED, help=f"random seed {official}")
    p.add_argument("--steps", type=int, default=defaults.STEPS, help=f"denoising steps {official}")
    p.add_argument("--ref-scale", type=float, default=defaults.REF_GUIDANCE, help=f"reference guidance {official}")
    p.add_argument(
        "--audio-scale", type=float, default=defaults.AUDIO_GUIDANCE, help=f"audio+emotion guidance {official}"
    )
    p.add_argument(
        "--resolution", type=int, default=defaults.RESOLUTION, help=f"short side of the generated video {official}"
    )
    p.add_argument(
        "--face-box",
        type=lambda s: tuple(float(v) for v in s.split(",")),
        help="x,y,w,h of the face in the portrait's pixels (skips face detection)",
    )
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-interpolate", action="store_true", help="skip RIFE: write 12.5 fps instead of 25 fps")
    return p.parse_args(argv)


def resolve_emotion(value: str, models: Path) -> Emotion:
    """A preset/saved-emotion file, a preset name, or a text such as "slightly sad, then very happy"."""
    from .emotion.compose import emotion_from_spec
    from .emotion.presets import PresetLibrary, load_emotion

    candidate = Path(value)
    if candidate.suffix in (".npy", ".safetensors") and candidate.is_file():
        return load_emotion(candidate)
    return emotion_from_spec(value, PresetLibrary([models / EMOTIONS_FOLDER]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    interpolate = not args.no_interpolate
    if args.deep and not args.check:
        print("--deep goes with --check: python -m dicetalk_core --models DIR --check --deep", file=sys.stderr)
        return 2
    if args.check:
        files = weight_files(args.models, args.svd, interpolate=interpolate)
        print(format_report(files))
        if not all(f.found for f in files if f.required):
            return 1
        if not args.deep:
            return 0
        from .deep_check import run_deep_check  # torch and the models' code only for --deep
        from .precision import Precision

        return run_deep_check(args.models, args.svd, precision=Precision.resolve(args.precision, args.device))
    if args.image is None or args.audio is None:
        print("--image and --audio are required (or use --check)", file=sys.stderr)
        return 2
    # the models' code only when generating: --check and --help stay light
    from tqdm import tqdm

    from .pipeline import GenerationSettings
    from .precision import Precision
    from .sampler import SamplerSettings
    from .session import DiceTalkSession
    from .video_io import write_video

    try:
        emotion = resolve_emotion(args.emotion, args.models)
        session = DiceTalkSession.from_folder(
            args.models,
            args.svd,
            Precision.resolve(args.precision, args.device),
            interpolate=interpolate,
            low_memory=True,  # one clip per process: only the running stage's models need to be in memory
        )
        settings = GenerationSettings(
            sampler=SamplerSettings(
                steps=args.steps, ref_guidance=(args.ref_scale,) * 2, audio_guidance=(args.audio_scale,) * 2
            )
        )
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.setdefault(stage, tqdm(total=total, desc=stage, unit="window" if stage == "denoise" else "it"))
            bar.update(done - bar.n)

        result = session.run(
            args.image,
            args.audio,
            emotion,
            settings,
            seed=args.seed,
            face_box=args.face_box,
            min_resolution=args.resolution,
            progress=progress,
        )
        for bar in bars.values():
            bar.close()
        frames = result.frames.permute(0, 2, 3, 1)
        write_video(args.out, frames, result.fps, result.audio, result.sample_rate)
    except DiceTalkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {frames.shape[0]} frames at {result.fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
