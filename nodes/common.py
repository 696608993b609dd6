"""Small adapters between ComfyUI's runtime and dicetalk_core callbacks."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management as mm
import comfy.utils


def stop_requested() -> bool:
    """For dicetalk_core's ``should_stop``: raises ComfyUI's own interrupt when the user cancelled."""
    mm.throw_exception_if_processing_interrupted()
    return False


def progress_bar(total: int = 1) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that drives a ComfyUI progress bar on the running node."""
    bar = comfy.utils.ProgressBar(total)

    def update(done: int, new_total: int) -> None:
        bar.update_absolute(done, new_total)

    return update
