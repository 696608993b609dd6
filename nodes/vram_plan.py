"""What to offload before a DICE-Talk stage runs, from ComfyUI's memory figures (standard library only).

ComfyUI manages VRAM in one of two modes:

* classic (ComfyUI up to 0.3.6x, and newer ones started with ``--disable-dynamic-vram``, ``--novram``,
  ``--highvram``, ``--gpu-only``, ``--cpu``, or without comfy-aimdo): every model is a plain
  ``ModelPatcher``; ``load_models_gpu`` frees whole models until the requested room is free, and
  ``--lowvram``/``--novram`` put it in the LOW_VRAM/NO_VRAM state;
* dynamic VRAM (newer ComfyUI with comfy-aimdo on NVIDIA, the default there): its own models are
  ``ModelPatcherDynamic``s whose weights stay partly resident and are paged in per layer; ``--lowvram``
  still sets LOW_VRAM but ComfyUI's help says it does nothing for them, and plain ``ModelPatcher``s, as
  the DICE-Talk modules are (diffusers and transformers layers have none of ComfyUI's per-layer casting,
  so a dynamic patcher would load them whole anyway), still take the classic path: loading one frees
  room by unloading other models, dynamic ones included.

:func:`plan_stage` turns the figures of either mode into one decision per stage: how much working room
to ask ``load_models_gpu`` for, and whether to offload every other model first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VramFigures:
    """ComfyUI's view of the device when a stage starts (bytes).

    Attributes:
        free: what ComfyUI counts as free (``model_management.get_free_memory``: the driver's free memory
            plus what torch holds unused).
        reclaimable: what dynamic-VRAM models would give back on demand (ComfyUI's
            ``ModelPatcher.get_free_memory`` minus ``free``); 0 in the classic mode.
        dynamic: ComfyUI's dynamic VRAM (comfy-aimdo) is on.
        low_vram: ComfyUI is in the LOW_VRAM state (``--lowvram``).
        no_vram: ComfyUI is in the NO_VRAM state (``--novram``; it turns dynamic VRAM off).
        on_gpu: the models run on a GPU (not the CPU, where there is nothing to offload).
    """

    free: int
    reclaimable: int = 0
    dynamic: bool = False
    low_vram: bool = False
    no_vram: bool = False
    on_gpu: bool = True


@dataclass(frozen=True)
class StagePlan:
    """What to do before a stage: offload the other models or not, and the room to ask for beside its modules."""

    offload_others: bool
    memory_required: int
    reason: str


def plan_stage(to_load: int, working: int, figures: VramFigures, reserve: int = 0) -> StagePlan:
    """The offload decision of one stage.

    Args:
        to_load: bytes of the stage's modules not yet on the device.
        working: bytes the stage needs beside its modules (activations, the decode's clips).
        figures: the device's figures (see :class:`VramFigures`).
        reserve: bytes ComfyUI keeps free for the system (``extra_reserved_memory``).

    Returns:
        ``offload_others``: True under ``--novram``; under ``--lowvram`` in the classic mode (what the
        flag asks for there); and in either mode when the stage cannot fit beside what stays loaded even
        after dynamic models give back their pages. Otherwise ComfyUI frees only what the stage needs,
        which keeps other models loaded between runs. ``memory_required`` is always ``working``: it is
        what makes ComfyUI leave room for the activations (and, classic or not, free it).
    """
    if not figures.on_gpu:
        return StagePlan(False, working, "CPU: nothing to offload")
    if figures.no_vram:
        return StagePlan(True, working, "--novram: one stage's models on the GPU at a time")
    if figures.low_vram and not figures.dynamic:
        return StagePlan(True, working, "--lowvram: one stage's models on the GPU at a time")
    need = to_load + working + reserve
    available = figures.free + figures.reclaimable
    if need > available:
        return StagePlan(
            True, working, f"needs {need / 2**30:.1f} GB, {available / 2**30:.1f} GB can be freed: offload the rest"
        )
    mode = "dynamic VRAM" if figures.dynamic else "classic"
    return StagePlan(False, working, f"{mode}: fits beside the loaded models; ComfyUI frees what it needs")
