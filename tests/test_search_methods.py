"""Beam search, DVTS and MCTS on a scripted policy and verifier whose proposals and scores are known, then on the
real tiny policy: the same seed gives the same tree, and a search cancelled midway frees its engine rows."""

from __future__ import annotations

import asyncio
import math

import pytest

from ponder.lm.base import Completion, LanguageModel, Request
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.search.mcts import MCTS
from ponder.search.select import Finished, select
from ponder.tasks import Game24
from ponder.tasks.base import Problem
from ponder.verifiers.base import Verifier

task = Game24()
PROBLEM = task.problem("4 5 6 10")


class Script(LanguageModel):
    """Proposes the scripted steps of a state (by the steps so far): request i of independent samples gets the
    (i mod k)-th, a request for n different ones the first n. Steps are `name (left: ...)`; `(left: 24)` ends a
    solution. Records how many proposals each state was asked for."""

    def __init__(self, tree: dict[tuple[str, ...], list[tuple[str, float]]]) -> None:
        self.tree = tree
        self.asked: list[tuple[tuple[str, ...], int]] = []

    def proposals(self, prompt: str) -> list[tuple[str, float]]:
        state = tuple(s.split(" (")[0] for s in task.split_steps(prompt.partition("\n")[2]))
        return self.tree.get(state, [])

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        out = []
        groups: dict[str, int] = {}
        for r in requests:
            script = self.proposals(r.prompt)
            self.asked.append((r.prompt, r.n))
            if r.n > 1:
                out.append([Completion(f"{s}\n", 1, 1, "stop", logprob=lp) for s, lp in script[: r.n]])
                continue
            i = groups.get(r.prompt, 0)
            groups[r.prompt] = i + 1
            s, lp = script[i % len(script)] if script else ("", 0.0)
            out.append([Completion(s, 1, 1, "stop", logprob=lp)])
        return out


class Table(Verifier):
    """Scores each step by its name."""

    name = "table"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    async def score(self, task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return [[self.scores[s.split(" (")[0]] for s in steps] for steps in solutions]


def step(name: str, final: bool = False) -> str:
    return f"{name} (left: {'24' if final else '1 2'})"


def run(method: str, lm: LanguageModel, verifier: Verifier, n: int, **options) -> object:
    cfg = SearchConfig(n=n, aggregate="last", knobs=parse_options(method, options))
    return asyncio.run(search(task, PROBLEM, lm, verifier, get_method(method), cfg))


def test_beam_keeps_the_best_n_over_m_and_never_exceeds_n_proposals_an_iteration():
    root = [(step(x), 0.0) for x in "abcd"]
    tree = {(): root, **{(x,): [(step(x + y), 0.0) for y in "12"] for x in "abcd"},
            **{(x, x + y): [(step(x + y + "!", final=True), 0.0)] for x in "abcd" for y in "12"}}
    scores = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.7, **{x + y: 0.5 for x in "abcd" for y in "12"}, "d1": 0.6,
              "b1": 0.55,
              **{x + y + "!": {"b": 0.4, "d": 0.8}.get(x, 0.0) for x in "abcd" for y in "12"}}
    lm = Script(tree)
    trace = run("beam", lm, Table(scores), n=4, width=2)
    depth1 = {n.id: n.text.split(" (")[0] for n in trace.nodes if n.parent == 0}
    expanded = {depth1[n.parent] for n in trace.nodes if n.parent in depth1}
    assert expanded == {"b", "d"}  # the N/M = 2 best of a, b, c, d
    per_iteration: dict[int, int] = {}
    for prompt, k in lm.asked:
        depth = len(task.split_steps(prompt.partition("\n")[2]))
        per_iteration[depth] = per_iteration.get(depth, 0) + k
    assert max(per_iteration.values()) <= 4  # N proposals an iteration
    assert trace.solution.splitlines()[0] == step("d")  # the best completed beam (0.8)


def test_dvts_subtrees_never_share_nodes_and_only_finished_solutions_answer():
    tree = {(): [(step("a"), 0.0), (step("b"), 0.0)], ("a",): [(step("a1"), 0.0), (step("a2"), 0.0)],
            ("b",): [(step("b1"), 0.0), (step("b2"), 0.0)], ("a", "a1"): [(step("a1!", final=True), 0.0)],
            ("b", "b2"): [(step("b2x"), 0.0)]}
    scores = {"a": 0.9, "b": 0.8, "a1": 0.7, "a2": 0.1, "b1": 0.2, "b2": 0.3, "a1!": 0.2, "b2x": 0.99}
    trace = run("dvts", Script(tree), Table(scores), n=4, width=2)
    owner = {n.id: n.extra.get("subtree") for n in trace.nodes[1:]}
    assert set(owner.values()) == {0, 1} and None not in owner.values()
    for n in trace.nodes[1:]:  # a node's parent is the root or in the same subtree
        assert n.parent == 0 or owner[n.parent] == owner[n.id]
    # the unfinished b2x scores 0.99 but only the finished a1! may answer
    assert [t for t in (trace.solution or "").splitlines()] == [step("a"), step("a1"), step("a1!", final=True)]


