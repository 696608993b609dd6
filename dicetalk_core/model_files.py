"""Where every weight file of a DICE-Talk run lives, and whether it is there.

Layout of the DICE-Talk folder (``ComfyUI/models/dice_talk/`` in ComfyUI, ``--models`` for the CLI)::

    unet.pth  audio_linear.pth  emo_model.pth  pose_guider.pth     (DICE-Talk release, checkpoints/DICE-Talk/)
    RIFE/flownet.pkl                                               (release, checkpoints/RIFE/)
    whisper-tiny/{config.json, preprocessor_config.json, model.safetensors}   (openai/whisper-tiny)
    emotions/{angry,contempt,disgusted,fear,happy,neutral,sad,surprised}.npy   (release, examples/emo/)

SVD-xt comes either as the diffusers folder ``stable-video-diffusion-img2vid-xt/`` (inside the
DICE-Talk folder, or anywhere given explicitly) or as the single file ``svd_xt.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .emotion import OFFICIAL_PRESETS
from .loading import DICE_TALK_FILES

RIFE_FILE = Path("RIFE") / "flownet.pkl"
WHISPER_FOLDER = "whisper-tiny"
WHISPER_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
EMOTIONS_FOLDER = "emotions"
SVD_FOLDER = "stable-video-diffusion-img2vid-xt"
SVD_SINGLE_FILE = "svd_xt.safetensors"
SVD_SUBFOLDERS = ("vae", "image_encoder", "scheduler", "unet")


@dataclass(frozen=True)
class WeightFile:
    """One needed file: what it is, where it must be, whether it is there."""

    what: str
    path: Path
    found: bool
    required: bool = True


def _entry(what: str, path: Path, required: bool = True, alternatives: tuple[Path, ...] = ()) -> WeightFile:
    found = path.exists() or any(p.exists() for p in alternatives)
    return WeightFile(what, path, found, required)


def default_svd_path(models_dir: Path) -> Path:
    """The SVD-xt folder inside ``models_dir`` when present, else ``models_dir/svd_xt.safetensors``."""
    folder = models_dir / SVD_FOLDER
    return folder if folder.is_dir() else models_dir / SVD_SINGLE_FILE


def weight_files(models_dir: str | Path, svd: str | Path | None = None, interpolate: bool = True) -> list[WeightFile]:
    """Every file a run needs, found or missing, with the folder it belongs in."""
    models_dir = Path(models_dir)
    files = [
        _entry(
            f"DICE-Talk {name}",
            models_dir / name,
            alternatives=((models_dir / name).with_suffix(".safetensors"),),
        )
        for name in DICE_TALK_FILES
    ]
    files += [
        _entry(
            "Whisper-tiny " + name,
            models_dir / WHISPER_FOLDER / name,
            alternatives=((models_dir / WHISPER_FOLDER / "pytorch_model.bin"),) if name.startswith("model") else (),
        )
        for name in WHISPER_FILES
    ]
    files.append(_entry("RIFE frame interpolation", models_dir / RIFE_FILE, required=interpolate))
    files += [
        _entry(f"emotion preset '{name}'", models_dir / EMOTIONS_FOLDER / f"{name}.npy", required=False)
        for name in OFFICIAL_PRESETS
    ]
    svd_path = Path(svd) if svd is not None else default_svd_path(models_dir)
    if svd_path.suffix == ".safetensors":
        files.append(_entry("SVD-xt single file", svd_path))
    else:
        files += [_entry(f"SVD-xt {sub}", svd_path / sub) for sub in SVD_SUBFOLDERS]
    return files


def format_report(files: list[WeightFile]) -> str:
    """A table for ``--check``: status, what, path."""
    lines = []
    for f in files:
        status = "ok     " if f.found else ("MISSING" if f.required else "absent ")
        lines.append(f"{status}  {f.what:<34} {f.path}")
    missing = [f for f in files if f.required and not f.found]
    lines.append("all required files found" if not missing else f"{len(missing)} required file(s) missing")
    return "\n".join(lines)
