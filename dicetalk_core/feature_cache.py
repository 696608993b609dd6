"""UNet feature caching across denoising steps for the DICE-Talk UNet (DeepCache, and an adaptive variant).

A UNet's deep features change slowly from one denoising step to the next (Ma et al., "DeepCache", 2023).
The UNet is walked here as a chain of skip connections: ``conv_in`` gives skip 0, every down layer
(resnet + spatio-temporal transformer) or down-sampler gives the next one, and every up layer consumes
one, deepest first. With the branch point at skip ``d`` (``FastMode.cache_depth``):

* a **full** call runs everything and keeps the hidden state that enters the up layer consuming skip
  ``d`` (the output of every deeper layer, the mid block included);
* a **cached** call runs only the shallow part: ``conv_in`` and the down layers up to skip ``d``, then
  that kept hidden state instead of the deep part, then the up layers consuming skips ``d`` ... 0.

Depth 0 keeps only ``conv_in`` and the last up layer (the cheapest cached call); each step deeper adds a
down and an up layer (SVD-xt's layout has 12 skips: depths 0-11; ``skip_count``).

Which calls are cached:

* uniform (``cache_interval = N``): the full UNet on every N-th step, cached calls in between;
* adaptive (``cache_threshold = t``, the First-Block-Cache / TeaCache idea): every call first runs the
  first down layer; when the relative L1 change of its output since the frames' last full call,
  ``mean |x - x_full| / mean |x_full|``, is below ``t`` the call is cached, otherwise it goes on to
  the full UNet from there (nothing is computed twice; a cached call at depth 0 pays for that layer).

The kept features are stored per clip frame and per CFG branch (``[uncond, reference, full]``): the
sampler's windows move by ``shift_offset`` frames every step, so a window gathers its frames' features
wherever they were computed, and a one-branch step (guidance reuse, unguided steps) reads the full
branch's. A call is full whenever one of its frames lacks features for one of its branches. The
store holds, per frame and branch, one hidden state of the branch point (and, adaptive, one output
of the first down layer), so it grows with the clip, like the frames the clip makes. When the UNet
runs on a GPU the store is kept in host memory and only one window's features visit the device per
call: device memory stays flat in clip length (at 512x512 and depth 0 the store is ~2.6 MB per
latent frame and branch in fp16, ~2.7 GB of host memory for 25 s of speech, twice that adaptive;
a window's share moved per call, ~200 MB, is small beside the call). On the CPU the store stays where it is
(``bench/fast_mode.py --memory`` measures it).

A call that computes everything gives the stock forward's output bit for bit: this module calls the
stock layers in the stock order. It mirrors, layer by layer, the non-checkpointing path of the
forwards of diffusers' ``UNetSpatioTemporalConditionModel`` (as :meth:`DiceUNet.forward` does, through
:meth:`DiceUNet.prepare` and :meth:`DiceUNet.finish`), ``CrossAttnDownBlockSpatioTemporal``,
``DownBlockSpatioTemporal``, ``CrossAttnUpBlockSpatioTemporal`` and ``UpBlockSpatioTemporal``;
checked against diffusers 0.42.1 (the pinned range, 0.42.x) and 0.29.0 (the official code's), whose
blocks differ only in that 0.29's up-samplers take no explicit size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError
from .unet_adapters import DiceUNet, UNetCall

ALL_BRANCHES = (0, 1, 2)
"""CFG branch slots of a three-way call: ``[uncond, reference, full]``."""
FULL_BRANCH = (2,)
"""The slot a one-branch call (the full branch alone) reads and writes."""


def _resnet_then_attention(
    resnet: nn.Module, attention: nn.Module | None, hidden: torch.Tensor, call: UNetCall
) -> torch.Tensor:
    """One layer of a spatio-temporal block, as the stock block runs it: the resnet, then its transformer."""
    hidden = resnet(hidden, call.emb, image_only_indicator=call.image_only_indicator)
    if attention is None:
        return hidden
    return attention(
        hidden, encoder_hidden_states=call.cond, image_only_indicator=call.image_only_indicator, return_dict=False
    )[0]


@dataclass(frozen=True)
class _DownStep:
    """One down layer (resnet, then its transformer if any) or a block's down-samplers: makes one skip."""

    resnet: nn.Module | None
    attention: nn.Module | None
    downsamplers: Sequence[nn.Module] = ()

    def __call__(self, hidden: torch.Tensor, call: UNetCall) -> torch.Tensor:
        if self.resnet is None:
            for downsampler in self.downsamplers:
                hidden = downsampler(hidden)
            return hidden
        return _resnet_then_attention(self.resnet, self.attention, hidden, call)


