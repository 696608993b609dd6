"""Golden parity cases: discovery, loading and comparison.

A case is a pair ``<name>.json`` + ``<name>.safetensors`` in the folder named by the environment
variable ``DICETALK_GOLDEN_DIR`` (default ``../shared/golden`` beside the checkout). The JSON's
``case`` field (or its file name) tells the kind of case; everything else (shapes, sizes, seeds,
scales, modes, tolerances) is read from the case itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "golden"

KINDS = (
    "audio_proj",
    "emotion_model",
    "pose_guider",
    "unet_forward",
    "pipeline_end_to_end",
    "audio_frontend",
    "image_frontend",
)


def golden_dir() -> Path:
    return Path(os.environ.get("DICETALK_GOLDEN_DIR", str(DEFAULT_DIR)))


@dataclass
class GoldenCase:
    """One parity case: its JSON description and its tensors (loaded lazily)."""

    name: str
    kind: str
    meta: dict
    path: Path
    _tensors: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = load_file(str(self.path.with_suffix(".safetensors")))
        return self._tensors

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix`` (e.g. ``"weights."`` or ``"weights.unet."``), prefix stripped."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def tolerance(self, entry: str | None = None) -> tuple[float, float]:
        """(atol, rtol) for an output family; falls back to the case-wide tolerance."""
        tol = self.meta.get("tolerance", {})
        if entry is not None and isinstance(tol.get(entry), dict):
            tol = tol[entry]
        return float(tol.get("atol", 1e-5)), float(tol.get("rtol", 1e-4))


def case_kind(name: str, meta: dict) -> str | None:
    label = str(meta.get("case", name))
    for kind in sorted(KINDS, key=len, reverse=True):
        if label.startswith(kind) or name.startswith(kind):
            return kind
    return None


def discover() -> list[GoldenCase]:
    folder = golden_dir()
    if not folder.is_dir():
        return []
    cases = []
    for meta_path in sorted(folder.glob("*.json")):
        if not meta_path.with_suffix(".safetensors").is_file():
            continue
        meta = json.loads(meta_path.read_text())
        kind = case_kind(meta_path.stem, meta)
        cases.append(GoldenCase(meta_path.stem, kind or "unknown", meta, meta_path))
    return cases


def assert_close(
    name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, report: dict
) -> None:
    """Compare like ``torch.testing.assert_close`` and record the max abs error under ``name``."""
    actual = actual.detach().to("cpu")
    if actual.is_floating_point() or expected.is_floating_point():
        actual, expected = actual.double(), expected.double()
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    report[name] = err
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
