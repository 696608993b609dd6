"""Every weight file of a DICE-Talk run: where it goes, where it comes from, its licence, whether it is there.

Standard library only: the command line's ``--check``, the ComfyUI nodes and the setup script all read
this one manifest. Layout of the DICE-Talk folder (``ComfyUI/models/dice_talk/`` in ComfyUI, ``--models``
for the command line)::

    unet.pth  audio_linear.pth  emo_model.pth  pose_guider.pth     (DICE-Talk release, checkpoints/DICE-Talk/)
    RIFE/flownet.pkl                                               (release, checkpoints/RIFE/)
    whisper-tiny/{config.json, preprocessor_config.json, model.safetensors}   (openai/whisper-tiny)
    emotions/{angry,contempt,disgusted,fear,happy,neutral,sad,surprised}.npy   (official repository, examples/emo/)

SVD-xt comes either as the diffusers folder ``stable-video-diffusion-img2vid-xt/`` (inside the DICE-Talk
folder, or anywhere given explicitly) or as the single file ``svd_xt.safetensors``. A ``.pth`` or ``.pkl``
file may also be given as a ``.safetensors`` file of the same stem (:func:`accepted_names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import CheckpointError

DICE_TALK_HF_REPO = "EEEELY/DICE-Talk"
"""The Hugging Face repository of the DICE-Talk weights (what the official README downloads)."""
DICE_TALK_CODE_REPO = "toto222/DICE-Talk"
"""The official code repository on GitHub (it holds the emotion presets)."""
DICE_TALK_CODE_COMMIT = "a8a92b164a3f552414d06a463a2b2e8eeb92db0b"
"""The commit of the official repository the presets are taken from."""
SVD_HF_REPO = "stabilityai/stable-video-diffusion-img2vid-xt"
WHISPER_HF_REPO = "openai/whisper-tiny"

CC_BY_NC_SA = "CC BY-NC-SA 4.0"
SVD_LICENCE = "Stability AI Community License (gated repository)"
APACHE = "Apache-2.0"

UNET_FILE = "unet.pth"
AUDIO_PROJECTION_FILE = "audio_linear.pth"
EMOTION_MODEL_FILE = "emo_model.pth"
POSE_GUIDER_FILE = "pose_guider.pth"
DICE_TALK_FILES = (UNET_FILE, AUDIO_PROJECTION_FILE, EMOTION_MODEL_FILE, POSE_GUIDER_FILE)
"""The four DICE-Talk weight files, read by the loaders' :func:`find_weight_file`."""
RIFE_FILE = "RIFE/flownet.pkl"
WHISPER_FOLDER = "whisper-tiny"
WHISPER_CONFIG_FILES = ("config.json", "preprocessor_config.json")
WHISPER_WEIGHTS = "model.safetensors"
WHISPER_WEIGHT_ALTERNATIVES = ("pytorch_model.bin",)
EMOTIONS_FOLDER = "emotions"
OFFICIAL_PRESETS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
"""The eight official emotion presets, ``emotions/<name>.npy``."""
PRESET_BYTES = 1403
"""Size of every official preset file (a NumPy header and a pickled ``{'mu': (1, 256) float32}``)."""
SVD_FOLDER = "stable-video-diffusion-img2vid-xt"
SVD_SINGLE_FILE = "svd_xt.safetensors"
SVD_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "vae": ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"),
    "image_encoder": ("model.fp16.safetensors", "model.safetensors"),
    "unet": ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"),
}
"""Weight files of each subfolder of the SVD-xt diffusers folder, in order of preference (the official
pipeline loads the fp16 variant)."""

LICENCE_NOTICE = (
    f"The DICE-Talk weights (huggingface.co/{DICE_TALK_HF_REPO}) and emotion presets "
    f"(github.com/{DICE_TALK_CODE_REPO}) are licensed {CC_BY_NC_SA} by their authors: non-commercial use only, "
    "with attribution, and derivatives under the same license (https://creativecommons.org/licenses/by-nc-sa/4.0/)."
)


@dataclass(frozen=True)
class Source:
    """Where a file is downloaded from: a file of a Hugging Face repository, or of a GitHub repository at a commit."""

    repo: str
    path: str
    revision: str = "main"
    host: str = "huggingface"

    @property
    def url(self) -> str:
        if self.host == "github":
            return f"https://raw.githubusercontent.com/{self.repo}/{self.revision}/{self.path}"
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision}/{self.path}"


