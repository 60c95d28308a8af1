"""Proposal recall by depth, against the exact oracle: is a policy worth searching over? (`ponder bench proposals`
and the improvement loop's rounds measure it.)

A step-level search can only choose among the steps its policy proposes. At a state (the problem and a correct
prefix of steps) the policy proposes `k` next steps (one step per request, stopped at the end of the line);
proposal recall@K is the chance that K of them contain a right step, one the oracle accepts (exact, and the
answer still reachable). It is estimated from the k samples without bias (Chen et al., 2021, "Evaluating Large
Language Models Trained on Code": 1 - C(k-c, K) / C(k, K) with c right of k).

Two sets of states, both from the test split:
- `solver`: the states along a solver solution of each problem (a walk down the tree of the solver's
  solutions, a next step drawn uniformly at each state; `paths` walks per problem);
- `policy`: the states the policy itself reaches: the correct, unfinished prefixes of `rollouts` solutions it
  samples per problem.

Proposals are drawn either `independent`ly (k samples, each its own request) or `distinct` (k different steps
drawn without replacement, `Request.n`); for distinct proposals recall@K is whether the first K drawn hold a
right step.

Per state also: the share of proposals that are right, the share whose equation is arithmetically true (of those
that write one), distinct proposals, and generated tokens per proposal.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from math import comb
from typing import Any

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel, Metered
from ponder.search.base import SearchConfig, room, sample_solutions, sample_steps
from ponder.tasks import ReferenceSolver, StepOracle, require
from ponder.tasks.base import Problem, Task, TaskError, last_equation
from ponder.tasks.exact import apply_op
from ponder.trace import Usage
from ponder.train.data import trie

SOURCES = ("solver", "policy")
SAMPLERS = ("independent", "distinct")


@dataclass(frozen=True)
class ProposalConfig:
    k: int = 16  # proposals per state
    recall_at: tuple[int, ...] = (1, 4, 16)
    temperature: float = 0.8
    min_p: float = 0.0
    paths: int = 1  # solver walks per problem
    rollouts: int = 4  # policy solutions per problem whose correct prefixes are states
    max_step_tokens: int = 64
    max_tokens: int = 0  # what a whole solution may take, a state's prefix included (0: the task's default): a
    # state deeper than that has no room for a next step
    seed: int = 0
    distinct: bool = False  # k different proposals drawn without replacement, instead of k independent ones

    def __post_init__(self) -> None:
        if self.k < 1 or self.paths < 0 or self.rollouts < 0:
            raise ConfigError(f"proposals need k >= 1 and paths, rollouts >= 0; got {self}")


def recall_at(k: int, right: int, at: int) -> float:
    """Unbiased pass@K from `k` samples of which `right` are right."""
    if at > k:
        raise ConfigError(f"recall@{at} needs at least {at} proposals per state, got {k}")
    return 1.0 - comb(k - right, at) / comb(k, at)


def solver_states(task: Task, problem: Problem, paths: int, seed: int) -> list[list[str]]:
    """Distinct unfinished prefixes along `paths` walks down the solver's solutions (the empty prefix first)."""
    root = trie(require(task, ReferenceSolver, "walking down the solver's solutions").solutions(problem))
    rng = random.Random(f"{seed}|{problem.id}")
    states: dict[str, list[str]] = {}
    for _ in range(paths):
        node, steps = root, []
        while node:
            states.setdefault(task.join_steps(steps), list(steps))
            step = rng.choice(sorted(node))
            steps.append(step)
            node = node[step]
    return list(states.values())


def correct_prefixes(task: StepOracle, problem: Problem, solutions: list[list[str]]) -> list[list[str]]:
    """Distinct unfinished prefixes the oracle accepts, of the given solutions (the empty prefix included)."""
    states: dict[str, list[str]] = {"": []}
    for steps in solutions:
        for i, label in enumerate(task.step_labels(problem, steps), start=1):
            prefix = steps[:i]
            if not label or task.is_final(prefix):
                break
            states.setdefault(task.join_steps(prefix), prefix)
    return list(states.values())


