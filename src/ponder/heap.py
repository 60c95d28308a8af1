"""How this process's C heap (glibc's malloc) keeps memory it frees; a no-op without glibc.

Decoding allocates and frees cache-sized tensors of the same sizes at every step: kept on the heap for reuse they cost
no fresh pages (one 512-row self-consistency batch: 394k page faults and 0.8 s of system time with glibc's defaults,
15k and 0.04 s kept, 8% faster), so Ponder's commands keep them (`keep_freed`). Training allocates activations whose
sizes follow each batch's width: kept, every freed block stays with the process, which then holds its largest step's
memory for good, and widths that change with every batch fragment the heap until it grows without bound (a 1,024-token
SFT run reached 24 GB after 540 steps and was killed by the kernel; SFT now rounds its widths, `sft.WIDTH_STEP`). A
training loop maps large blocks apart while it runs, so they go back when freed (`returning_freed`), and restores
what was set before it."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_keeping = False


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _set(mmap_threshold: int, trim_threshold: int) -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)


def keep_freed() -> None:
    """Allocations below 1 GiB come from the heap, and up to 2 GiB of freed heap stays with the process."""
    global _keeping
    _set(1 << 30, 1 << 31)
    _keeping = True


def trim() -> None:
    """`malloc_trim(0)`: the heap's free pages go back to the system."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextlib.contextmanager
def returning_freed() -> Iterator[None]:
    """Blocks above 32 MiB are mapped apart and unmapped when freed, and freed heap above 128 MiB goes back; on exit the
    heap is trimmed and `keep_freed`'s settings come back if they were in force."""
    _set(32 << 20, 128 << 20)
    try:
        yield
    finally:
        trim()
        if _keeping:
            keep_freed()


def resident() -> int:
    """The process's resident memory in bytes (`VmRSS`); 0 where /proc does not say."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
