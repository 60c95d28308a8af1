"""Tree of Thoughts (Yao et al., 2023, "Tree of Thoughts: Deliberate Problem Solving with Large Language Models"):
breadth-first (Algorithm 1, ToT-BFS) and depth-first with pruning and backtracking (Algorithm 2, ToT-DFS).

A state proposes `k` next steps (the thought generator G; here `k` different steps drawn without replacement, so
the model's unlikely moves are proposed too) and the verifier scores every new state (the state evaluator V: a
PRM's step scores, aggregated). A state that gives an answer is a finished solution, judged as a whole.
- BFS: at every step each of the `b` states kept proposes, and the `b` best new states go on; after at most `T`
  steps the best-scored finished solution is the answer.
- DFS: go down the best-scored child first; a child scoring below `v_th` is pruned (and so are its worse-scored
  siblings); a dead end backtracks. The search stops at the first finished solution scoring `v_th` or more, or
  after `max_expansions` states have proposed; then the best-scored finished solution is the answer.

Knobs (`cfg.options`, the paper's names): `k` proposals per state (default `cfg.n`), `b` breadth (5), `T` step
limit (the task's `max_steps`), `v_th` value threshold (0.5), `max_expansions` (DFS, 64); `distinct` (default on)
draws the k proposals without replacement, off draws them independently; `lookahead` and `select` as for every
step-level search (`search/steps.py`).
"""

from __future__ import annotations

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, register
from ponder.search.steps import StepSearch
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


class _Tree(StepSearch):
    """The knobs BFS and DFS share; states propose `k` steps each."""

    def __init__(self, name: str, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig) -> None:
        super().__init__(name, task, problem, lm, verifier, cfg, limit_knob="T", distinct=True)
        self.k, self.b = int(cfg.options.get("k", cfg.n)), int(cfg.options.get("b", 5))
        if self.k < 1 or self.b < 1:
            raise ConfigError(f"{name} needs k, b, T >= 1; got k={self.k}, b={self.b}, T={self.limit}")
        self.trace.extra["k"] = self.k

    async def propose(self, states: list[tuple[int, list[str]]], t: int) -> list[tuple[float, int, list[str]]]:
        going, _ = await self.expand(states, self.k, ("tot", t))
        return going


@register("tot_bfs", needs_verifier=True)
async def tot_bfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    tree = _Tree("tot_bfs", task, problem, lm, verifier, cfg)
    tree.trace.extra["b"] = tree.b
    frontier: list[tuple[int, list[str]]] = [(0, [])]
    for t in range(tree.limit):
        going = await tree.propose(frontier, t)
        frontier = [(node, steps) for _, node, steps in going[: tree.b]]
        if not frontier:
            break
    return tree.answer()


@register("tot_dfs", needs_verifier=True)
async def tot_dfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    tree = _Tree("tot_dfs", task, problem, lm, verifier, cfg)
    v_th = float(cfg.options.get("v_th", 0.5))
    budget = int(cfg.options.get("max_expansions", 64))
    tree.trace.extra.update({"v_th": v_th, "max_expansions": budget})
    expanded = 0

    async def dfs(node: int, steps: list[str], t: int) -> bool:
        """True once a finished solution scores v_th or more (the search stops)."""
        nonlocal expanded
        if t >= tree.limit or expanded >= budget:
            return False
        expanded += 1
        before = len(tree.finished)
        going = await tree.propose([(node, steps)], t)
        if any((f.score or 0.0) >= v_th for f in tree.finished[before:]):
            return True
        for score, child, child_steps in going:
            if score < v_th:  # pruned, and so are the siblings scored below it
                break
            if await dfs(child, child_steps, t + 1):
                return True
        return False  # backtrack

    await dfs(0, [], 0)
    tree.trace.extra["expanded"] = expanded
    return tree.answer()
