"""Training checkpoints as safetensors: the weights, and the config and step as JSON metadata (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .embedder import EmbedderConfig, EmotionEmbedder

KIND = "dicetalk-emotion-embedder"


def save_embedder(path: str | Path, model: EmotionEmbedder, step: int, extra: dict | None = None) -> Path:
    """Write ``model``'s weights with ``{"kind", "config", "step", ...extra}`` in the metadata."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"kind": KIND, "config": json.dumps(model.config.to_dict()), "step": str(step)}
    metadata |= {k: json.dumps(v) for k, v in (extra or {}).items()}
    save_file(state, str(path), metadata=metadata)
    return path


def load_embedder(path: str | Path) -> tuple[EmotionEmbedder, dict]:
    """Rebuild the embedder from a checkpoint; returns it (eval mode) and the metadata."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({err}).") from err
    if metadata.get("kind") != KIND:
        raise CheckpointError(f"{path} is not an emotion-embedder checkpoint (kind {metadata.get('kind')!r}).")
    model = EmotionEmbedder(EmbedderConfig(**json.loads(metadata["config"])))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not match its own config: {err}") from err
    return model.eval(), metadata
