"""Diverse Verifier Tree Search (Beeching, Tunstall and Rush, 2024, "Scaling test-time compute with open models";
search-and-learn's `dvts`): N/M independent subtrees, each a greedy beam.

Each subtree starts at the root on its own: at every step its state proposes M next steps, the verifier scores
them, and the subtree goes on from the best one. A subtree ends when its best new state is a finished solution
(or nothing goes on). Subtrees never share nodes, so the N/M searches stay diverse where one beam search would
collapse onto one prefix. Only completed solutions are final candidates (search-and-learn's DVTS returned
unfinished beams too, their issue #57); the answer is chosen among them (`select`, best score by default).

Knobs: `DVTSConfig`, beam search's (the budget `cfg.n` is N).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, method_knobs, register
from ponder.search.beam import BeamConfig
from ponder.search.steps import StepSearch
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class DVTSConfig(BeamConfig):
    """DVTS's knobs: beam search's."""

    budget: ClassVar[str] = "N, the steps proposed at every step over N/width subtrees of width each; N >= width"


@register("dvts", config=DVTSConfig, needs_verifier=True)
async def dvts(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
               cfg: SearchConfig) -> Trace:
    knobs = method_knobs(cfg, DVTSConfig)
    search = StepSearch(task, problem, lm, verifier, cfg, knobs)
    n, m = cfg.n, knobs.width
    search.trace.extra.update({"N": n, "M": m, "subtrees": n // m})

    async def subtree(s: int) -> None:
        state: tuple[int, list[str]] = (0, [])
        for i in range(search.limit):
            going, done = await search.expand([state], m, ("dvts", s, i))
            for _, node, _ in going:
                search.trace.nodes[node].extra["subtree"] = s
            for f in done:
                search.trace.nodes[f.node].extra["subtree"] = s
            best_done = max((f.score or 0.0 for f in done), default=None)
            if not going or (best_done is not None and best_done >= going[0][0]):
                return  # this subtree's best step finished a solution (or it has nowhere to go)
            _, node, steps = going[0]
            state = (node, steps)

    await asyncio.gather(*(subtree(s) for s in range(n // m)))
    return search.answer()