def test_mcts_visits_and_values_match_a_hand_computed_example():
    tree = {(): [(step("A"), math.log(0.75)), (step("B"), math.log(0.25))],
            ("A",): [(step("A1"), math.log(0.5)), (step("A2"), math.log(0.5))],
            ("A", "A2"): [(step("A2x"), 0.0), (step("A2y"), 0.0)]}
    scores = {"A": 0.6, "B": 0.8, "A1": 0.3, "A2": 0.9, "A2x": 0.2, "A2y": 0.4}
    cfg = SearchConfig(n=3, aggregate="last", knobs=parse_options("mcts", {"width": 2, "exploration": 1.0}))
    m = MCTS(task, PROBLEM, Script(tree), Table(scores), cfg)
    by = lambda name: next(n for n in m.trace.nodes if n.text.split(" (")[0] == name)  # noqa: E731

    asyncio.run(m.iterate(0))  # root expanded; no visits yet, so PUCT = Q = the children's scores: B (0.8) is simulated
    assert by("A").prior == pytest.approx(0.75) and by("B").prior == pytest.approx(0.25)
    assert (m.trace.root.visits, m.trace.root.value, by("B").visits, by("B").value) == (1, 0.8, 1, 0.8)
    asyncio.run(m.iterate(1))  # A: 0.6 + 0.75 * 1 / 1 = 1.35 > B: 0.8 + 0.25 * 1 / 2; A expanded; A2 (0.9 > 0.3)
    assert (m.trace.root.visits, by("A").visits, by("A2").visits, by("A1").visits) == (2, 1, 1, 0)
    assert m.trace.root.value == pytest.approx(0.85) and by("A").value == pytest.approx(0.9)
    asyncio.run(m.iterate(2))  # A: 0.9 + 0.75 * 1.414 / 2 = 1.43 > B: 0.8 + 0.25 * 1.414 / 2 = 0.98; A2: 0.9 +
    # 0.5 / 2 = 1.15 > A1: 0.3 + 0.5 / 1 = 0.8; A2 expanded, A2y (0.4 + 0.5 > 0.2 + 0.5) simulated
    assert (m.trace.root.visits, by("A").visits, by("A2").visits, by("A2y").visits, by("B").visits) == (3, 2, 2, 1, 1)
    assert m.trace.root.value == pytest.approx((0.8 + 0.9 + 0.4) / 3) and by("A").value == pytest.approx(0.65)
    assert by("A2x").visits == 0 and by("A1").visits == 0


def test_mcts_stops_once_a_solution_is_verified_and_keeps_its_simulation_budget():
    tree = {(): [(step("A"), 0.0), (step("B"), 0.0)], ("A",): [(step("A!", final=True), 0.0)],
            ("B",): [(step("B1"), 0.0)], ("B", "B1"): [(step("B2"), 0.0)]}
    scores = {"A": 0.5, "B": 0.4, "A!": 0.97, "B1": 0.4, "B2": 0.4}
    trace = run("mcts", Script(tree), Table(scores), n=50, width=2)
    assert trace.extra["iterations"] == 3 and trace.solution.splitlines()[-1] == step("A!", final=True)
    scores["A!"] = 0.5  # never verified: the budget stops it
    trace = run("mcts", Script(tree), Table(scores), n=7, width=2)
    assert trace.extra["iterations"] == 7 and sum(n.visits for n in trace.nodes if n.parent == 0) == 7


def test_answer_selection_majority_weighted_best():
    f = [Finished(["10 - 4 = 6 (left: 5 6 6)", "6 - 5 = 1 (left: 1 6)", "6 * 1 = 6 (left: 6)"], 1, 0.9),
         Finished(["10 + 4 = 14 (left: 5 6 14)", "14 - 5 = 9 (left: 6 9)", "9 + 6 = 15 (left: 15)"], 2, 0.2),
         Finished(["10 + 4 = 14 (left: 5 6 14)", "14 - 5 = 9 (left: 6 9)", "9 + 6 = 15 (left: 15)"], 3, 0.3)]
    assert select(task, PROBLEM, f, "best").node == 1
    assert select(task, PROBLEM, f, "majority").node == 3  # two votes for 15; the better scored of them
    assert select(task, PROBLEM, f, "weighted").node == 1  # 0.9 > 0.2 + 0.3
    assert select(task, PROBLEM, [], "majority") is None
    with pytest.raises(ValueError, match="unknown answer selection"):
        select(task, PROBLEM, f, "loudest")


@pytest.mark.parametrize("method,options", [("beam", {"width": 2}), ("dvts", {"width": 2}),
                                            ("mcts", {"width": 3})])
def test_real_policy_same_seed_same_tree(game24_backend, method, options):
    from ponder.lm.engine import Engine
    from ponder.verifiers import get_verifier

    cfg = SearchConfig(n=4, max_tokens=160, max_step_tokens=40, seed=3, knobs=parse_options(method, options))
    trees = []
    for _ in range(2):
        trace = asyncio.run(search(task, PROBLEM, Engine(game24_backend), get_verifier("oracle"),
                                   get_method(method), cfg))
        trees.append([(n.parent, n.text, n.visits) for n in trace.nodes])
    assert trees[0] == trees[1] and len(trees[0]) > 3


def test_a_search_cancelled_midway_frees_its_engine_rows(game24_backend):
    from ponder.lm.engine import Engine
    from ponder.verifiers import get_verifier

    engine = Engine(game24_backend)
    cfg = SearchConfig(n=64, max_tokens=160, max_step_tokens=40, seed=1, temperature=1.0,
                       knobs=parse_options("mcts", {"width": 8}))

    async def main() -> None:
        running = asyncio.create_task(search(task, PROBLEM, engine, get_verifier("oracle"), get_method("mcts"), cfg))
        while engine.stats.batches < 3:
            await asyncio.sleep(0.001)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        for _ in range(200):  # the worker drops the rows at its next step
            if not game24_backend.keys:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert game24_backend.keys == []
