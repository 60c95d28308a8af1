"""Diverse Verifier Tree Search (Beeching, Tunstall and Rush, 2024, "Scaling test-time compute with open models";
search-and-learn's `dvts`): N/M independent subtrees, each a greedy beam.

Each subtree starts at the root on its own: at every step its state proposes M next steps, the verifier scores
them, and the subtree goes on from the best one. A subtree ends when its best new state is a finished solution
(or nothing goes on). Subtrees never share nodes, so the N/M searches stay diverse where one beam search would
collapse onto one prefix. Only completed solutions are final candidates (search-and-learn's DVTS returned
unfinished beams too, their issue #57); the answer is chosen among them (`select`, best score by default).

Knobs (`cfg.n` = N; `cfg.options`): `beam_width` M (4), `lookahead` (0), `num_iterations`, `select`, `distinct`
(off: proposals sampled independently, as in the recipe).
"""

from __future__ import annotations

import asyncio

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, register
from ponder.search.steps import StepSearch, n_and_m
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@register("dvts", needs_verifier=True)
async def dvts(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
               cfg: SearchConfig) -> Trace:
    search = StepSearch("dvts", task, problem, lm, verifier, cfg, limit_knob="num_iterations")
    n, m = n_and_m("dvts", cfg)
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
