"""Sample and frame rates of a DICE-Talk run, and the units that link them (standard library only).

Speech is read at 16 kHz and cut into audio frames of 40 ms (25 per second); every second audio
frame becomes one generated video frame (12.5 per second); frame interpolation doubles that.
"""

SAMPLE_RATE = 16_000
"""Rate of the waveform that Whisper reads."""
AUDIO_FPS = 25
"""Audio frames per second (the official ``audio_len`` unit)."""
SAMPLES_PER_FRAME = SAMPLE_RATE // AUDIO_FPS
"""640 samples (40 ms) per audio frame."""
FRAME_STEP = 2
"""Audio frames per generated video frame."""
GENERATION_FPS = AUDIO_FPS / FRAME_STEP
"""Generated video frames per second of speech (12.5)."""
AUDIO_WINDOW = 10
"""Whisper encoder positions (20 ms each) in one generated frame's audio window."""
MAX_AUDIO_FRAMES = 10_000
"""At most this many audio frames (400 s) are used, as the official ``frame_num``."""


def interpolated_fps(fps: float) -> float:
    """Frame rate after frame interpolation: the 2N-1 frames of N frames at ``fps`` play at ``2 fps``."""
    return 2.0 * fps
