"""Exceptions raised by dicetalk_core.

Every error a user can meet derives from :class:`DiceTalkError`, and its message says what is wrong
and how to fix it, so front ends (the CLI, ComfyUI) can show it as is.
"""


class DiceTalkError(Exception):
    """Base class of all user-facing dicetalk_core errors."""


class CheckpointError(DiceTalkError):
    """A weight file is missing, unreadable, or does not belong to the expected model."""


class InputError(DiceTalkError):
    """An input (image, audio, emotion, setting) cannot be used as given."""


class CancelledError(DiceTalkError):
    """A long computation was stopped by the caller (for example ComfyUI's Cancel button)."""
