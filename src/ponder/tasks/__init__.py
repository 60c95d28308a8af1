"""Built-in tasks and their registry."""

from __future__ import annotations

from collections.abc import Callable

from ponder.tasks.arith import Arith
from ponder.tasks.base import Problem, Task, TaskError
from ponder.tasks.game24 import Game24

TASKS: dict[str, Callable[..., Task]] = {"game24": Game24, "arith": Arith}


def get_task(name: str, **kwargs: object) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)


__all__ = ["TASKS", "Arith", "Game24", "Problem", "Task", "TaskError", "get_task"]
