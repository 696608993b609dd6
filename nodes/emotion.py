"""Emotion nodes: presets with intensity, text/JSON timelines, mixes, saving, estimates from a clip, the bank.

The ``DICE_EMOTION`` wire carries a :class:`~dicetalk_core.emotion.Emotion` (a fixed prior or
keyframes that are resolved against the clip's length); DICE-Talk Emotion Bank turns it into the
``DICE_EMOTION_COND`` tokens the sampler uses, one set per frame when the emotion changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as mm

from ..dicetalk_core.emotion import (
    MAX_INTENSITY,
    Emotion,
    PresetLibrary,
    emotion_from_spec,
    mix_emotions,
    parse_emotion_spec,
    save_emotion,
    saved_emotion_path,
)
from ..dicetalk_core.emotion.classifiers import (
    EXPRESSION_FOLDER,
    SPEECH_EMOTION_FOLDER,
    classifier_folders,
    missing_files,
    what_is_missing,
)
from ..dicetalk_core.emotion.conditioning import as_emotion, emotion_conditioning
from ..dicetalk_core.errors import CheckpointError, DiceTalkError, InputError
from ..dicetalk_core.model_files import EMOTIONS_FOLDER
from .audio import AudioFeatures
from .model_management import DiceTalkBundle
from .paths import dice_talk_dirs, files_stamp, preset_dirs, preset_options, primary_dir

logger = logging.getLogger(__name__)

CATEGORY = "DICE-Talk"
BANK_MODES = ("full_bank", "retrieval")
AUTO = "auto"
NAMED_INPUTS = ("emotion_1", "emotion_2", "emotion_3")
"""Emotion inputs of DICE-Talk Emotion Timeline, used in its text by these names."""
DEFAULT_KEYFRAMES = "slightly sad, then very happy at 2s"
KEYFRAMES_TOOLTIP = (
    "The emotion over the clip, as text or JSON.\n"
    "Text: emotions joined by 'and' are mixed, 'then' starts the next one, 'at 2s' / 'at 30f' / 'at 50%' says "
    "when it is fully reached (otherwise evenly spaced), 'over 1s' how long the change takes (default 0.5 s), "
    "'suddenly' / 'gradually' change the transition. Adverbs set the intensity: barely, slightly, somewhat, "
    "very, extremely; or happy:1.2. Weights: '70% happy and 30% sad'. Names: the presets and their synonyms "
    "(anger, joy, scared...), saved emotions, and emotion_1..3 for the inputs below.\n"
    'JSON: [{"at": "0s", "emotion": "neutral"}, {"at": "2s", "emotion": {"happy": 0.7, "sad": 0.3}, '
    '"ease": "smooth", "over": "1s", "intensity": 1.2}] (ease: hold, linear, smooth).\n'
    "Frames are generated frames: 12.5 per second of speech."
)


def preset_library() -> PresetLibrary:
    return PresetLibrary(preset_dirs())


def _classifier_options(kind: str) -> list[str]:
    names = []
    for root in dice_talk_dirs():
        for folder in classifier_folders(root / kind):
            name = kind if folder == root / kind else f"{kind}/{folder.name}"
            if name not in names:
                names.append(name)
    return [AUTO, *names]


def _classifier_folder(kind: str, option: str) -> Path:
    """The folder of a classifier option (``auto``: the first complete one); CheckpointError naming what is missing."""
    for root in dice_talk_dirs():
        for folder in classifier_folders(root / kind):
            name = kind if folder == root / kind else f"{kind}/{folder.name}"
            if option == name or (option == AUTO and not missing_files(folder)):
                return folder
    raise CheckpointError(what_is_missing(primary_dir() / kind, kind))


_CLASSIFIERS: dict[str, tuple[str, object]] = {}  # kind -> (folder and config stamp, classifier): one per kind


def _load_classifier(kind: str, folder: Path):
    from ..dicetalk_core.emotion.expression import ExpressionClassifier
    from ..dicetalk_core.emotion.speech import SpeechEmotionClassifier

    stamp = f"{folder}:{(folder / 'config.json').stat().st_mtime_ns}"
    cached = _CLASSIFIERS.get(kind)
    if cached is None or cached[0] != stamp:
        loader = ExpressionClassifier if kind == EXPRESSION_FOLDER else SpeechEmotionClassifier
        cached = (stamp, loader.from_folder(folder))
        _CLASSIFIERS[kind] = cached
    return cached[1]


class DICEEmotionPreset:
    """An emotion preset (official or saved) at a chosen intensity."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION",)
    RETURN_NAMES = ("emotion",)
    OUTPUT_TOOLTIPS = ("The emotion (a 256-d prior, or a saved timeline).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (
                    preset_options(),
                    {
                        "tooltip": "angry, contempt, disgusted, fear, happy, neutral, sad or surprised (official "
                        "presets in models/dice_talk/emotions, read safely: no code in the file can run), or an "
                        "emotion you saved with DICE-Talk Save Emotion.",
                    },
                ),
                "intensity": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": MAX_INTENSITY,
                        "step": 0.05,
                        "tooltip": "0 = neutral, 1 = the preset as is, up to 1.5 = exaggerated (beyond that the "
                        "model has seen little and a warning is logged). Needs neutral.npy when not 1.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, preset: str, intensity: float = 1.0) -> str:
        """Changes when a file in the preset folders is replaced, added or removed, so a preset edited on
        disk is read again instead of ComfyUI reusing what it read before."""
        return files_stamp(preset_dirs())

    def load(self, preset: str, intensity: float = 1.0):
        library = preset_library()
        emotion = library.emotion(preset)
        if intensity != 1.0:
            emotion = emotion.with_intensity(intensity, library.neutral())
        return (emotion,)


