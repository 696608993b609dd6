"""Reading weight files safely and loading them strictly, with errors that name the file.

Only two readers exist: safetensors, and ``torch.load(..., weights_only=True)`` for the official
``.pth`` files (plain tensor dicts). Nothing here ever unpickles arbitrary Python objects.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..errors import CheckpointError

StateDict = dict[str, torch.Tensor]

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl")
_SHOWN = 5


def read_state_dict(path: str | Path, *, prefix: str = "", keep: Callable[[str], bool] | None = None) -> StateDict:
    """Read a tensor dict from ``.safetensors`` or a weights-only ``.pth``/``.pt``/``.pkl`` file.

    Args:
        path: the weight file.
        prefix: when given, keep only keys starting with it and strip it.
        keep: when given, read only the keys it accepts (from a safetensors file, the others are never
            loaded: a 10 GB single-file checkpoint costs only the parts that are used).

    Raises:
        CheckpointError: the file is missing, truncated, not a tensor dict, or holds Python objects
            that a weights-only load refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weight file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state = _read_safetensors(path, keep)
        except (SafetensorError, OSError, ValueError) as err:
            raise _unreadable(path, "is not a readable safetensors file", err) from err
    elif path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{path} holds Python objects other than tensors, so it was not loaded (weights-only "
                f"loading refuses to run code from files). Use the official release file. ({err})"
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise _unreadable(path, "could not be read as a PyTorch weight file", err) from err
    else:
        raise CheckpointError(
            f"{path} has an unsupported extension; expected .safetensors or one of {', '.join(PICKLE_SUFFIXES)}."
        )
    state = _unwrap(state, path)
    if keep is not None:
        state = {k: v for k, v in state.items() if keep(k)}
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{path} has no tensors under the prefix '{prefix}'.")
    return state


def _unreadable(path: Path, problem: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} {problem} ({err}). It may be truncated by an interrupted download: download it again."
    )


def _read_safetensors(path: Path, keep: Callable[[str], bool] | None) -> StateDict:
    if keep is None:
        return load_file(str(path), device="cpu")
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if keep(k)}  # noqa: SIM118 - not a dict


def state_dict_keys(path: str | Path) -> list[str]:
    """The tensor names of a weight file; a safetensors file is not loaded for this (its header is read)."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return list(handle.keys())
        except (SafetensorError, OSError, ValueError) as err:
            raise _unreadable(path, "is not a readable safetensors file", err) from err
    return list(read_state_dict(path))


def _unwrap(state: object, path: Path) -> StateDict:
    if isinstance(state, Mapping) and set(state) == {"state_dict"}:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} does not hold a dictionary of tensors (found {type(state).__name__}).")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} holds entries that are not named tensors, e.g. {bad[:_SHOWN]}.")
    return dict(state)


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Guess what a state dict is from its key names, for error messages."""
    keys = list(state)

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    if has("model.diffusion_model.") or has("first_stage_model."):
        return "a single-file Stability checkpoint (SD/SDXL/SVD style, not a diffusers component)"
    if has("to_k_ip."):
        return "a DICE-Talk/Sonic UNet with audio/emotion adapters (unet.pth)"
    if has("temporal_transformer_blocks") and has("down_blocks."):
        return "a stock SVD UNet (diffusers layout, without the DICE-Talk adapters)"
    if has("down_blocks.") and has("mid_block."):
        return "a diffusers UNet or VAE of another model"
    if has("codebook.codebook.weight"):
        return "the DICE-Talk emotion model (emo_model.pth)"
    if has("proj1.weight") and has("proj3.weight") and has("norm.weight"):
        return "an audio projection (audio_linear.pth)"
    if has("conv_in.weight") and has("blocks.0.weight") and has("conv_out.weight"):
        return "a pose guider (pose_guider.pth)"
    if has("vision_model.") or has("visual_projection"):
        return "a CLIP vision encoder"
    if has("encoder.layers.") and has("conv1"):
        return "a Whisper model"
    if all(k.startswith("module.") for k in keys) or has("block_tea") or has("block0.conv0."):
        return "a RIFE frame-interpolation model (flownet.pkl)"
    return f"an unknown model (first keys: {', '.join(keys[:3])})"


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, what: str) -> None:
    """Raise a :class:`CheckpointError` unless ``state`` fits ``module`` key for key and shape for shape.

    Args:
        module: the model to load into.
        state: the tensors read from ``source``.
        source: the file name (shown to the user).
        what: a human name of the expected model, e.g. "the DICE-Talk pose guider".
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    wrong_kind = [
        f"{k}: {state[k].dtype}"
        for k, v in expected.items()
        if k in state and v.is_floating_point() and not state[k].is_floating_point()
    ]
    if not (missing or unexpected or mis_shaped or wrong_kind):
        return
    lines = [f"{source} does not fit {what}; it looks like {describe_state_dict(state)}."]
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mis_shaped),
        ("non-float tensors where weights are expected", wrong_kind),
    ):
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            lines.append(f"{len(items)} {label}: {', '.join(items[:_SHOWN])}{more}")
    lines.append("Check that the file is the official release file of this name and re-download it if needed.")
    raise CheckpointError("\n".join(lines))


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, source: str, what: str, assign: bool = False
) -> nn.Module:
    """Check ``state`` against ``module`` (see :func:`check_state_dict`) and load it strictly.

    With ``assign=False`` tensors are copied into the module's parameters (it keeps its dtype and
    device); with ``assign=True`` the file's tensors become the parameters, which is how a module
    built on the ``meta`` device gets its weights without a random initialisation or a second copy.
    """
    check_state_dict(module, state, source=source, what=what)
    module.load_state_dict(state, strict=True, assign=assign)
    return module
