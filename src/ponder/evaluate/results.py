"""A resumable JSONL results file: one row per finished (method, budget, problem), written as it finishes.

A run killed at any moment (even by SIGKILL in the middle of a write) resumes: complete rows are kept, a
torn last line is cut off, and finished keys are skipped. Rows are never duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ponder.tasks.base import TaskError

Key = tuple[str, int, str]


def row_key(row: dict[str, Any]) -> Key:
    return (row["method"], int(row["budget"]), row["problem_id"])


class ResultsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            self._recover()
        self.done: set[Key] = {row_key(r) for r in self.rows}

    def _recover(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        for lineno, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):  # torn final write: drop it, the job will run again
                break
            try:
                row = json.loads(line)
                row_key(row)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise TaskError(f"{self.path}:{lineno}: not a results row ({err}); fix or remove the file") from err
            self.rows.append(row)
            good_end += len(line)
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def append(self, row: dict[str, Any]) -> None:
        key = row_key(row)
        if key in self.done:
            return
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        # One write of a whole line, flushed to the OS: a kill leaves either the full row or a torn tail.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self.rows.append(row)
        self.done.add(key)
