"""What a pass costs in memory: peak RSS (resettable on Linux) and the resident pages of a memory-mapped pack."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import resource
from pathlib import Path

import numpy as np


def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux ``clear_refs`` 5); False where unsupported.

    Heap that earlier work freed (sessions tried while tuning) is handed back to the system first
    (glibc ``malloc_trim``), so the peak that follows is the pass's own.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(field: str = "VmHWM") -> int:
    """This process's peak resident set size since start or the last reset (``VmRSS``: the current one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mapped_file_bytes() -> int:
    """Resident file-backed bytes now (``/proc/self/statm``'s shared pages: the mapped pack, libraries): cheap enough
    to read between pieces; 0 where unavailable."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[2]) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0


def mapping_of(images: np.ndarray) -> mmap.mmap | None:
    """The mmap behind a memory-mapped array (``np.load(mmap_mode='r')``), or None for an in-memory one."""
    base: object = images
    while base is not None:
        found = getattr(base, "_mmap", None)
        if isinstance(found, mmap.mmap):
            return found
        base = getattr(base, "base", None)
    return None
