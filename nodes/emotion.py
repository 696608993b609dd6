"""Emotion nodes: preset -> prior -> emotion tokens; and the emotion embedder's slot."""

from __future__ import annotations

from ..dicetalk_core.emotion import find_preset, load_emotion_prior
from ..dicetalk_core.errors import CheckpointError
from ..dicetalk_core.pipeline import emotion_tokens
from .model_management import DiceTalkBundle
from .paths import preset_dirs, preset_options, primary_dir

CATEGORY = "DICE-Talk"
BANK_MODES = ("full_bank", "retrieval")
EMBEDDER_FOLDER = "emotion_embedder"


class DICEEmotionPreset:
    """One of the official emotion presets (files in models/dice_talk/emotions/) as an emotion prior."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION",)
    RETURN_NAMES = ("emotion",)
    OUTPUT_TOOLTIPS = ("A 256-d emotion prior.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (
                    preset_options(),
                    {
                        "tooltip": "angry, contempt, disgusted, fear, happy, neutral, sad or surprised "
                        "(official presets, read "
                        "safely: no code in the file can run), or a preset you saved.",
                    },
                )
            }
        }

    def load(self, preset: str):
        return (load_emotion_prior(find_preset(preset, preset_dirs())),)


class DICEEmotionBank:
    """Turns an emotion prior into the emotion tokens the sampler attends to, through DICE-Talk's emotion bank."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION_COND",)
    RETURN_NAMES = ("emotion_cond",)
    OUTPUT_TOOLTIPS = ("Conditional and unconditional emotion tokens.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("DICE_TALK_MODEL", {"tooltip": "From DICE-Talk Model Loader."}),
                "emotion": ("DICE_EMOTION", {"tooltip": "An emotion prior, e.g. from DICE-Talk Emotion Preset."}),
                "mode": (
                    list(BANK_MODES),
                    {
                        "default": "full_bank",
                        "tooltip": "full_bank (official inference default): attend to all 64 emotion prototypes. "
                        "retrieval: only the prototype nearest to this emotion (the training-time path).",
                    },
                ),
            }
        }

    def encode(self, model: DiceTalkBundle, emotion, mode: str):
        model.load("emotion_model")
        tokens = emotion_tokens(model.models.emotion_model, emotion, retrieval=mode == "retrieval")
        return (tokens,)


class DICEEmotionEmbedder:
    """Emotion prior from a reference clip (frames, optionally with its audio), with the disentangled embedder."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION",)
    RETURN_NAMES = ("emotion",)
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"frames": ("IMAGE", {"tooltip": "Frames of a reference clip showing the emotion."})},
            "optional": {"audio": ("AUDIO", {"tooltip": "The clip's audio; helps the embedder (paper §3.1)."})},
        }

    def embed(self, frames, audio=None):
        folder = primary_dir() / EMBEDDER_FOLDER
        raise CheckpointError(
            "DICE-Talk's emotion embedder weights were not released by the authors, so an emotion cannot yet be "
            f"read from a reference clip. Looked in {folder.resolve()}. Use DICE-Talk Emotion Preset instead."
        )
