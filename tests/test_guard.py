"""The guard against a verifier that knows nothing about a problem (`ponder.search.guard`): when it fires, what the
search falls back to, and how a run reports it."""

from __future__ import annotations

import asyncio
import math

import pytest

from ponder.errors import ConfigError
from ponder.evaluate.runner import summarize
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.search.best_of_n import BestOfNConfig
from ponder.search.guard import Guard, GuardConfig
from ponder.search.mcts import MCTSConfig
from ponder.search.select import Finished, select
from ponder.search.tot import ToTBFSConfig
from ponder.tasks import Game24
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers import get_verifier
from ponder.verifiers.base import Verifier

task = Game24()


class Constant(Verifier):
    """A verifier that gives every solution and prefix the same score: it cannot rank anything."""

    name = "constant"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return [[0.5] * max(1, len(s)) for s in solutions]

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        return await self.score(task, problem, prefixes)


def test_guard_rules_on_scores():
    def verdict(*batches: list[float], **knobs: object) -> str | None:
        guard = Guard(GuardConfig(**knobs), Trace("p", "m"), "v")
        for scores in batches:
            guard.observe(scores)
        return guard.reason

    assert verdict([0.01, 0.02, 0.0]) is not None and "guard_floor" in verdict([0.01, 0.02])
    assert "guard_spread" in verdict([0.5, 0.5004])
    assert verdict([0.5]) is None  # one score has no spread
    assert verdict([0.01, 0.9]) is None
    assert verdict([0.3], [0.7]) is None  # the range is over the whole problem, not one batch
    assert verdict([0.01, 0.02], guard=False) is None
    assert verdict([0.01, 0.02], guard_floor=0.0) is None
    assert verdict([0.9, 0.4], [0.01]) is None  # a verdict of "informative" is not taken back by later low scores


def test_knobs_are_validated():
    assert parse_options("beam", {"guard_floor": "0.2", "guard": "false"}, 4).guard_floor == 0.2
    with pytest.raises(ConfigError, match=r"guard_floor=1\.5 is out of range"):
        parse_options("tot_bfs", {"guard_floor": "1.5"})
    with pytest.raises(ConfigError, match=r"guard_spread=-0\.1 is out of range"):
        parse_options("dvts", {"guard_spread": "-0.1"}, 4)
    with pytest.raises(ConfigError, match="guard='maybe' is not bool"):
        parse_options("best_of_n", {"guard": "maybe"})


def _run(lm, verifier, method, problems, cfg):
    async def main():
        return await asyncio.gather(*(search(task, p, lm, verifier, get_method(method), cfg) for p in problems))

    return asyncio.run(main())


def _logp(trace: Trace, i: int) -> float:
    """The log-probability of node i's path under the policy, from its steps' own."""
    node = trace.nodes[i]
    return 0.0 if node.parent is None else node.extra["logprob"] + _logp(trace, node.parent)


def _path(trace: Trace, i: int) -> list[str]:
    node = trace.nodes[i]
    return [] if node.parent is None else [*_path(trace, node.parent), node.text]


@pytest.mark.slow
def test_constant_verifier_fires_and_the_policy_ranks(game24_backend):
    """ToT with a verifier that cannot rank says so on every problem and chooses the answer as the policy does: a
    majority vote over its finished solutions, ties to the likelier path (the steps' log-probabilities summed)."""
    lm = Engine(game24_backend)
    problems = task.problems("test", limit=3)
    cfg = SearchConfig(n=4, max_tokens=160, max_step_tokens=64, knobs=ToTBFSConfig(breadth=2))
    for trace, problem in zip(_run(lm, Constant(), "tot_bfs", problems, cfg), problems):
        assert "guard_spread" in trace.extra["verifier_uninformative"]
        finished = [Finished(_path(trace, n.id), n.id, math.exp(_logp(trace, n.id)))
                    for n in trace.nodes if n.terminal]
        assert finished
        chosen = select(task, problem, finished, "majority")
        assert chosen is not None and trace.extra["chosen"] == chosen.node
        assert trace.answer == task.extract_answer(problem, chosen.steps)
        assert trace.extra["select"] == "majority"
        # the states kept at the first step are the likeliest proposals, not the verifier's (all equal) choice
        first = [n for n in trace.nodes if n.parent == 0]
        kept = {n.parent for n in trace.nodes if n.parent in {f.id for f in first}}
        likeliest = sorted((n for n in first if not n.terminal), key=lambda n: -n.extra["logprob"])[:2]
        assert kept <= {n.id for n in likeliest}


