"""RIFE's ``flownet.pkl`` (the release's ``checkpoints/RIFE/``) -> :class:`~dicetalk_core.interpolation.IFNet`.

The file is a ``torch.save``d dict whose keys carry the ``module.`` prefix of a DataParallel wrapper.
It also holds a fourth block, ``block_tea`` (the "teacher" used only while training RIFE, 760,415
parameters); inference never runs it, so :func:`load_rife` drops those keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ..interpolation import IFNet
from .checkpoints import StateDict, load_strict, read_state_dict

logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "module."
"""Prefix of every key in the official ``flownet.pkl`` (written from a DataParallel wrapper)."""
TRAINING_ONLY_PREFIX = "block_tea."
"""Keys of the teacher block: present in the official file, unused at inference, ignored on load."""


def official_to_ifnet_keys(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Map the official ``flownet.pkl`` dict to :class:`IFNet` names.

    Strips a leading ``module.`` and drops the training-only ``block_tea.*`` keys. Any other key is
    kept as is, so that a strict load reports it.
    """
    renamed = {k.removeprefix(OFFICIAL_PREFIX): v for k, v in state.items()}
    dropped = [k for k in renamed if k.startswith(TRAINING_ONLY_PREFIX)]
    if dropped:
        logger.debug("RIFE: ignoring %d training-only %s* tensors", len(dropped), TRAINING_ONLY_PREFIX)
    return {k: v for k, v in renamed.items() if not k.startswith(TRAINING_ONLY_PREFIX)}


def load_rife(path: str | Path, *, device: torch.device | str = "cpu") -> IFNet:
    """Load the official ``flownet.pkl`` (weights-only) strictly into a float32 :class:`IFNet` in eval mode.

    Raises:
        CheckpointError: the file is unreadable or its tensors do not fit IFNet HDv3.
    """
    state = official_to_ifnet_keys(read_state_dict(path))
    model = load_strict(IFNet(), state, source=str(path), what="the RIFE frame interpolator (IFNet HDv3)")
    return model.to(device=device, dtype=torch.float32).eval()
