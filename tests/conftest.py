from __future__ import annotations

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
