import sys
from pathlib import Path

import pytest
import torch

from ponder import heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def held_after_free(mb: int) -> float:
    """How much of a freed `mb`-MiB tensor the process still holds."""
    before = rss_mb()
    block = torch.ones(mb << 18)  # float32: mb MiB, touched
    assert rss_mb() - before > mb / 2
    del block
    return rss_mb() - before


def test_training_hands_large_blocks_back_and_decoding_settings_come_back_after():
    heap.keep_freed()
    assert held_after_free(200) > 150  # kept on the heap for the next decoding step
    heap.trim()
    with heap.returning_freed():
        assert held_after_free(200) < 50  # mapped apart: gone when freed
    assert held_after_free(200) > 150  # the decoding settings are back
    heap.trim()
