"""Built-in tasks and their registry: exact tasks whose every step can be checked (game24, arith), real data
graded by its reference answers (gsm8k, math500), and any question-answer file of your own (`data:FILE`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from ponder.tasks.arith import Arith
from ponder.tasks.base import (
    CAPABILITIES,
    Backtracking,
    Hintable,
    NoReference,
    Problem,
    ReferenceSolver,
    Revisable,
    RStarActions,
    StepOracle,
    Task,
    TaskError,
)
from ponder.tasks.data import DataTask
from ponder.tasks.game24 import Game24
from ponder.tasks.textmath import GSM8K, MATH500

TASKS: dict[str, Callable[..., Task]] = {"game24": Game24, "arith": Arith, "gsm8k": GSM8K, "math500": MATH500}
C = TypeVar("C", bound=Task)


def get_task(name: str, **kwargs: object) -> Task:
    """The task a name gives: a built-in one (`TASKS`), or `data:FILE`, the question-answer records of a file
    (`ponder.tasks.data`)."""
    if name.startswith("data:"):
        make: Callable[..., Task] = partial(DataTask, name.removeprefix("data:"))
    elif name in TASKS:
        make = TASKS[name]
    else:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}, or data:FILE")
    try:
        return make(**kwargs)
    except TypeError as err:
        raise TaskError(f"task {name!r} does not take {', '.join(kwargs)}: {err}") from err


def require(task: Task, capability: type[C], needed_by: str) -> C:
    """`task` as one with `capability` (a class of `ponder.tasks.base.CAPABILITIES`); a TaskError naming what
    needs it and the built-in tasks that have it when it has not."""
    if isinstance(task, capability):
        return task
    having = [name for name, make in TASKS.items() if isinstance(make, type) and issubclass(make, capability)]
    raise TaskError(f"task {task.name!r} has no {CAPABILITIES[capability]}, which {needed_by} needs; "
                    f"tasks with one: {', '.join(having) or 'none built in'}")


__all__ = ["GSM8K", "MATH500", "TASKS", "Arith", "Backtracking", "DataTask", "Game24", "Hintable", "NoReference",
           "Problem", "RStarActions", "ReferenceSolver", "Revisable", "StepOracle", "Task", "TaskError",
           "get_task", "require"]
