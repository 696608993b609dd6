"""Emotion classifiers in transformers format: finding, checking and loading their folders safely.

A classifier folder is what ``save_pretrained`` writes: ``config.json`` (with ``id2label`` naming
the emotions), the weights as ``model.safetensors`` (or sharded with ``model.safetensors.index.json``)
and the preprocessing config (``preprocessor_config.json``). Only safetensors weights are read
(``use_safetensors=True``), nothing is downloaded (``local_files_only``) and no code from the folder
runs (``trust_remote_code=False``). Face classifiers live in ``models/dice_talk/expression/``, voice
classifiers in ``models/dice_talk/speech_emotion/``: the folder itself or one subfolder per model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch

from ..errors import CheckpointError
from .labels import LabelMapping, map_probabilities
from .mixing import MixComponent, mix_priors
from .presets import PresetLibrary

logger = logging.getLogger(__name__)

EXPRESSION_FOLDER = "expression"
SPEECH_EMOTION_FOLDER = "speech_emotion"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

KINDS = {
    EXPRESSION_FOLDER: "face-expression image classifier (e.g. a ViT fine-tuned on FER-2013 or AffectNet)",
    SPEECH_EMOTION_FOLDER: "speech-emotion audio classifier (e.g. a wav2vec2 / HuBERT model fine-tuned on "
    "RAVDESS, CREMA-D or IEMOCAP)",
}


def missing_files(folder: Path) -> list[str]:
    """Which of the needed files are absent from ``folder``."""
    missing = [name for name in (CONFIG_FILE, PREPROCESSOR_FILE) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(WEIGHT_FILES[0])
    return missing


def classifier_folders(root: Path) -> list[Path]:
    """``root`` if it holds a model, plus every subfolder that does (by ``config.json``)."""
    if not root.is_dir():
        return []
    found = [root] if (root / CONFIG_FILE).is_file() else []
    found += sorted(p for p in root.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    return found


def what_is_missing(root: Path, kind: str) -> str:
    """An actionable sentence saying what to put where for ``kind`` (a folder name in :data:`KINDS`)."""
    needed = f"{CONFIG_FILE}, {WEIGHT_FILES[0]} and {PREPROCESSOR_FILE}"
    if not root.is_dir():
        state = f"the folder {root.resolve()} does not exist"
    else:
        incomplete = [p for p in [root, *sorted(root.iterdir())] if p.is_dir() and any(p.iterdir())]
        partial = [f"{p.name}: missing {', '.join(missing_files(p))}" for p in incomplete if missing_files(p)]
        state = f"no complete model in {root.resolve()}" + (f" ({'; '.join(partial)})" if partial else "")
    return (
        f"No {KINDS[kind]} found: {state}. Put a transformers classifier there (or in a subfolder), as "
        f"save_pretrained writes it: {needed}. Only .safetensors weights are read."
    )


def check_folder(folder: Path, kind: str) -> None:
    missing = missing_files(folder)
    if missing:
        raise CheckpointError(
            f"The {KINDS[kind]} in {folder.resolve()} is incomplete: missing {', '.join(missing)}. "
            f"A classifier folder needs {CONFIG_FILE}, {WEIGHT_FILES[0]} and {PREPROCESSOR_FILE} "
            "(what save_pretrained writes; .bin/.pth weights are not read)."
        )


def load_pretrained(loader, folder: Path, kind: str, **kwargs):
    """``loader.from_pretrained(folder)`` with the safe options, errors turned into CheckpointError."""
    try:
        return loader.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"Could not load the {KINDS[kind]} from {folder.resolve()}: {err}") from err


def class_labels(config) -> list[str]:
    """Labels in class-index order from a transformers config's ``id2label``."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(config.num_labels)]


ClassifierT = TypeVar("ClassifierT", bound="PretrainedClassifier")


class PretrainedClassifier:
    """A transformers classification model and its preprocessor, read safely from a local folder.

    Subclasses name the folder kind and the transformers auto classes, and turn their input into the
    preprocessor's call.
    """

    KIND: ClassVar[str]
    """The folder kind (a key of :data:`KINDS`)."""
    MODEL_CLASS: ClassVar[str]
    PREPROCESSOR_CLASS: ClassVar[str]

    def __init__(self, model, preprocessor, folder: Path) -> None:
        self.model = model.eval()
        self.preprocessor = preprocessor
        self.folder = folder
        self.labels = class_labels(model.config)

    @classmethod
    def from_folder(cls: type[ClassifierT], folder: str | Path) -> ClassifierT:
        import transformers

        folder = Path(folder)
        check_folder(folder, cls.KIND)
        model = load_pretrained(getattr(transformers, cls.MODEL_CLASS), folder, cls.KIND, use_safetensors=True)
        preprocessor = load_pretrained(getattr(transformers, cls.PREPROCESSOR_CLASS), folder, cls.KIND)
        return cls(model, preprocessor, folder)

    @torch.no_grad()
    def softmax(self, inputs: Mapping[str, torch.Tensor], device: torch.device | str) -> torch.Tensor:
        """The preprocessor's output -> class probabilities ``(batch, C)`` float32 on the CPU."""
        self.model.to(device)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
        return torch.softmax(self.model(**inputs).logits.float(), dim=-1).cpu()


@dataclass(frozen=True)
class ClassEstimate:
    """Probabilities per class label, their preset mapping and the resulting prior ``(D,)``."""

    probabilities: dict[str, float]
    mapping: LabelMapping
    prior: torch.Tensor

    def report(self) -> str:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in sorted(self.probabilities.items(), key=lambda x: -x[1]))
        return f"class probabilities: {probs}; {self.mapping.report()}"


def estimate_from_probabilities(
    probabilities: torch.Tensor, labels: list[str], library: PresetLibrary
) -> ClassEstimate:
    """Class probabilities ``(C,)`` -> the probability-weighted mix of the mapped presets."""
    probs = {label: 0.0 for label in labels}
    for label, p in zip(labels, probabilities.tolist(), strict=True):
        probs[label] += float(p)
    mapping = map_probabilities(probs, library.names())
    for name, table in (("unknown", mapping.unknown), ("not installed", mapping.not_installed)):
        if table:
            logger.warning("Emotion classifier labels %s were ignored (%s).", list(table), name)
    prior = mix_priors([MixComponent(library.prior(p), w, label=p) for p, w in mapping.weights.items()])
    return ClassEstimate(probs, mapping, prior)
