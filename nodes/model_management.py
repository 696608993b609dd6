"""DICE-Talk modules under ComfyUI's model management: one ModelPatcher per weight-holding module.

Modules live on ComfyUI's offload device; :meth:`DiceTalkBundle.load` asks ComfyUI to move the ones
a node needs to the torch device right before use (evicting other models as memory requires), and
ComfyUI offloads them again when other models need the room. The same code is right under ComfyUI's
classic model management and under its dynamic VRAM (comfy-aimdo): the decision of what to offload
first is :func:`~.vram_plan.plan_stage`, fed with the figures of whichever mode runs.
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
from .vram_plan import StagePlan, VramFigures, plan_stage

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


def dynamic_vram_enabled() -> bool:
    """Whether ComfyUI runs its dynamic VRAM (comfy-aimdo); False on ComfyUI versions without it."""
    try:
        import comfy.memory_management as memory_management
    except ImportError:
        return False
    enabled = getattr(memory_management, "aimdo_enabled", None)
    if enabled is None:  # the first releases with comfy-aimdo set an allocator instead of a flag
        return getattr(memory_management, "aimdo_allocator", None) is not None
    return bool(enabled)


def vram_figures(device: torch.device, patcher: comfy.model_patcher.ModelPatcher) -> VramFigures:
    """ComfyUI's memory figures for ``device`` now, in either mode (see :class:`~.vram_plan.VramFigures`)."""
    free = int(mm.get_free_memory(device))
    reclaimable = 0
    counted_by_patcher = getattr(patcher, "get_free_memory", None)  # with dynamic VRAM: + the pages models give back
    if callable(counted_by_patcher):
        reclaimable = max(0, int(counted_by_patcher(device)) - free)
    return VramFigures(
        free=free,
        reclaimable=reclaimable,
        dynamic=dynamic_vram_enabled(),
        low_vram=mm.vram_state == mm.VRAMState.LOW_VRAM,
        no_vram=mm.vram_state == mm.VRAMState.NO_VRAM,
        on_gpu=device.type != "cpu",
    )


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

    def load(self, *names: str, memory_required: int = 0) -> StagePlan:
        """Move the named parts to the torch device now, with ``memory_required`` bytes of room beside them.

        ComfyUI offloads other models (DICE-Talk's own parts included) when the room is missing. Every
        other model is offloaded first under ``--novram``, under ``--lowvram`` with the classic model
        management, and whenever the parts cannot fit otherwise (:func:`~.vram_plan.plan_stage`). They
        run with :attr:`precision`. Returns the plan that was followed.
        """
        patchers = [self.patchers[n] for n in names]
        device = patchers[0].load_device
        to_load = sum(max(0, p.model_size() - p.loaded_size()) for p in patchers)
        plan = plan_stage(to_load, memory_required, vram_figures(device, patchers[0]), mm.extra_reserved_memory())
        if plan.offload_others:
            mm.free_memory(float("inf"), device, keep_loaded=[mm.LoadedModel(p) for p in patchers])
        mm.load_models_gpu(patchers, memory_required=plan.memory_required, force_full_load=True)
        return plan
