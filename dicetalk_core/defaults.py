"""The official inference settings (the release's ``dice_talk.yaml`` and inference script), in one place.

Standard library only, so the command line's ``--check``, the node definitions and the setup script
read them without loading torch. :class:`~dicetalk_core.sampler.SamplerSettings` and
:class:`~dicetalk_core.pipeline.GenerationSettings` take their defaults from here.
"""

SEED = 72589
"""The seed of the official inference script: same inputs and seed, same video."""
STEPS = 25
"""Denoising steps."""
REF_GUIDANCE = 3.0
"""Classifier-free guidance scale of the reference image."""
AUDIO_GUIDANCE = 6.0
"""Classifier-free guidance scale of audio and emotion together (the release has no separate emotion scale)."""
RESOLUTION = 512
"""Short side of the generated video, in pixels."""
RESOLUTION_MULTIPLE = 64
"""Both sides of the generated video are multiples of this."""
WINDOW = 25
"""Frames per UNet call (``n_sample_frames``)."""
OVERLAP = 0
"""Frames shared by neighbouring windows."""
SHIFT_OFFSET = 7
"""Per-step rotation of the window grid."""
MOTION_BUCKET_ID = 8
"""SVD's motion-bucket micro-condition."""
MOTION_BUCKET_ID_EXP = 16
"""DICE-Talk's expression motion-bucket micro-condition."""
DECODE_CHUNK = 10
"""Frames per temporal-decoder clip of the VAE decode."""
