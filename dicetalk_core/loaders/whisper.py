"""whisper-tiny from a local Hugging Face folder, offline, as the audio front end's encoder."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..audio import WhisperAudioEncoder
from ..errors import CheckpointError
from ..model_files import AUDIO_PROJECTION_FILE, WHISPER_CONFIG_FILES, WHISPER_WEIGHT_ALTERNATIVES, WHISPER_WEIGHTS
from ..models import AudioProjection
from ..rates import AUDIO_WINDOW
from .checkpoints import StateDict, describe_state_dict, load_strict, read_state_dict

ENCODER_PREFIXES = ("model.encoder.", "encoder.")
"""Where the encoder's tensors sit in a ``WhisperModel`` / ``WhisperForConditionalGeneration`` state dict."""


def build_whisper_encoder(config: WhisperConfig, state: StateDict, *, source: str) -> WhisperEncoder:
    """A ``WhisperEncoder`` built from ``config`` with the encoder tensors of ``state`` loaded strictly.

    ``state`` may be a ``WhisperModel`` (``encoder.*``) or a ``WhisperForConditionalGeneration``
    (``model.encoder.*``) state dict; decoder tensors are ignored.

    Raises:
        CheckpointError: no encoder tensors, or they do not fit ``config``.
    """
    prefix = next((p for p in ENCODER_PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        raise CheckpointError(
            f"{source} holds no Whisper encoder weights (keys 'encoder.*' or 'model.encoder.*'); it looks "
            f"like {describe_state_dict(state)}. Use the whisper-tiny model.safetensors."
        )
    encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    encoder = WhisperEncoder(config)
    load_strict(encoder, encoder_state, source=source, what="the Whisper encoder described by config.json")
    return encoder.eval()


def load_whisper(
    folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> WhisperAudioEncoder:
    """Load whisper-tiny (feature extractor + encoder) from a local Hugging Face folder, offline.

    The folder needs ``config.json``, ``preprocessor_config.json`` and ``model.safetensors`` (preferred)
    or ``pytorch_model.bin`` (read weights-only). The official run uses float32.

    Raises:
        CheckpointError: the folder or a file is missing or unreadable, or the weights do not fit.
    """
    folder = Path(folder)
    weight_names = (WHISPER_WEIGHTS, *WHISPER_WEIGHT_ALTERNATIVES)
    needed = f"{', '.join(WHISPER_CONFIG_FILES)} and {' or '.join(weight_names)}"
    if not folder.is_dir():
        raise CheckpointError(
            f"Whisper folder not found: {folder}. Download openai/whisper-tiny there; it needs {needed}."
        )
    missing = [name for name in WHISPER_CONFIG_FILES if not (folder / name).is_file()]
    weights = next((folder / n for n in weight_names if (folder / n).is_file()), None)
    if weights is None:
        missing.append(" or ".join(weight_names))
    if missing:
        raise CheckpointError(f"Whisper folder {folder} lacks {', '.join(missing)}; it needs {needed}.")
    try:
        config = WhisperConfig.from_pretrained(folder, local_files_only=True)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"Could not read the Whisper configuration in {folder}: {err}") from err
    encoder = build_whisper_encoder(config, read_state_dict(weights), source=str(weights))
    return WhisperAudioEncoder(feature_extractor, encoder.to(device=device, dtype=dtype))


def check_whisper_fits(
    audio_projection: AudioProjection, whisper: WhisperAudioEncoder, whisper_folder: str | Path
) -> None:
    """Refuse a Whisper model whose per-frame audio windows are not the size ``audio_linear.pth`` reads."""
    config = whisper.encoder.config
    layers, width = config.encoder_layers + 1, config.d_model
    wanted = audio_projection.input_dim
    if AUDIO_WINDOW * layers * width != wanted:
        raise CheckpointError(
            f"The Whisper model in {Path(whisper_folder).resolve()} gives audio windows of {AUDIO_WINDOW} x {layers} x "
            f"{width} = {AUDIO_WINDOW * layers * width} values; {AUDIO_PROJECTION_FILE} reads {wanted}. Use "
            "openai/whisper-tiny (its config.json and model.safetensors) with the DICE-Talk release's audio_linear.pth."
        )