class DICEEmotionTimeline:
    """An emotion described in words or JSON: a mix, or keyframes that change the expression during the clip.
    In the canvas, the timeline under the text draws the keyframes over the clip; drag, add and edit them there
    (it writes them into the text as JSON)."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION", "STRING")
    RETURN_NAMES = ("emotion", "summary")
    OUTPUT_TOOLTIPS = (
        "The emotion; connect it to DICE-Talk Emotion Bank (with the audio features for a timeline).",
        "How the text was understood.",
    )
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        named = {"tooltip": "An emotion to use in the text by this input's name (a fixed one: preset, mix, clip)."}
        return {
            "required": {
                "keyframes": ("STRING", {"default": DEFAULT_KEYFRAMES, "multiline": True, "tooltip": KEYFRAMES_TOOLTIP})
            },
            "optional": {name: ("DICE_EMOTION", dict(named)) for name in NAMED_INPUTS},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, keyframes=None):
        if not isinstance(keyframes, str):
            return True  # linked from another node: checked when it runs
        try:
            parse_emotion_spec(keyframes, preset_library().names())
        except DiceTalkError as err:
            return str(err)
        return True

    def build(self, keyframes: str, **named: Emotion):
        inputs = {name: as_emotion(value) for name, value in named.items() if value is not None}
        emotion = emotion_from_spec(keyframes, preset_library(), inputs)
        return (emotion, _summary(emotion))


def _summary(emotion: Emotion) -> str:
    kind = "fixed emotion" if emotion.is_static else "changes over time"
    return f"{emotion.describe()} [{kind}]"


class DICEEmotionMix:
    """Mixes emotions by weight (any kind: presets, timelines, estimates from a face or a voice)."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION",)
    RETURN_NAMES = ("emotion",)
    OUTPUT_TOOLTIPS = ("The weighted mix (weights are normalised to sum to 1).",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        def weight(default: float) -> tuple:
            return (
                "FLOAT",
                {
                    "default": default,
                    "min": 0.0,
                    "max": 10.0,
                    "step": 0.05,
                    "tooltip": "Relative weight; weights are normalised, so 1 and 1 is an even mix.",
                },
            )

        return {
            "required": {
                "emotion_1": ("DICE_EMOTION", {"tooltip": "First emotion."}),
                "weight_1": weight(1.0),
                "emotion_2": ("DICE_EMOTION", {"tooltip": "Second emotion."}),
                "weight_2": weight(1.0),
            },
            "optional": {
                "emotion_3": ("DICE_EMOTION", {"tooltip": "Optional third emotion."}),
                "weight_3": weight(1.0),
                "emotion_4": ("DICE_EMOTION", {"tooltip": "Optional fourth emotion."}),
                "weight_4": weight(1.0),
            },
        }

    def mix(self, emotion_1, weight_1, emotion_2, weight_2, emotion_3=None, weight_3=1.0, emotion_4=None, weight_4=1.0):
        parts = [(emotion_1, weight_1), (emotion_2, weight_2), (emotion_3, weight_3), (emotion_4, weight_4)]
        return (mix_emotions([(as_emotion(e), w) for e, w in parts if e is not None]),)


class DICESaveEmotion:
    """Saves an emotion (preset, mix, timeline, clip estimate) as a small preset file that the preset node lists."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("The saved file.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "emotion": ("DICE_EMOTION", {"tooltip": "The emotion to save."}),
                "name": (
                    "STRING",
                    {
                        "default": "my_emotion",
                        "tooltip": "Name (a letter, then letters, digits, _ or -), saved as "
                        "models/dice_talk/emotions/<name>.safetensors with where it came from in its metadata. "
                        "Use it in DICE-Talk Emotion Preset, or by name in DICE-Talk Emotion Timeline's text.",
                    },
                ),
                "overwrite": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Replace an emotion saved earlier under this name."},
                ),
            }
        }

    def save(self, emotion, name: str, overwrite: bool):
        library = preset_library()
        path = saved_emotion_path(name, primary_dir() / EMOTIONS_FOLDER, library, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        path = save_emotion(path, as_emotion(emotion))
        logger.info("Saved emotion '%s' to %s", name, path)
        return {"ui": {"text": [str(path)]}, "result": (str(path),)}


class DICEEmotionBank:
    """Turns an emotion into the emotion tokens the sampler attends to, through DICE-Talk's emotion bank."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION_COND",)
    RETURN_NAMES = ("emotion_cond",)
    OUTPUT_TOOLTIPS = ("Conditional and unconditional emotion tokens (one set per frame for a timeline).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("DICE_TALK_MODEL", {"tooltip": "From DICE-Talk Model Loader."}),
                "emotion": ("DICE_EMOTION", {"tooltip": "From an emotion node (preset, timeline, mix, from clip)."}),
                "mode": (
                    list(BANK_MODES),
                    {
                        "default": "full_bank",
                        "tooltip": "full_bank (official inference default): attend to all 64 emotion prototypes. "
                        "retrieval: only the prototype nearest to this emotion (the training-time path).",
                    },
                ),
            },
            "optional": {
                "audio_features": (
                    "DICE_AUDIO_FEATURES",
                    {
                        "tooltip": "From DICE-Talk Audio Encoder (the same as the sampler's). Needed when the "
                        "emotion changes over time: it gives the clip's length in frames.",
                    },
                ),
            },
        }

    def encode(self, model: DiceTalkBundle, emotion, mode: str, audio_features: AudioFeatures | None = None):
        model.load("emotion_model")
        n_frames = audio_features.num_frames if audio_features is not None else None
        tokens = emotion_conditioning(
            model.models.emotion_model, as_emotion(emotion), n_frames, retrieval=mode == "retrieval"
        )
        return (tokens,)


