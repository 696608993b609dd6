"""This process's memory from Linux ``/proc`` (standard library only: the official venv's driver imports it too)."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from pathlib import Path


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (Linux VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (``clear_refs`` 5), where allowed."""
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