@dataclass(frozen=True)
class WeightFile:
    """One file of a run.

    Attributes:
        path: where it goes, relative to the DICE-Talk folder (POSIX separators).
        what: what it is, for people.
        source: where it is downloaded from.
        licence: the licence of its contents.
        size: exact bytes where the source is pinned (else None); ``approx_size`` for people, where known.
        required: whether a run needs it (the presets are optional; RIFE only when interpolating).
        alternatives: other names accepted in its place, relative to the DICE-Talk folder.
        official_path: its path in the official release's ``checkpoints/`` folder, where it has one.
    """

    path: str
    what: str
    source: Source
    licence: str
    size: int | None = None
    approx_size: str = ""
    required: bool = True
    alternatives: tuple[str, ...] = ()
    official_path: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every accepted name, the preferred one first."""
        return (self.path, *self.alternatives)

    def find(self, folder: str | Path) -> Path | None:
        """The first of :attr:`names` present under ``folder``, else None."""
        return next((Path(folder) / name for name in self.names if (Path(folder) / name).exists()), None)

    def forms(self) -> tuple[tuple[str, str], ...]:
        """Where the file may be in a folder laid out like the DICE-Talk folder or like the official release's
        ``checkpoints/``, each with the name it takes in the DICE-Talk folder: ``(path there, name here)`` pairs,
        preferred first (:attr:`names`, then :attr:`official_path` and its ``.safetensors`` sibling)."""
        official = zip(accepted_names(self.official_path), accepted_names(self.path), strict=True)
        return (*((name, name) for name in self.names), *(official if self.official_path else ()))


def accepted_names(name: str) -> tuple[str, ...]:
    """``name`` and, for a pickled ``.pth``/``.pkl`` file, the ``.safetensors`` file of the same stem.

    The release ships pickled tensor dicts; a user may convert them to safetensors (never unpickled at all).
    """
    path = PurePosixPath(name)
    if path.suffix in (".pth", ".pkl"):
        return name, str(path.with_suffix(".safetensors"))
    return (name,)


def find_weight_file(folder: str | Path, name: str) -> Path:
    """``folder/name`` or an accepted alternative (:func:`accepted_names`); a clear error when none is there."""
    for candidate in accepted_names(name):
        if (Path(folder) / candidate).is_file():
            return Path(folder) / candidate
    raise CheckpointError(
        f"Missing DICE-Talk weight file '{name}': put it in {Path(folder).resolve()} "
        f"(download the official DICE-Talk release; it holds {', '.join(DICE_TALK_FILES)})."
    )


def _release(path: str, what: str) -> WeightFile:
    official = path if "/" in path else f"DICE-Talk/{path}"
    return WeightFile(
        path,
        what,
        Source(DICE_TALK_HF_REPO, official),
        CC_BY_NC_SA,
        alternatives=accepted_names(path)[1:],
        official_path=official,
    )


def _hub(repo: str, repo_path: str, target: str, what: str, licence: str, approx: str, *alt: str) -> WeightFile:
    return WeightFile(target, what, Source(repo, repo_path), licence, approx_size=approx, alternatives=alt)


def _whisper(name: str, approx: str, *alternatives: str) -> WeightFile:
    target = f"{WHISPER_FOLDER}/{name}"
    alt = tuple(f"{WHISPER_FOLDER}/{a}" for a in alternatives)
    return _hub(WHISPER_HF_REPO, name, target, f"Whisper-tiny {name}", APACHE, approx, *alt)


def _svd(repo_path: str, approx: str, *alternatives: str) -> WeightFile:
    target = f"{SVD_FOLDER}/{repo_path}"
    alt = tuple(f"{SVD_FOLDER}/{a}" for a in alternatives)
    return _hub(SVD_HF_REPO, repo_path, target, f"SVD-xt {repo_path}", SVD_LICENCE, approx, *alt)


def _preset(name: str) -> WeightFile:
    source = Source(DICE_TALK_CODE_REPO, f"examples/emo/{name}.npy", DICE_TALK_CODE_COMMIT, "github")
    return WeightFile(
        f"{EMOTIONS_FOLDER}/{name}.npy",
        f"emotion preset '{name}'",
        source,
        CC_BY_NC_SA,
        size=PRESET_BYTES,
        approx_size="1.4 kB",
        required=False,
    )


DICE_TALK_WEIGHTS: tuple[WeightFile, ...] = (
    _release(UNET_FILE, "DICE-Talk unet.pth"),
    _release(AUDIO_PROJECTION_FILE, "DICE-Talk audio_linear.pth"),
    _release(EMOTION_MODEL_FILE, "DICE-Talk emo_model.pth"),
    _release(POSE_GUIDER_FILE, "DICE-Talk pose_guider.pth"),
)
RIFE_WEIGHTS = _release(RIFE_FILE, "RIFE frame interpolation")
PRESETS: tuple[WeightFile, ...] = tuple(_preset(name) for name in OFFICIAL_PRESETS)
WHISPER_WEIGHTS_FILES: tuple[WeightFile, ...] = (
    _whisper("config.json", "2 kB"),
    _whisper("preprocessor_config.json", "185 kB"),
    _whisper(WHISPER_WEIGHTS, "151 MB", *WHISPER_WEIGHT_ALTERNATIVES),
)
SVD_FOLDER_FILES: tuple[WeightFile, ...] = (
    _svd("vae/config.json", "607 B"),
    _svd("vae/" + SVD_WEIGHT_FILES["vae"][0], "196 MB", "vae/" + SVD_WEIGHT_FILES["vae"][1]),
    _svd("image_encoder/config.json", "685 B"),
    _svd("image_encoder/" + SVD_WEIGHT_FILES["image_encoder"][0], "1.26 GB", "image_encoder/model.safetensors"),
    _svd("scheduler/scheduler_config.json", "1 kB"),
    _svd("unet/config.json", "1 kB"),  # only the config: the UNet weights come from DICE-Talk's unet.pth
)
SVD_SINGLE_FILE_WEIGHTS = _hub(
    SVD_HF_REPO, SVD_SINGLE_FILE, SVD_SINGLE_FILE, "SVD-xt single file", SVD_LICENCE, "9.6 GB"
)
MANIFEST: tuple[WeightFile, ...] = (
    *DICE_TALK_WEIGHTS,
    RIFE_WEIGHTS,
    *PRESETS,
    *WHISPER_WEIGHTS_FILES,
    *SVD_FOLDER_FILES,
)
"""What the setup script downloads into the DICE-Talk folder (SVD-xt as the diffusers folder)."""


@dataclass(frozen=True)
class FileStatus:
    """One needed file, where it must be, and whether it is there."""

    what: str
    path: Path
    found: bool
    required: bool = True


def default_svd_path(models_dir: str | Path) -> Path:
    """The SVD-xt folder inside ``models_dir`` when present, else ``models_dir/svd_xt.safetensors``."""
    folder = Path(models_dir) / SVD_FOLDER
    return folder if folder.is_dir() else Path(models_dir) / SVD_SINGLE_FILE


def _status(entry: WeightFile, root: Path, required: bool, prefix: str = "") -> FileStatus:
    """Whether ``entry`` (or an alternative) is under ``root``, its names taken relative to ``prefix``."""
    names = [name.removeprefix(prefix) for name in entry.names]
    return FileStatus(entry.what, root / names[0], any((root / name).exists() for name in names), required)


def weight_files(models_dir: str | Path, svd: str | Path | None = None, interpolate: bool = True) -> list[FileStatus]:
    """Every file a run needs, found or missing, with the path where it belongs."""
    root = Path(models_dir)
    files = [_status(e, root, e.required) for e in (*DICE_TALK_WEIGHTS, *WHISPER_WEIGHTS_FILES)]
    files.append(_status(RIFE_WEIGHTS, root, interpolate))
    files += [_status(e, root, e.required) for e in PRESETS]
    svd_path = Path(svd) if svd is not None else default_svd_path(root)
    if svd_path.suffix == ".safetensors":
        files.append(FileStatus(SVD_SINGLE_FILE_WEIGHTS.what, svd_path, svd_path.is_file()))
    else:
        files += [_status(e, svd_path, e.required, prefix=f"{SVD_FOLDER}/") for e in SVD_FOLDER_FILES]
    return files


def format_report(files: list[FileStatus]) -> str:
    """A table for ``--check``: status, what, path."""
    lines = []
    for f in files:
        status = "ok     " if f.found else ("MISSING" if f.required else "absent ")
        lines.append(f"{status}  {f.what:<34} {f.path}")
    missing = [f for f in files if f.required and not f.found]
    lines.append("all required files found" if not missing else f"{len(missing)} required file(s) missing")
    return "\n".join(lines)