def judge(task: StepOracle, problem: Problem, prefix: list[str], proposals: list[str]) -> dict[str, Any]:
    """What one state's proposals are worth: right ones, true equations, distinct texts."""
    good = [bool(p) and bool(task.check_step(problem, [*prefix, p])) for p in proposals]
    right = sum(good)
    equations = [last_equation(p) for p in proposals]
    written = [e for e in equations if e is not None]
    return {"depth": len(prefix), "k": len(proposals), "right": right, "distinct": len(set(proposals)),
            "first_right": good.index(True) if right else None,
            "equations": len(written), "true": sum(apply_op(a, op, b) == c for a, op, b, c in written)}


async def measure(task: Task, problems: list[Problem], lm: LanguageModel, cfg: ProposalConfig,
                  sources: tuple[str, ...] = SOURCES) -> tuple[list[dict[str, Any]], Usage]:
    """One record per (source, state): what `judge` says of its k proposals; and the usage of the proposals alone."""
    task = require(task, StepOracle, "proposal recall (`ponder bench proposals`)")
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise TaskError(f"unknown state source(s) {', '.join(sorted(unknown))}; known: {', '.join(SOURCES)}")
    budget = cfg.max_tokens or task.max_tokens
    search_cfg = SearchConfig(seed=cfg.seed, max_tokens=budget, max_step_tokens=cfg.max_step_tokens,
                              min_p=cfg.min_p)
    rollout_cfg = SearchConfig(seed=cfg.seed, max_tokens=budget, min_p=cfg.min_p)
    usage = Usage()
    proposer = Metered(lm, usage)

    async def one(problem: Problem) -> list[dict[str, Any]]:
        states: dict[str, list[list[str]]] = {}
        if "solver" in sources:
            states["solver"] = solver_states(task, problem, cfg.paths, cfg.seed)
        if "policy" in sources:
            rollouts = await sample_solutions(task, problem, lm, rollout_cfg, cfg.rollouts, cfg.temperature,
                                              "proposal-rollout")
            states["policy"] = correct_prefixes(task, problem, rollouts)
        out = []
        for source, found in states.items():  # a state past the solution's budget has no next step to propose
            prefixes = [p for p in found if await room(task, lm, search_cfg, p) > 0]
            drawn = await asyncio.gather(*(sample_steps(task, problem, proposer, search_cfg, prefix, cfg.k,
                                                        cfg.temperature, "proposal", cfg.distinct)
                                           for prefix in prefixes))
            out += [{"source": source, "problem_id": problem.id, **judge(task, problem, prefix, proposals)}
                    for prefix, proposals in zip(prefixes, drawn)]
        return out

    found = await asyncio.gather(*(one(p) for p in problems))
    return [r for rows in found for r in rows], usage


def summarize(records: list[dict[str, Any]], cfg: ProposalConfig, usage: Usage) -> list[dict[str, Any]]:
    """One row per source and depth, and one per source over all depths."""
    per_token = usage.generated_tokens / max(1, sum(r["k"] for r in records))
    rows = []
    for source in dict.fromkeys(r["source"] for r in records):
        mine = [r for r in records if r["source"] == source]
        depths = sorted({r["depth"] for r in mine})
        for depth in [*depths, "all"]:
            group = [r for r in mine if depth == "all" or r["depth"] == depth]
            n = len(group)
            equations = sum(r["equations"] for r in group)
            rows.append({
                "source": source, "depth": depth, "states": n,
                **{f"recall@{at}": sum(_recall(r, at, cfg.distinct) for r in group) / n for at in cfg.recall_at},
                "right": sum(r["right"] for r in group) / sum(r["k"] for r in group),
                "arithmetic": sum(r["true"] for r in group) / equations if equations else None,
                "distinct": sum(r["distinct"] for r in group) / n,
                "tokens_per_proposal": per_token,
            })
    return rows


def _recall(record: dict[str, Any], at: int, distinct: bool) -> float:
    if distinct:  # the proposals are in the order they were drawn without replacement
        return float(record["first_right"] is not None and record["first_right"] < at)
    return recall_at(record["k"], record["right"], at)
