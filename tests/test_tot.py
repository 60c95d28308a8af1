"""Tree of Thoughts (BFS and DFS) on the shipped game24 policy, and verifiers asked about partial solutions."""

from __future__ import annotations

import asyncio
from itertools import pairwise

import pytest

from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, search
from ponder.search.tot import ToTBFSConfig, ToTDFSConfig
from ponder.tasks import Game24
from ponder.verifiers import get_verifier
from ponder.verifiers.base import PrefixError

task = Game24()


def test_tot_bfs_with_the_oracle_solves_what_its_proposals_allow(game24_backend):
    """With an exact judge, ToT fails only where no right step is proposed; distinct proposals reach the
    unlikely first moves of `4 5 6 10` that 128 independent samples never hold."""
    lm = Engine(game24_backend)
    problems = task.problems("test", limit=6)
    cfg = SearchConfig(n=32, max_tokens=160, max_step_tokens=64, aggregate="min",
                       knobs=ToTBFSConfig(breadth=3, depth=4))

    async def main():
        return await asyncio.gather(*(search(task, p, lm, get_verifier("oracle"), get_method("tot_bfs"), cfg)
                                      for p in problems))

    traces = asyncio.run(main())
    solved = [task.grade(p, t.answer) for p, t in zip(problems, traces)]
    assert solved[0], "4 5 6 10"
    assert sum(solved) >= 5
    for p, trace in zip(problems, traces):
        assert trace.usage.verifier_calls >= len(trace.nodes) - 1  # every state was judged
        depth = {0: 0}
        for node in trace.nodes[1:]:
            depth[node.id] = depth[node.parent] + 1
        per_depth = [sum(1 for d in depth.values() if d == k) for k in (1, 2)]
        assert per_depth[0] <= 32 and per_depth[1] <= 3 * 32  # k proposals from each of at most b states
        assert trace.solution and all(task.check_step(p, task.split_steps(trace.solution)[:i])
                                      for i in range(1, 4)) == task.grade(p, trace.answer)


def test_tot_dfs_stops_at_the_first_solution_it_trusts_and_prunes_below_v_th(game24_backend):
    """With the oracle every right prefix scores 1 and every wrong one 0: DFS goes straight down a right path
    (one expansion per step, 3 for game24) and never expands a pruned state; with v_th above every score it
    prunes everything after the first expansion."""
    lm = Engine(game24_backend)
    problem = task.problem("4 5 6 10")
    cfg = SearchConfig(n=32, max_tokens=160, max_step_tokens=64, aggregate="min", min_p=0.001)
    trace = asyncio.run(search(task, problem, lm, get_verifier("oracle"), get_method("tot_dfs"), cfg))
    assert task.grade(problem, trace.answer) and trace.extra["expanded"] == 3
    expanded = {n.parent for n in trace.nodes[1:]}
    assert all(trace.nodes[i].score == 1.0 for i in expanded if i)  # only states that passed v_th proposed
    order = trace.extra["order"]  # the states entered, each a child of the last, then the solution it trusted
    assert order[0] == 0 and len(order) == 4 and all(trace.nodes[b].parent == a for a, b in pairwise(order))
    assert trace.nodes[order[-1]].terminal and trace.nodes[order[-1]].id == trace.extra["chosen"]
    strict = SearchConfig(n=32, max_tokens=160, max_step_tokens=64, aggregate="min", min_p=0.001,
                          knobs=ToTDFSConfig(threshold=1.5))
    pruned = asyncio.run(search(task, problem, lm, get_verifier("oracle"), get_method("tot_dfs"), strict))
    assert pruned.extra["expanded"] == 1 and pruned.answer is None


def test_verifiers_that_judge_only_whole_solutions_refuse_prefixes():
    problem = task.problem("4 5 6 10")
    prefix = [["10 - 4 = 6 (left: 5 6 6)"], ["10 + 5 = 15 (left: 4 6 15)"]]
    oracle = get_verifier("oracle")
    assert asyncio.run(oracle.score_prefixes(task, problem, prefix)) == [[1.0], [0.0]]
    assert asyncio.run(oracle.score(task, problem, prefix)) == [[0.0], [0.0]]  # not solutions
    for name in ("vote", "game24-orm"):
        with pytest.raises(PrefixError):
            asyncio.run(get_verifier(name).score_prefixes(task, problem, prefix))
    for name in ("tot_bfs", "tot_dfs"):
        with pytest.raises(ValueError, match="needs a verifier"):
            asyncio.run(get_method(name)(task, problem, None, None, SearchConfig()))