@dataclass(frozen=True)
class _UpStep:
    """One up layer: concatenate its skip, resnet, transformer; a block's last layer then up-samples.

    Attributes:
        size_skip: the skip whose size the up-samplers get when sizes are forwarded (as the stock forward).
    """

    resnet: nn.Module
    attention: nn.Module | None
    upsamplers: Sequence[nn.Module]
    size_skip: int | None

    def __call__(self, hidden: torch.Tensor, skip: torch.Tensor, call: UNetCall, skips: list) -> torch.Tensor:
        hidden = _resnet_then_attention(self.resnet, self.attention, torch.cat([hidden, skip], dim=1), call)
        if self.upsamplers:
            size = None
            if call.forward_upsample_size and self.size_skip is not None:
                size = skips[self.size_skip].shape[2:]
            for upsampler in self.upsamplers:
                hidden = upsampler(hidden, size)
        return hidden


class UNetPath:
    """A :class:`DiceUNet` as a chain of skip connections (see the module docstring)."""

    def __init__(self, unet: DiceUNet) -> None:
        self.unet = unet
        self.down: list[_DownStep] = []  # down[k - 1] makes skip k
        for block in unet.down_blocks:
            attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
            for resnet, attention in zip(block.resnets, attentions, strict=True):
                self.down.append(_DownStep(resnet, attention))
            if block.downsamplers is not None:
                self.down.append(_DownStep(None, None, tuple(block.downsamplers)))
        self.up: list[_UpStep] = []  # up[u] consumes skip count - 1 - u
        consumed, size_skip = 0, None
        count = len(self.down) + 1
        for i, block in enumerate(unet.up_blocks):
            layers = len(block.resnets)
            if i < len(unet.up_blocks) - 1:
                size_skip = count - 1 - consumed - layers  # the skip left on top once this block's are taken
            attentions = getattr(block, "attentions", None) or [None] * layers
            for j, (resnet, attention) in enumerate(zip(block.resnets, attentions, strict=True)):
                last = j == layers - 1
                upsamplers = tuple(block.upsamplers) if last and block.upsamplers is not None else ()
                self.up.append(_UpStep(resnet, attention, upsamplers, size_skip))
            consumed += layers
        if consumed != count:
            raise ValueError(f"the UNet's up path consumes {consumed} skip connections but its down path makes {count}")

    @property
    def skip_count(self) -> int:
        """Skip connections, ``conv_in``'s included: the cache depths are ``0 .. skip_count - 1``."""
        return len(self.down) + 1

    def down_to(self, skips: list[torch.Tensor], depth: int, call: UNetCall) -> None:
        """Extend ``skips`` (holding skips ``0 .. len - 1``) with the down path up to skip ``depth``."""
        for k in range(len(skips), depth + 1):
            skips.append(self.down[k - 1](skips[-1], call))

    def deep(self, skips: list[torch.Tensor], depth: int, call: UNetCall) -> torch.Tensor:
        """From skips ``0 .. depth``: the rest of the down path, the mid block and the up layers consuming
        skips ``skip_count - 1 .. depth + 1``; returns the hidden state entering the layer consuming ``depth``.

        The deeper skips are released as their layers consume them.
        """
        self.down_to(skips, self.skip_count - 1, call)
        hidden = self.unet.mid_block(
            hidden_states=skips[-1],
            temb=call.emb,
            encoder_hidden_states=call.cond,
            image_only_indicator=call.image_only_indicator,
        )
        for u in range(self.skip_count - 1 - depth):
            hidden = self.up[u](hidden, skips.pop(), call, skips)
        return hidden

    def shallow_up(self, hidden: torch.Tensor, skips: list[torch.Tensor], call: UNetCall) -> torch.Tensor:
        """The up layers consuming skips ``len(skips) - 1 .. 0``, from ``hidden`` entering the first of them."""
        first = self.skip_count - len(skips)
        for u in range(first, self.skip_count):
            hidden = self.up[u](hidden, skips.pop(), call, skips)
        return hidden


def feature_store_device(device: torch.device) -> torch.device:
    """Where a run's feature store lives: host memory for an accelerator's run, else ``device`` itself."""
    return torch.device("cpu") if device.type in ("cuda", "xpu", "mps") else device


