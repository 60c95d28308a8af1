from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not next to this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def game24_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("game24-policy")


@pytest.fixture(scope="session")
def arith_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("arith-policy")


def _sigkill_after_lines(cmd: list[str], path: Path, lines: int) -> None:
    """Start `cmd` and SIGKILL it once `path` holds `lines` lines: a kill in the middle of a resumable run."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.fixture
def sigkill_after_lines():
    return _sigkill_after_lines
