"""The architecture as a contract: imports flow one way through the layers written in pyproject.toml
(`[tool.importlinter]`: tasks -> lm -> verifiers -> search -> collect -> train -> evaluate -> bench -> cli)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_layers(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_task_specific_branches_outside_the_tasks():
    offenders = []
    for path in (ROOT / "src" / "ponder").rglob("*.py"):
        if "tasks" in path.relative_to(ROOT / "src" / "ponder").parts:
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {line.strip()}" for line in text.splitlines()
                      if "isinstance(" in line and any(f"{name})" in line or f"{name}," in line
                                                         for name in ("Game24", "Arith"))]
    assert not offenders, os.linesep.join(offenders)
