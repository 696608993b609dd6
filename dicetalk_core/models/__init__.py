"""The DICE-Talk modules that sit beside the UNet, one per official checkpoint file."""

from .audio_projection import AudioProjection, TokenProjection
from .emotion_bank import BankLookup, EmotionBank
from .emotion_model import BankAttention, EmotionClassifier, EmotionModel, EmotionTokens
from .pose_guider import PoseGuider

__all__ = [
    "AudioProjection",
    "BankAttention",
    "BankLookup",
    "EmotionBank",
    "EmotionClassifier",
    "EmotionModel",
    "EmotionTokens",
    "PoseGuider",
    "TokenProjection",
]
