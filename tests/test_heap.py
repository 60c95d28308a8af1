import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")

# In a fresh process: what earlier tests freed in this one would serve the block from the heap's free lists.
CHECK = textwrap.dedent("""
    import torch
    from ponder import heap

    def held_after_free(mb):
        before = heap.resident()
        block = torch.ones(mb << 18)  # float32: mb MiB, touched
        assert heap.resident() - before > (mb << 20) / 2
        del block
        return (heap.resident() - before) / 2**20

    heap.keep_freed()
    assert held_after_free(200) > 150, "kept on the heap for the next decoding step"
    heap.trim()
    with heap.returning_freed():
        assert held_after_free(200) < 50, "mapped apart: gone when freed"
    assert held_after_free(200) > 150, "the decoding settings are back"
""")


def test_training_hands_large_blocks_back_and_decoding_settings_come_back_after():
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
