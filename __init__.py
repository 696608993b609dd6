"""comfyui-dicetalk: DICE-Talk emotional talking-portrait video for ComfyUI.

The nodes need ComfyUI's runtime (``folder_paths``, ``comfy``); outside ComfyUI (tests, the CLI,
tools that import the folder as a package) this registers nothing and ``dicetalk_core`` stays usable.
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
