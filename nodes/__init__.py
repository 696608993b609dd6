"""ComfyUI nodes of the DICE-Talk pack (V1 API): thin adapters over ``dicetalk_core``."""

from .audio import DICEAudioEncoder
from .emotion import (
    DICEEmotionBank,
    DICEEmotionEmbedder,
    DICEEmotionMix,
    DICEEmotionPreset,
    DICEEmotionTimeline,
    DICESaveEmotion,
)
from .face import DICEFaceCrop, DICEPasteBack
from .fast_mode import DICEFastMode
from .loaders import DICEModelLoader
from .paths import register_folders
from .routes import register_routes
from .sampler import DICEFrameInterpolation, DICESampler

register_folders()
register_routes()

NODE_CLASS_MAPPINGS = {
    "DICEModelLoader": DICEModelLoader,
    "DICEAudioEncoder": DICEAudioEncoder,
    "DICEEmotionPreset": DICEEmotionPreset,
    "DICEEmotionBank": DICEEmotionBank,
    "DICEEmotionEmbedder": DICEEmotionEmbedder,
    "DICEEmotionTimeline": DICEEmotionTimeline,
    "DICEEmotionMix": DICEEmotionMix,
    "DICESaveEmotion": DICESaveEmotion,
    "DICEFaceCrop": DICEFaceCrop,
    "DICEPasteBack": DICEPasteBack,
    "DICESampler": DICESampler,
    "DICEFastMode": DICEFastMode,
    "DICEFrameInterpolation": DICEFrameInterpolation,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "DICEModelLoader": "DICE-Talk Model Loader",
    "DICEAudioEncoder": "DICE-Talk Audio Encoder",
    "DICEEmotionPreset": "DICE-Talk Emotion Preset",
    "DICEEmotionBank": "DICE-Talk Emotion Bank",
    "DICEEmotionEmbedder": "DICE-Talk Emotion From Clip",
    "DICEEmotionTimeline": "DICE-Talk Emotion Timeline",
    "DICEEmotionMix": "DICE-Talk Emotion Mix",
    "DICESaveEmotion": "DICE-Talk Save Emotion",
    "DICEFaceCrop": "DICE-Talk Face Crop",
    "DICEPasteBack": "DICE-Talk Paste Back",
    "DICESampler": "DICE-Talk Sampler",
    "DICEFastMode": "DICE-Talk Fast Mode",
    "DICEFrameInterpolation": "DICE-Talk Frame Interpolation (RIFE)",
}
