from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data files the tests read (`tests/data`, their sources and licences in its SOURCES.md)."""
    return ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def game24_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("game24-policy")


@pytest.fixture(scope="session")
def arith_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("arith-policy")


@pytest.fixture(scope="session")
def arith_rstar_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("arith-rstar-policy")


@pytest.fixture(scope="session")
def game24_revision_backend():
    from ponder.lm.hf import HFBackend

    return HFBackend("game24-revision-policy")


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


def _saved_step(out: Path) -> int | None:
    """The step of the training state Ponder's own loop left in `out` (None: none yet)."""
    import torch

    state = out / "train-state.pt"
    return torch.load(state, weights_only=False)["step"] if state.exists() else None


def _kill_then_resume(args: list[str], tmp_path: Path, steps: int,
                      saved_step: Callable[[Path], int | None] = _saved_step,
                      state: str = "train-state.pt") -> tuple[Path, Path]:
    """Train with `ponder ARGS --out DIR` twice: once whole, once SIGKILLed after its first saved state (`saved_step`
    reads its step) and run again to the end, which removes the state (`state`, in DIR). Returns the two output
    folders."""
    import sys

    cmd = [sys.executable, "-c", "from ponder.cli import app; app()", *args, "--out"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*cmd, str(whole)], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while (step := saved_step(killed)) is None and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert step is not None and 0 < step < steps
    subprocess.run([*cmd, str(killed)], check=True, capture_output=True)
    assert not (killed / state).exists()
    return whole, killed


@pytest.fixture
def kill_then_resume():
    return _kill_then_resume
