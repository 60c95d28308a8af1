"""The step-labelled solution: what every labeller writes and every verifier trainer reads.

A label is the probability that the step is good, in [0, 1]: the exact oracle and PRM800K give 0 or 1,
Monte-Carlo labellers give the fraction of rollouts that reached a correct answer (a *soft* label). The
*hard* label is Math-Shepherd's: a step is good when any rollout from it succeeded (soft label > 0).
`None` marks a step nobody labelled (OmegaPRM labels only the states it visited); trainers skip it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ponder.tasks.base import TaskError

T = TypeVar("T")


@dataclass
class StepRecord:
    question: str
    steps: list[str]
    labels: list[float | None]
    task: str = ""  # a Ponder task name when the record came from a built-in task
    problem_id: str = ""
    answer: str | None = None  # the reference answer, when known
    outcome: bool | None = None  # whether the solution's own final answer is right
    source: str = ""  # who labelled it: oracle, mc, omegaprm, prm800k, ...
    rollouts: int = 0  # rollouts spent labelling it
    meta: dict[str, Any] = field(default_factory=dict)  # fields of a foreign format kept for writing back

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.steps):
            raise ValueError(f"{len(self.steps)} steps but {len(self.labels)} labels")
        for label in self.labels:
            if label is not None and not 0.0 <= label <= 1.0:
                raise ValueError(f"label {label!r} is outside [0, 1]")

    def hard(self, threshold: float = 0.0) -> list[bool | None]:
        """Hard labels: good when the soft label exceeds `threshold` (0 = Math-Shepherd's "any rollout").

        An unlabelled step before a good one is good too: a correct completion passes through it."""
        out: list[bool | None] = [None if x is None else x > threshold for x in self.labels]
        for i in range(len(out) - 2, -1, -1):
            if out[i] is None and out[i + 1]:
                out[i] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a malformed line is a TaskError naming file and line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise TaskError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskError(f"{path}:{lineno}: not JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(obj, dict):
            raise TaskError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def record_from_dict(obj: dict[str, Any]) -> StepRecord:
    known = set(StepRecord.__dataclass_fields__)
    unknown = set(obj) - known
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    if not isinstance(obj.get("steps"), list) or not isinstance(obj.get("labels"), list):
        raise ValueError("'steps' and 'labels' must be lists")
    return StepRecord(**obj)


def parse_jsonl(path: Path, parse: Callable[[dict[str, Any]], T], what: str) -> list[T]:
    """Each line of a JSONL file through `parse`; a line it rejects is a TaskError naming file, line and why."""
    out = []
    for lineno, obj in iter_jsonl(path):
        try:
            out.append(parse(obj))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise TaskError(f"{path}:{lineno}: not a {what} record ({detail})") from err
    return out


def read_records(path: Path) -> list[StepRecord]:
    """Ponder's own step-record JSONL (what `ponder collect` writes)."""
    return parse_jsonl(path, record_from_dict, "step")


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
