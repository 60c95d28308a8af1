"""Tree of Thoughts (Yao et al., 2023, "Tree of Thoughts: Deliberate Problem Solving with Large Language Models"):
breadth-first (Algorithm 1, ToT-BFS) and depth-first with pruning and backtracking (Algorithm 2, ToT-DFS).

A state proposes `width` (k) next steps (the thought generator G; here k different steps drawn without
replacement, so the model's unlikely moves are proposed too) and the verifier scores every new state (the state
evaluator V: a PRM's step scores, aggregated). A state that gives an answer is a finished solution, judged as a whole.
- BFS: at every step each of the `breadth` (b) states kept proposes, and the b best new states go on; after at
  most `depth` (T) steps the best-scored finished solution is the answer.
- DFS: go down the best-scored child first; a child scoring below `threshold` (v_th) is pruned (and so are its
  worse-scored siblings); a dead end backtracks. The search stops at the first finished solution scoring v_th or
  more, or after `max_expansions` states have proposed; then the best-scored finished solution is the answer.
  The trace keeps the order the states were entered in (`extra["order"]`), the search to write as one solution
  (`ponder.improve.trees.Tree.stream`). Once the guard finds the verifier uninformative on a problem
  (`ponder.search.guard`) there is no value to hold against v_th: DFS goes down the policy's likeliest children
  first, prunes nothing, stops only at `max_expansions`, and answers by majority vote over what it finished.

Knobs: `ToTBFSConfig` and `ToTDFSConfig` (the budget `cfg.n` is k unless `width` is set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, knob, method_knobs, register
from ponder.search.steps import StepConfig, StepSearch
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class ToTConfig(StepConfig):
    """The knobs ToT-BFS and ToT-DFS share."""

    budget: ClassVar[str] = "k, the next steps each state proposes (unless width is set)"
    width: int | None = knob(None, "next steps each state proposes, k in ToT (the thought generator's samples; "
                                   "none: the budget n)", low=1)
    distinct: bool = knob(True, "a state's proposals drawn without replacement (false: sampled independently)")


@dataclass(frozen=True)
class ToTBFSConfig(ToTConfig):
    """ToT-BFS's knobs."""

    breadth: int = knob(5, "states kept at every step, b in ToT", low=1)


@dataclass(frozen=True)
class ToTDFSConfig(ToTConfig):
    """ToT-DFS's knobs."""

    threshold: float = knob(0.5, "value threshold, v_th in ToT: a child scoring below it is pruned, a finished "
                                 "solution scoring it or more stops the search")
    max_expansions: int = knob(64, "the most states that propose before the search stops", low=1)


class _Tree(StepSearch):
    """A step-level search whose states propose `width` steps each."""

    def __init__(self, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig, knobs: ToTConfig) -> None:
        super().__init__(task, problem, lm, verifier, cfg, knobs)
        self.width = knobs.width or cfg.n
        self.trace.extra["width"] = self.width

    async def propose(self, states: list[tuple[int, list[str]]], t: int) -> list[tuple[float, int, list[str]]]:
        going, _ = await self.expand(states, self.width, ("tot", t))
        return going


@register("tot_bfs", config=ToTBFSConfig, needs_verifier=True)
async def tot_bfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    knobs = method_knobs(cfg, ToTBFSConfig)
    tree = _Tree(task, problem, lm, verifier, cfg, knobs)
    tree.trace.extra["breadth"] = knobs.breadth
    frontier: list[tuple[int, list[str]]] = [(0, [])]
    for t in range(tree.limit):
        going = await tree.propose(frontier, t)
        frontier = [(node, steps) for _, node, steps in going[: knobs.breadth]]
        if not frontier:
            break
    return tree.answer()


@register("tot_dfs", config=ToTDFSConfig, needs_verifier=True)
async def tot_dfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    knobs = method_knobs(cfg, ToTDFSConfig)
    tree = _Tree(task, problem, lm, verifier, cfg, knobs)
    v_th, budget = knobs.threshold, knobs.max_expansions
    order: list[int] = []  # the states in the order the search entered them, then the solution it stopped at
    tree.trace.extra.update({"threshold": v_th, "max_expansions": budget, "order": order})
    expanded = 0

    async def dfs(node: int, steps: list[str], t: int) -> bool:
        """True once a finished solution scores v_th or more (the search stops)."""
        nonlocal expanded
        if t >= tree.limit or expanded >= budget:
            return False
        expanded += 1
        order.append(node)
        before = len(tree.finished)
        going = await tree.propose([(node, steps)], t)
        valued = not tree.guard.fired  # else the scores are the policy's path probabilities: no value to prune by
        accepted = [f for f in tree.finished[before:] if (f.score or 0.0) >= v_th]
        if valued and accepted:
            order.append(max(accepted, key=lambda f: f.score or 0.0).node)
            return True
        for score, child, child_steps in going:
            if valued and score < v_th:  # pruned, and so are the siblings scored below it
                break
            if await dfs(child, child_steps, t + 1):
                return True
        return False  # backtrack

    await dfs(0, [], 0)
    tree.trace.extra["expanded"] = expanded
    return tree.answer()
