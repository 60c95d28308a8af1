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
draws the k proposals without replacement, off draws them independently.
"""

from __future__ import annotations

import asyncio

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, register, sample_steps
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier

Scored = tuple[float, int, list[str]]  # (score, trace node, steps)


class _Tree:
    """What BFS and DFS share: the knobs, the trace, and expanding states into judged children."""

    def __init__(self, name: str, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig) -> None:
        if verifier is None:
            raise ValueError(f"{name} needs a verifier to judge its states (e.g. --verifier game24-prm)")
        self.task, self.problem, self.lm, self.verifier, self.cfg = task, problem, lm, verifier, cfg
        self.k, self.b = int(cfg.options.get("k", cfg.n)), int(cfg.options.get("b", 5))
        self.limit = int(cfg.options.get("T", task.max_steps))
        if self.k < 1 or self.b < 1 or self.limit < 1:
            raise ValueError(f"{name} needs k, b, T >= 1; got k={self.k}, b={self.b}, T={self.limit}")
        self.distinct = bool(cfg.options.get("distinct", True))
        self.trace = Trace(problem.id, name, extra={"verifier": verifier.name, "k": self.k, "T": self.limit})
        self.finished: list[Scored] = []

    async def expand(self, states: list[tuple[int, list[str]]], t: int) -> list[Scored]:
        """Each state proposes k steps; every new state is judged and added to the trace. Finished solutions are
        kept in `finished`; the states that go on are returned, best first."""
        task, problem = self.task, self.problem
        drawn = await asyncio.gather(*(sample_steps(task, problem, self.lm, self.cfg, steps, self.k,
                                                    self.cfg.temperature, ("tot", t, node), self.distinct)
                                       for node, steps in states))
        children: list[tuple[int, list[str], bool]] = []  # (parent node, steps, whether the model ended there)
        for (node, steps), proposals in zip(states, drawn):
            for step in dict.fromkeys(proposals):  # the same step twice is one state
                if step:
                    children.append((node, [*steps, step], False))
                elif steps:  # an empty proposal: the model ends the solution here
                    children.append((node, steps, True))
        done = [ended or task.is_final(steps) for _, steps, ended in children]
        whole = iter(await self.verifier.score(task, problem, [c[1] for c, d in zip(children, done) if d]))
        partial = iter(await self.verifier.score_prefixes(task, problem,
                                                          [c[1] for c, d in zip(children, done) if not d]))
        going = []
        for (parent, steps, ended), is_done in zip(children, done):
            score = aggregate(next(whole if is_done else partial), self.cfg.aggregate)
            node = self.trace.nodes[parent] if ended else self.trace.add(parent, steps[-1], score=score)
            if is_done:
                node.terminal = True
                node.extra["answer"] = task.extract_answer(problem, steps)
                self.finished.append((score, node.id, steps))
            else:
                going.append((score, node.id, steps))
        return sorted(going, key=lambda x: -x[0])

    def answer(self) -> Trace:
        if self.finished:
            _, node, steps = max(self.finished, key=lambda x: x[0])
            self.trace.answer = self.trace.nodes[node].extra["answer"]
            self.trace.solution = self.task.join_steps(steps)
        return self.trace


@register("tot_bfs", needs_verifier=True)
async def tot_bfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    tree = _Tree("tot_bfs", task, problem, lm, verifier, cfg)
    tree.trace.extra["b"] = tree.b
    frontier: list[tuple[int, list[str]]] = [(0, [])]
    for t in range(tree.limit):
        going = await tree.expand(frontier, t)
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
        going = await tree.expand([(node, steps)], t)
        if any(score >= v_th for score, _, _ in tree.finished[before:]):
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
