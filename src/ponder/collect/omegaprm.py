"""OmegaPRM (Luo et al., 2024, "Improve Mathematical Reasoning in Language Models by Automated Process
Supervision"): find the first wrong step of wrong rollouts by binary search on Monte-Carlo estimates, and
choose which rollout to search next with a tree over everything rolled out so far.

The tree's states are solution prefixes. Each state s keeps its Monte-Carlo value MC(s) (the share of k
rollouts from s that reach a correct answer), its visit count N(s) and its rollouts. The pool holds every
wrong rollout from a state with 0 < MC(s) < 1 (a wrong rollout from a state that can still succeed has a
first error to find). Each iteration:

1. **select** the (s, r) in the pool maximising Q(s, r) + U(s), with
   Q(s, r) = alpha ** (1 - MC(s)) * beta ** (len(r) / L)   (prefer likely-right states, short rollouts)
   U(s) = c_puct * sqrt(sum of all N) / (1 + N(s))          (prefer rarely visited states);
2. **binary search** r: estimate MC at the middle of the unsearched span; MC > 0 means the error is later,
   MC = 0 that it is at or before the middle. Every estimated prefix becomes a state, and its rollouts
   join the pool;
3. **maintain**: N(s) += 1, and r leaves the pool.

It stops when the rollout budget is spent or the pool is empty. Knob names are the paper's: `c_puct`,
`alpha`, `beta`, `L` (length normaliser, in steps here), `k` (rollouts per MC estimate), `budget`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ponder.collect.formats import APSRecord
from ponder.collect.mc import new_record, rollout
from ponder.collect.records import StepRecord
from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig
from ponder.tasks.base import Problem, Task
from ponder.trace import Node, Trace

Prefix = tuple[str, ...]


@dataclass(frozen=True)
class OmegaConfig:
    c_puct: float = 0.125
    alpha: float = 0.5
    beta: float = 0.9
    L: float = 10.0  # steps; the paper normalises by 500 tokens
    k: int = 8  # rollouts per Monte-Carlo estimate
    budget: int = 100  # rollouts per problem, the root's included

    def __post_init__(self) -> None:
        if self.k < 1 or self.budget < 1 or self.c_puct < 0 or min(self.alpha, self.beta, self.L) <= 0:
            raise ConfigError(f"OmegaPRM needs k, budget >= 1, c_puct >= 0 and alpha, beta, L > 0; got k={self.k}, "
                              f"budget={self.budget}, c_puct={self.c_puct}, alpha={self.alpha}, beta={self.beta}, "
                              f"L={self.L}")


@dataclass
class OmegaTree:
    """Everything OmegaPRM knows about one problem: the states it estimated, as nodes of the shared `Trace` tree (a
    node's `value` is MC(s), its `visits` N(s)), and the pool of wrong rollouts."""

    trace: Trace = field(default_factory=lambda: Trace("", "omegaprm"))
    states: dict[Prefix, Node] = field(default_factory=dict)  # the estimated states' nodes
    pool: list[tuple[Prefix, Prefix]] = field(default_factory=list)  # (state, wrong rollout from it)
    spent: int = 0

    def add_state(self, prefix: Prefix, continuations: list[list[str]], correct: list[bool], spent: int) -> Node:
        mc = sum(correct) / len(correct)
        if prefix not in self.states:
            self.states[prefix] = self.trace.node_at(prefix)
            self.states[prefix].value = mc
        state = self.states[prefix]
        self.spent += spent
        if 0 < mc < 1:
            self.pool.extend((prefix, tuple(c)) for c, ok in zip(continuations, correct) if not ok and c)
        return state

    def select(self, cfg: OmegaConfig) -> tuple[Prefix, Prefix]:
        total = math.sqrt(sum(s.visits for s in self.states.values()))

        def q_plus_u(item: tuple[Prefix, Prefix]) -> float:
            state = self.states[item[0]]
            q = cfg.alpha ** (1 - state.value) * cfg.beta ** (len(item[1]) / cfg.L)
            return q + cfg.c_puct * total / (1 + state.visits)

        best = max(self.pool, key=q_plus_u)
        self.pool.remove(best)
        return best

    def label(self, prefix: Prefix) -> float | None:
        """What the tree says about a prefix: its own MC value, or what a neighbour implies. A prefix of a
        state with MC > 0 is good (a correct completion passes through it); an extension of a state with
        MC = 0 is bad. None when the tree knows nothing."""
        if prefix in self.states:
            return self.states[prefix].value
        for other, state in self.states.items():
            if state.value > 0 and other[: len(prefix)] == prefix:
                return 1.0
            if state.value == 0 and prefix[: len(other)] == other:
                return 0.0
        return None


async def omegaprm(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, omega: OmegaConfig,
                   root: list[list[str]] | None = None) -> OmegaTree:
    """Build the OmegaPRM tree for one problem. `root` are rollouts from the question already drawn (the
    benchmark passes the solutions it labels); otherwise k are drawn here and counted against the budget."""
    tree = OmegaTree(Trace(problem.id, "omegaprm"))
    if root is None:
        first = await rollout(task, problem, lm, [], omega.k, cfg, "omega-root")
        root, spent = first.continuations, first.spent
    else:
        spent = 0
    tree.add_state((), root, [task.solves(problem, r) for r in root], spent)
    while tree.pool and tree.spent < omega.budget:
        prefix, wrong = tree.select(omega)
        tree.states[prefix].visits += 1
        await binary_search(task, problem, lm, cfg, omega, tree, prefix, wrong)
    return tree


async def binary_search(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, omega: OmegaConfig,
                        tree: OmegaTree, prefix: Prefix, wrong: Prefix) -> int:
    """Locate the first wrong step of `wrong` (a wrong rollout from `prefix`); returns its index in `wrong`.

    Invariant: prefix + wrong[:lo] can succeed (MC > 0), prefix + wrong[:hi] cannot."""
    lo, hi = 0, len(wrong)
    tree.add_state(prefix + wrong, [[]], [False], 0)  # the whole rollout is wrong: MC = 0, no rollout needed
    while hi - lo > 1 and tree.spent < omega.budget:
        mid = (lo + hi) // 2
        state = prefix + wrong[:mid]
        if state not in tree.states:
            found = await rollout(task, problem, lm, list(state), omega.k, cfg, "omega", *state)
            tree.add_state(state, found.continuations, found.correct, found.spent)
        if tree.states[state].value > 0:
            lo = mid
        else:
            hi = mid
    return hi - 1


def solution_labels(tree: OmegaTree, solution: list[str], outcome: bool) -> list[float]:
    """Labels for a solution from the tree; where the tree knows nothing, the outcome stands in for the step
    (what outcome supervision alone would say)."""
    out = []
    for i in range(1, len(solution) + 1):
        label = tree.label(tuple(solution[:i]))
        out.append(float(outcome) if label is None else label)
    return out


def tree_records(task: Task, problem: Problem, tree: OmegaTree) -> tuple[APSRecord, list[StepRecord]]:
    """The tree as one MATH-APS record (every state with its MC value) and as step records, one per state,
    whose steps are labelled where the tree knows them."""
    states = sorted(tree.states.items(), key=lambda item: (len(item[0]), item[0]))
    aps = APSRecord(question=problem.question, final_answer=problem.answer or "", question_id=problem.id,
                    states=[(APSRecord.prefix(problem.question, list(prefix)), s.value) for prefix, s in states])
    records = []
    for prefix, s in states:
        if not prefix:
            continue
        labels = [tree.label(prefix[:i]) for i in range(1, len(prefix) + 1)]
        records.append(new_record(task, problem, list(prefix), labels, "omegaprm", 0, mc=s.value))
    return aps, records
