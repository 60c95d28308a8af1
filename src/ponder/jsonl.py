"""Resumable JSONL: one row per finished unit of work (an eval job, a labelled solution), written as it finishes.

A run killed at any moment (even by SIGKILL in the middle of a write) resumes: complete rows are kept, a
torn last line is cut off, and finished keys are skipped. Rows are never duplicated. Evaluation and the
data engine both write through it.

A unit of work that raised is written as an *error row* (`error_fields`: the message and the error's type): it is
not done, so a resumed run retries it, and the row the retry writes replaces it (the file keeps both lines; the
last line of a key wins).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.tasks.base import TaskError


def error_fields(err: BaseException) -> dict[str, str]:
    """What an error row says about the error: its message and its type."""
    return {"error": str(err) or type(err).__name__, "error_type": type(err).__name__}


def is_error(row: dict[str, Any]) -> bool:
    return "error" in row


def eval_key(row: dict[str, Any]) -> Hashable:
    """An evaluation row is one (method, budget, problem)."""
    return (row["method"], int(row["budget"]), row["problem_id"])


class ResumableJsonl:
    """The rows of a JSONL file, the latest per key; `done`: the keys whose latest row is not an error row."""

    def __init__(self, path: Path, key: Callable[[dict[str, Any]], Hashable] = eval_key,
                 what: str = "results row") -> None:
        self.path = path
        self.key = key
        self.what = what
        self._latest: dict[Hashable, dict[str, Any]] = {}
        if path.exists():
            self._recover()
        self.done: set[Hashable] = {k for k, r in self._latest.items() if not is_error(r)}

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The latest row of every key, in the order the keys were first written."""
        return list(self._latest.values())

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The error rows that no later row has replaced."""
        return [r for r in self._latest.values() if is_error(r)]

    def _recover(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        for lineno, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):  # torn final write: drop it, the job will run again
                break
            try:
                row = json.loads(line)
                key = self.key(row)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise TaskError(f"{self.path}:{lineno}: not a {self.what} ({err}); fix or remove the file") from err
            self._latest[key] = row
            good_end += len(line)
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def append(self, row: dict[str, Any]) -> None:
        """Write a row, unless its key is done; it replaces an error row of its key."""
        key = self.key(row)
        if key in self.done:
            return
        line = (json.dumps(row) + "\n").encode()  # field order as given: MATH-APS keeps its own
        # One write of a whole line, flushed to the OS: a kill leaves either the full row or a torn tail.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self._latest[key] = row
        if not is_error(row):
            self.done.add(key)


def with_defaults(saved: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """A saved config (a dataclass's `asdict`) with every field it lacks, nested ones included, at its default."""
    out = dict(saved)
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name not in out:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if default is not MISSING:
                out[f.name] = asdict(default) if is_dataclass(default) else default
        elif is_dataclass(value) and isinstance(out[f.name], dict):
            out[f.name] = with_defaults(out[f.name], value)
    return out


def check_config(out: Path, cfg: Any, free: tuple[str, ...] = (), save: bool = True) -> None:
    """A run folder belongs to one config (a dataclass): resuming with another would mix incomparable rows.

    A field added to the config class after the run began (at the top or inside a nested config) is absent from the
    saved file; it matches while it keeps its default, so a new option does not orphan old runs. Fields in `free`
    (how the run is scheduled, not what it computes) may change on resuming; the file keeps the first run's values.
    A new folder's config is saved unless `save` is False (checked only: a run whose model then fails to load must
    not claim the folder).
    """
    config = asdict(cfg)
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        filled = with_defaults(saved, cfg)
        diff = {k: (saved.get(k), v) for k, v in config.items() if k not in free and filled.get(k, MISSING) != v}
        if diff:
            raise ConfigError(f"{out} holds a run with another config {diff} (saved, now); use another --out")
    elif save:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
