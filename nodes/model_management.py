"""DICE-Talk modules under ComfyUI's model management: one ModelPatcher per weight-holding module.

Modules live on ComfyUI's offload device; :meth:`DiceTalkBundle.load` asks ComfyUI to move the ones
a node needs to the torch device right before use (evicting other models as memory requires), and
ComfyUI offloads them again when other models need the room.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import comfy.model_management as mm
import comfy.model_patcher
import torch
from torch import nn

from ..dicetalk_core.audio import WhisperAudioEncoder
from ..dicetalk_core.models.bundle import DiceTalkModels
from ..dicetalk_core.precision import DTYPES, Precision

MANAGED_PARTS = ("unet", "vae", "image_encoder", "pose_guider", "audio_projection", "emotion_model")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 (or bf16) where ComfyUI would use it on this device, fp32 on the CPU."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float32


class ManagedModule(nn.Module):
    """Holds one module for a ModelPatcher, which sets ``model.device`` (a read-only property on
    diffusers and transformers models, a plain attribute here)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def patcher_for(module: nn.Module) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(
        ManagedModule(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


@dataclass
class DiceTalkBundle:
    """What DICE-Talk Model Loader outputs: the modules, whisper, and their patchers."""

    models: DiceTalkModels
    whisper: WhisperAudioEncoder
    diffusion_dtype: torch.dtype
    patchers: dict[str, comfy.model_patcher.ModelPatcher] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in MANAGED_PARTS:
            self.patchers[name] = patcher_for(getattr(self.models, name))
        self.patchers["whisper"] = patcher_for(self.whisper.encoder)

    @property
    def precision(self) -> Precision:
        """The device and dtypes the parts run with once loaded."""
        return Precision(device=self.patchers["unet"].load_device, diffusion=self.diffusion_dtype)

    def load(self, *names: str, memory_required: int = 0) -> None:
        """Move the named parts to the torch device now, with ``memory_required`` bytes of room beside them.

        ComfyUI offloads other models (DICE-Talk's own parts included) when the room is missing; under
        ``--lowvram`` / ``--novram`` every other model is offloaded first, so one stage's modules are on
        the device at a time. They run with :attr:`precision`.
        """
        patchers = [self.patchers[n] for n in names]
        if mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM):
            device = patchers[0].load_device
            mm.free_memory(float("inf"), device, keep_loaded=[mm.LoadedModel(p) for p in patchers])
        mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
