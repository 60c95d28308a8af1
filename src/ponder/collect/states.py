"""Oracle-labelled step prefixes without a policy: random walks through a task's own states.

A task with an exact step oracle (`StepOracle`), which also enumerates next steps (`step_candidates`: every legal
move and the slips a policy makes), gives unlimited exact step labels for free. A walk takes random candidates,
records each prefix with the oracle's labels, and moves on along a step that can still succeed. This covers every
training problem, where policy samples cover a few hundred: a tiny PRM trained on policy samples of 200
game24 puzzles memorises them (step AUROC 0.91 on its training solutions, 0.59 on other training puzzles).
"""

from __future__ import annotations

import random

from ponder.collect.mc import new_record
from ponder.collect.records import StepRecord
from ponder.tasks import StepOracle, require
from ponder.tasks.base import Problem, Task


def state_walks(task: Task, problem: Problem, walks: int, seed: int, derail: float = 0.3) -> list[StepRecord]:
    """`walks` random walks; each recorded prefix carries the oracle's labels. A walk goes on along a step that
    can still succeed, or (with probability `derail`, and always from a dead end) along the step it recorded,
    right or wrong: most of a weak policy's bad steps come *after* its first error, and a PRM must see those."""
    task = require(task, StepOracle, "labelling random walks through its states (`ponder collect states`)")
    rng = random.Random(f"{seed}|{problem.id}")
    records: dict[tuple[str, ...], StepRecord] = {}
    for walk in range(walks):
        prefix: list[str] = []
        while not task.is_final(prefix):
            candidates = task.step_candidates(problem, prefix)
            if not candidates:
                break
            alive = [c for c in candidates if task.check_step(problem, [*prefix, c])]
            # Half the recorded steps are drawn among those that can still succeed: most candidates are
            # slips or dead ends, and a PRM needs to see both kinds.
            step = rng.choice(alive if alive and rng.random() < 0.5 else candidates)
            steps = [*prefix, step]
            labels = task.step_labels(problem, steps)
            records.setdefault(tuple(steps), new_record(task, problem, steps, labels, "states", 0, sample=walk))
            prefix.append(rng.choice(alive) if alive and rng.random() >= derail else step)
    return list(records.values())