class DICEEmotionEmbedder:
    """Emotion from a reference clip: its faces (face-expression classifier) and/or its voice (speech-emotion
    classifier, giving an emotion that follows the speech over time)."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("DICE_EMOTION", "STRING")
    RETURN_NAMES = ("emotion", "report")
    OUTPUT_TOOLTIPS = (
        "The estimated emotion (fixed from the face; a timeline from the voice).",
        "What the classifiers saw: class probabilities, how they map to presets, unknown labels.",
    )
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_model": (
                    _classifier_options(EXPRESSION_FOLDER),
                    {
                        "default": AUTO,
                        "tooltip": "Face-expression image classifier (transformers format: config.json, "
                        "model.safetensors, preprocessor_config.json) in models/dice_talk/expression/ or a "
                        "subfolder. auto = the first found.",
                    },
                ),
                "voice_model": (
                    _classifier_options(SPEECH_EMOTION_FOLDER),
                    {
                        "default": AUTO,
                        "tooltip": "Speech-emotion audio classifier (transformers format) in "
                        "models/dice_talk/speech_emotion/ or a subfolder. auto = the first found.",
                    },
                ),
                "face_weight": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "With both frames and audio: how much the face counts (the voice gets the rest).",
                    },
                ),
                "segment_seconds": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 0.5,
                        "max": 30.0,
                        "step": 0.5,
                        "tooltip": "The voice is classified in pieces this long; the emotion moves linearly "
                        "from piece to piece.",
                    },
                ),
                "max_frames": (
                    "INT",
                    {
                        "default": 16,
                        "min": 1,
                        "max": 256,
                        "tooltip": "Reference frames to classify, spread evenly over the clip.",
                    },
                ),
            },
            "optional": {
                "frames": ("IMAGE", {"tooltip": "Frames of a reference clip (or one image) showing the emotion."}),
                "audio": ("AUDIO", {"tooltip": "Speech whose emotion the video should follow over time."}),
            },
        }

    def embed(
        self,
        face_model: str,
        voice_model: str,
        face_weight: float,
        segment_seconds: float,
        max_frames: int,
        frames=None,
        audio=None,
    ):
        if frames is None and audio is None:
            raise InputError("Connect reference frames (IMAGE), audio (AUDIO), or both to DICE-Talk Emotion Embedder.")
        library = preset_library()
        device = mm.get_torch_device()
        parts, reports = [], []
        if frames is not None:
            from ..dicetalk_core.emotion.expression import emotion_from_frames

            classifier = _load_classifier(EXPRESSION_FOLDER, _classifier_folder(EXPRESSION_FOLDER, face_model))
            try:
                face = emotion_from_frames(classifier, frames, library, max_frames=max_frames, device=device)
            finally:
                classifier.model.to(mm.unet_offload_device())
            parts.append((face.emotion, face_weight))
            reports.append(face.report)
        if audio is not None:
            from ..dicetalk_core.emotion.speech import emotion_from_speech

            classifier = _load_classifier(SPEECH_EMOTION_FOLDER, _classifier_folder(SPEECH_EMOTION_FOLDER, voice_model))
            try:
                voice = emotion_from_speech(
                    classifier,
                    audio["waveform"],
                    int(audio["sample_rate"]),
                    library,
                    segment_seconds=segment_seconds,
                    device=device,
                )
            finally:
                classifier.model.to(mm.unet_offload_device())
            parts.append((voice.emotion, 1.0 - face_weight if frames is not None else 1.0))
            reports.append(voice.report)
        emotion = parts[0][0] if len(parts) == 1 else mix_emotions(parts)
        return (emotion, "\n".join(reports))