class FeatureCache:
    """Cached UNet calls for one :func:`~dicetalk_core.sampler.sample` run (module docstring).

    Args:
        unet: the DICE UNet (uncompiled: its layers are called one by one).
        depth: branch point, ``0 .. skip_count - 1``.
        interval: uniform mode: the full UNet every ``interval``-th step (1 with ``threshold``).
        threshold: adaptive mode when > 0: the first down layer's relative change below which a call is cached.
        total_frames: frames of the clip (the store is indexed by clip frame).
        store_device: where the store lives; default :func:`feature_store_device` of the UNet's device.

    Attributes:
        calls: ``(branches, full)`` of every call, in order (for benches and tests).
    """

    def __init__(
        self,
        unet: DiceUNet,
        depth: int,
        interval: int,
        threshold: float,
        total_frames: int,
        store_device: torch.device | None = None,
    ) -> None:
        self.path = UNetPath(unet)
        if not 0 <= depth < self.path.skip_count:
            raise InputError(
                f"cache_depth must be between 0 and {self.path.skip_count - 1} for this UNet "
                f"({self.path.skip_count} skip connections), got {depth}."
            )
        self.unet, self.depth, self.interval, self.threshold = unet, depth, interval, threshold
        self.total_frames = total_frames
        self.store_device = store_device or feature_store_device(unet.device)
        self.deep_features: dict[int, torch.Tensor] = {}  # slot -> (L, C, h, w)
        self.first_layer: dict[int, torch.Tensor] = {}  # slot -> (L, C0, h, w), adaptive only
        self.stored: dict[int, torch.Tensor] = {}  # slot -> (L,) bool: the frame has features
        self.calls: list[tuple[int, bool]] = []

    @property
    def adaptive(self) -> bool:
        return self.threshold > 0

    def __call__(
        self,
        step: int,
        branches: Sequence[int],
        frames: torch.Tensor,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        **kwargs,
    ) -> torch.Tensor:
        """The UNet's prediction ``(B, F, 4, h, w)`` for the window ``frames`` (clip indices) and ``branches``.

        ``sample`` and ``kwargs`` are :meth:`DiceUNet.forward`'s arguments (``B = len(branches)``).
        """
        hidden, call = self.unet.prepare(sample, timestep, **kwargs)
        skips = [hidden]
        del hidden
        have = self._have(branches, frames)
        if self.adaptive:
            self.path.down_to(skips, 1, call)
            full = not have or self._relative_change(skips[1], branches, frames) >= self.threshold
            if full:
                self._store(self.first_layer, branches, frames, skips[1])
        else:
            full = not have or step % self.interval == 0
        self.path.down_to(skips, self.depth, call)
        if full:
            hidden = self.path.deep(skips, self.depth, call)
            self._store(self.deep_features, branches, frames, hidden)
            for slot in branches:
                self.stored.setdefault(slot, torch.zeros(self.total_frames, dtype=torch.bool))[frames.cpu()] = True
        else:
            del skips[self.depth + 1 :]
            hidden = self._gather(self.deep_features, branches, frames)
        self.calls.append((len(branches), full))
        return self.unet.finish(self.path.shallow_up(hidden, skips, call), call)

    def _have(self, branches: Sequence[int], frames: torch.Tensor) -> bool:
        index = frames.cpu()
        return all(slot in self.stored and bool(self.stored[slot][index].all()) for slot in branches)

    def _store(
        self, store: dict[int, torch.Tensor], branches: Sequence[int], frames: torch.Tensor, hidden: torch.Tensor
    ) -> None:
        per_branch = hidden.unflatten(0, (len(branches), -1)).to(self.store_device)
        index = frames.to(self.store_device)
        for i, slot in enumerate(branches):
            if slot not in store:
                store[slot] = per_branch.new_zeros((self.total_frames, *hidden.shape[1:]))
            store[slot][index] = per_branch[i]

    def _gather(self, store: dict[int, torch.Tensor], branches: Sequence[int], frames: torch.Tensor) -> torch.Tensor:
        index = frames.to(self.store_device)
        return torch.cat([store[slot][index] for slot in branches]).to(self.unet.device)

    def _relative_change(self, first_layer: torch.Tensor, branches: Sequence[int], frames: torch.Tensor) -> float:
        before = self._gather(self.first_layer, branches, frames).float()
        change = (first_layer.float() - before).abs().mean()
        return float(change / before.abs().mean().clamp_min(torch.finfo(torch.float32).tiny))
