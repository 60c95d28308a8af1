"""The architecture as a contract: imports flow one way through the layers written in pyproject.toml
(`[tool.importlinter]`: tasks -> lm -> verifiers -> search -> collect -> train -> evaluate -> bench -> cli)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_layers():
    # in its own process: import-linter configures logging with dictConfig, which disables every logger that
    # exists (the `ponder.*` ones included) for the rest of the process
    check = ("from importlinter.cli import lint_imports; "
             "raise SystemExit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


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
