"""Tree of Thoughts, breadth-first (Yao et al., 2023, "Tree of Thoughts: Deliberate Problem Solving with Large
Language Models", Algorithm 1, ToT-BFS).

At every step each of the `b` states kept proposes `k` next steps (the thought generator G; here `k` different
steps drawn without replacement, so the model's unlikely moves are proposed too), the verifier scores every new
state (the state evaluator V: a PRM's step scores, aggregated), and the `b` best states go on. A state that
gives an answer is a finished solution; after at most `T` steps the best-scored finished solution is the answer.

Knobs (`cfg.options`, the paper's names): `k` proposals per state (default `cfg.n`), `b` breadth (5), `T` step
limit (the task's `max_steps`); `distinct` (default on) draws the k proposals without replacement, off draws
them independently.
"""

from __future__ import annotations

import asyncio

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, register, sample_steps
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier


@register("tot_bfs", needs_verifier=True)
async def tot_bfs(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                  cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ValueError("tot_bfs needs a verifier to judge its states (e.g. --verifier game24-prm)")
    k, b = int(cfg.options.get("k", cfg.n)), int(cfg.options.get("b", 5))
    limit = int(cfg.options.get("T", task.max_steps))
    if k < 1 or b < 1 or limit < 1:
        raise ValueError(f"tot_bfs needs k, b, T >= 1; got k={k}, b={b}, T={limit}")
    distinct = bool(cfg.options.get("distinct", True))
    trace = Trace(problem.id, "tot_bfs", extra={"verifier": verifier.name, "k": k, "b": b, "T": limit})
    frontier: list[tuple[int, list[str]]] = [(0, [])]  # (trace node, steps)
    finished: list[tuple[float, int, list[str]]] = []  # (score, trace node, steps)
    for t in range(limit):
        children: list[tuple[int, list[str], bool]] = []  # (parent node, steps, whether the model ended there)
        drawn = await asyncio.gather(*(sample_steps(task, problem, lm, cfg, steps, k, cfg.temperature,
                                                    ("tot", t, parent), distinct) for parent, steps in frontier))
        for (parent, steps), proposals in zip(frontier, drawn):
            for step in dict.fromkeys(proposals):  # the same step twice is one state
                if step:
                    children.append((parent, [*steps, step], False))
                elif steps:  # an empty proposal: the model ends the solution here
                    children.append((parent, steps, True))
        if not children:
            break
        # a finished solution is judged as a whole, a state that goes on as a prefix
        done = [ended or task.is_final(steps) for _, steps, ended in children]
        whole = await verifier.score(task, problem, [c[1] for c, d in zip(children, done) if d])
        partial = await verifier.score_prefixes(task, problem, [c[1] for c, d in zip(children, done) if not d])
        trace.usage.verifier_calls += len(children)
        going = []
        for (parent, steps, ended), is_done in zip(children, done):
            score = aggregate(whole.pop(0) if is_done else partial.pop(0), cfg.aggregate)
            node = trace.nodes[parent] if ended else trace.add(parent, steps[-1], score=score)
            if is_done:
                node.terminal = True
                node.extra["answer"] = task.extract_answer(problem, steps)
                finished.append((score, node.id, steps))
            else:
                going.append((score, node.id, steps))
        going.sort(key=lambda x: -x[0])
        frontier = [(node, steps) for _, node, steps in going[:b]]
        if not frontier:
            break
    if finished:
        score, node, steps = max(finished, key=lambda x: x[0])
        trace.answer, trace.solution = trace.nodes[node].extra["answer"], task.join_steps(steps)
    return trace
