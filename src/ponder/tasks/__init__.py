"""Built-in tasks and their registry: exact tasks whose every step can be checked (game24, arith) and real data
graded by math-verify (gsm8k, math500)."""

from __future__ import annotations

from collections.abc import Callable

from ponder.tasks.arith import Arith
from ponder.tasks.base import NoReference, Problem, Task, TaskError
from ponder.tasks.game24 import Game24
from ponder.tasks.textmath import GSM8K, MATH500

TASKS: dict[str, Callable[..., Task]] = {"game24": Game24, "arith": Arith, "gsm8k": GSM8K, "math500": MATH500}


def get_task(name: str, **kwargs: object) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**kwargs)
    except TypeError as err:
        raise TaskError(f"task {name!r} does not take {', '.join(kwargs)}: {err}") from err


__all__ = ["GSM8K", "MATH500", "TASKS", "Arith", "Game24", "NoReference", "Problem", "Task", "TaskError", "get_task"]
