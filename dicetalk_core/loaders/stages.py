"""Low-memory runs: only the running stage's modules are loaded; the others are read from their files when needed.

A run goes through stages that each use a few modules (:data:`SESSION_STAGES`): whisper for the audio,
the emotion model, the conditioning modules, the UNet, the VAE for the decode, RIFE. Keeping all of
them loaded, as the official code does, costs their sum at every moment (at full size in fp32: a 6 GB
UNet next to a 2.5 GB CLIP image encoder and 0.5 GB of audio and emotion modules). Here a released
module keeps its structure and config on the ``meta`` device, which holds no memory, and is read again
from its file when a stage needs it: the peak is that of the largest stage instead of the sum, for
the cost of reading each file once more per run. The modules and their numbers are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from ..models.bundle import STAGE_MODULES

SESSION_STAGES: dict[str, tuple[str, ...]] = {
    "audio": ("whisper",),
    "emotion": ("emotion_model",),
    **STAGE_MODULES,
    "interpolation": ("rife",),
}
"""The stages of a session run, in order, and the modules each one uses."""

Loader = Callable[[], nn.Module]
Holder = tuple[object, str]
"""Where a module lives: an object and the name of its attribute that holds the module."""


def is_released(module: nn.Module) -> bool:
    """Whether ``module``'s weights are on the ``meta`` device (structure only, no memory)."""
    return any(tensor.is_meta for tensor in (*module.parameters(), *module.buffers()))


def release(module: nn.Module) -> None:
    """Move ``module``'s weights to the ``meta`` device; their memory is freed once nothing else holds them."""
    module.to(device="meta")


class StageLoader:
    """Keeps loaded only the modules of the stage that runs (see the module docstring).

    Args:
        loaders: per module name (of :data:`SESSION_STAGES`), a function reading it from its files,
            ready to run (device, dtype, eval mode).
        holders: per module name, where the run finds it; :meth:`enter` swaps modules in and out there.
    """

    def __init__(self, loaders: Mapping[str, Loader], holders: Mapping[str, Holder]) -> None:
        unknown = set(loaders) ^ set(holders)
        if unknown:
            raise ValueError(f"loaders and holders must name the same modules; they differ in {sorted(unknown)}")
        self.loaders = dict(loaders)
        self.holders = dict(holders)

    def module(self, name: str) -> nn.Module:
        holder, attribute = self.holders[name]
        return getattr(holder, attribute)

    def enter(self, stage: str) -> None:
        """Release every loaded module ``stage`` does not use, then load the ones it uses that are released."""
        if stage not in SESSION_STAGES:
            raise KeyError(f"unknown stage {stage!r}; one of {', '.join(SESSION_STAGES)}")
        needed = set(SESSION_STAGES[stage]) & set(self.holders)
        for name in self.holders.keys() - needed:
            if not is_released(self.module(name)):
                release(self.module(name))
        for name in needed:
            if is_released(self.module(name)):
                holder, attribute = self.holders[name]
                setattr(holder, attribute, self.loaders[name]())

    def release_all(self) -> None:
        """Release every module (the end of a run)."""
        for name in self.holders:
            if not is_released(self.module(name)):
                release(self.module(name))

    def loaded(self) -> list[str]:
        """The names of the modules that hold their weights now."""
        return [name for name in self.holders if not is_released(self.module(name))]
