"""A pickle payload for tests proving that untrusted files never run code when loaded."""

from __future__ import annotations

import os


class MarkerPayload:
    """Unpickling this object would create the folder ``marker``: its absence proves nothing ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))