def test_best_of_n_with_constant_verifier_votes(game24_backend):
    lm = Engine(game24_backend)
    [problem] = task.problems("test", limit=1)
    cfg = SearchConfig(n=4, max_tokens=160, knobs=BestOfNConfig(select="best"))
    [trace] = _run(lm, Constant(), "best_of_n", [problem], cfg)
    assert "verifier_uninformative" in trace.extra and trace.extra["select"] == "majority"


def test_mcts_with_constant_verifier_follows_the_priors_and_votes(game24_backend):
    """MCTS whose verifier cannot rank says so, steers by the priors alone (Q 0: the root's most visited child is
    its likeliest one) and answers by majority vote; with the guard off it trusts the verifier."""
    lm = Engine(game24_backend)
    [problem] = task.problems("test", limit=1)
    cfg = SearchConfig(n=6, max_tokens=160, max_step_tokens=64, knobs=MCTSConfig(width=4))
    [trace] = _run(lm, Constant(), "mcts", [problem], cfg)
    assert "guard_spread" in trace.extra["verifier_uninformative"] and trace.extra["select"] == "majority"
    first = [n for n in trace.nodes if n.parent == 0]
    assert max(first, key=lambda n: n.visits) is max(first, key=lambda n: n.prior)
    off = SearchConfig(n=6, max_tokens=160, max_step_tokens=64, knobs=MCTSConfig(width=4, guard=False))
    [trusting] = _run(lm, Constant(), "mcts", [problem], off)
    assert "verifier_uninformative" not in trusting.extra and trusting.extra["select"] == "best"


class Nothing(Constant):
    """A verifier that scores everything 0: below the guard's floor, and below any ToT-DFS threshold."""

    name = "nothing"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return [[0.0] * max(1, len(s)) for s in solutions]


def test_tot_dfs_on_an_uninformative_verifier_prunes_nothing_and_spends_its_expansions(game24_backend):
    """Its threshold is a value the verifier no longer gives: DFS follows the policy to the expansion budget and
    votes, instead of pruning every child (the scores it would compare are the policy's path probabilities)."""
    lm = Engine(game24_backend)
    [problem] = task.problems("test", limit=1)
    cfg = SearchConfig(n=3, max_tokens=160, max_step_tokens=64, knobs=parse_options("tot_dfs", {
        "max_expansions": "6", "threshold": "0.5"}, 3))
    [trace] = _run(lm, Nothing(), "tot_dfs", [problem], cfg)
    assert "guard_floor" in trace.extra["verifier_uninformative"] and trace.extra["select"] == "majority"
    assert trace.extra["expanded"] == 6 and any(n.terminal for n in trace.nodes)


@pytest.mark.slow
def test_shipped_prm_is_informative_on_test_puzzles(game24_backend):
    """On puzzles like its training ones (numbers up to 24), the shipped PRM ranks: the guard stays quiet."""
    lm = Engine(game24_backend)
    problems = task.problems("test", limit=4)
    cfg = SearchConfig(n=4, max_tokens=160, max_step_tokens=64, knobs=ToTBFSConfig(breadth=2))
    traces = _run(lm, get_verifier("game24-prm", lm), "tot_bfs", problems, cfg)
    assert not [t.problem_id for t in traces if "verifier_uninformative" in t.extra]


def test_summary_counts_uninformative_problems():
    def row(pid: str, extra: dict[str, object]) -> dict[str, object]:
        return {"method": "tot_bfs", "budget": 4, "problem_id": pid, "correct": False, "any_correct": False,
                "usage": {}, "latency": 0.0, "trace": {"nodes": [], "extra": extra}}

    rows = [row("a", {"verifier_uninformative": "every score is below guard_floor"}), row("b", {}), row("c", {}),
            row("d", {})]
    [summary] = summarize(rows)
    assert summary["uninformative"] == 0.25
