"""Built-in tasks and their registry: exact tasks whose every step can be checked (game24, arith), real data
graded by its reference answers (gsm8k, math500), and any question-answer file of your own (`data:FILE`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ponder.tasks.arith import Arith
from ponder.tasks.base import NoReference, Problem, Task, TaskError
from ponder.tasks.data import DataTask
from ponder.tasks.game24 import Game24
from ponder.tasks.textmath import GSM8K, MATH500

TASKS: dict[str, Callable[..., Task]] = {"game24": Game24, "arith": Arith, "gsm8k": GSM8K, "math500": MATH500}


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


__all__ = ["GSM8K", "MATH500", "TASKS", "Arith", "DataTask", "Game24", "NoReference", "Problem", "Task", "TaskError",
           "get_task"]
