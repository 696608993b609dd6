"""Small adapters between ComfyUI's runtime and dicetalk_core callbacks."""

from __future__ import annotations

from collections.abc import Callable

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview

from ..dicetalk_core.sampler import WindowResult


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


def sampling_progress(total: int) -> Callable[[WindowResult], None]:
    """An ``on_window`` callback: advances the node's progress bar and sends a preview of the window.

    The preview is the middle frame of the step's clean-latent estimate, drawn by ComfyUI's own
    previewer for SD latents (``--preview-method``: latent2rgb, taesd; none sends no image).
    """
    bar = comfy.utils.ProgressBar(total)
    previewer = latent_preview.get_previewer(mm.get_torch_device(), comfy.latent_formats.SD15())

    def update(window: WindowResult) -> None:
        preview = None
        if previewer is not None:
            middle = window.denoised[:, window.denoised.shape[1] // 2].float()
            preview = previewer.decode_latent_to_preview_image("JPEG", middle)
        bar.update_absolute(bar.current + 1, total, preview)

    return update
