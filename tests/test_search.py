"""Search methods on the shipped policies, checked against the exact oracle."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from ponder.lm.engine import Engine
from ponder.search import METHODS, SearchConfig, get_method, parse_options, search
from ponder.tasks import Arith, Game24
from ponder.verifiers import aggregate, get_verifier

game24 = Game24()


def run(task, problem, lm, method, verifier=None, **cfg):
    return asyncio.run(search(task, problem, lm, verifier, get_method(method), SearchConfig(**cfg)))


def test_registry_and_unknown_names():
    assert {"cot", "self_consistency", "best_of_n"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown search method"):
        get_method("nope")
    with pytest.raises(ValueError, match="unknown verifier"):
        get_verifier("nope")


def test_cot_is_greedy_and_metered(game24_backend):
    lm = Engine(game24_backend)
    p = game24.problems("test", limit=1)[0]
    a, b = run(game24, p, lm, "cot", seed=1), run(game24, p, lm, "cot", seed=2)
    assert a.solution == b.solution  # greedy ignores the seed
    assert a.usage.model_calls == 1 and a.usage.generated_tokens > 0
    assert a.usage.prompt_tokens == len("Input: 4 5 6 10\n")
    assert a.answer == game24.extract_answer(p, game24.split_steps(a.solution))


def test_self_consistency_returns_the_majority_answer(game24_backend):
    lm = Engine(game24_backend)
    for p in game24.problems("test", limit=4):
        trace = run(game24, p, lm, "self_consistency", n=8, seed=0)
        leaves = [n for n in trace.nodes if n.terminal]
        assert len(leaves) == 8 and trace.usage.model_calls == 8
        keys = Counter(n.extra["key"] for n in leaves if n.extra["key"] is not None)
        if keys:
            assert game24.answer_key(p, trace.answer) in {k for k, c in keys.items() if c == max(keys.values())}


def test_oracle_best_of_n_finds_a_correct_sample_whenever_one_exists(game24_backend):
    lm = Engine(game24_backend)
    oracle = get_verifier("oracle")
    for p in game24.problems("test", limit=6):
        trace = run(game24, p, lm, "best_of_n", oracle, n=8, seed=0)
        any_right = any(game24.grade(p, n.extra["answer"]) for n in trace.nodes if n.terminal)
        assert game24.grade(p, trace.answer) == any_right
        assert trace.usage.verifier_calls == 8


def test_weighted_best_of_n_with_vote_verifier_equals_self_consistency_answer(game24_backend):
    lm = Engine(game24_backend)
    vote = get_verifier("vote")
    p = game24.problems("test", limit=1)[0]
    sc = run(game24, p, lm, "self_consistency", n=8, seed=5)
    wbon = asyncio.run(search(game24, p, lm, vote, get_method("best_of_n"),
                              SearchConfig(n=8, seed=5, knobs=parse_options("best_of_n", {"select": "weighted"}))))
    assert game24.answer_key(p, sc.answer) == game24.answer_key(p, wbon.answer)


def test_oracle_verifier_scores_steps_exactly():
    p = game24.problem("4 5 6 10")
    good = ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)", "20 + 4 = 24 (left: 24)",
            "Answer: (5 * 4) + (10 - 6) = 24"]
    bad = ["5 + 4 = 9 (left: 6 9 10)", "10 - 6 = 4 (left: 4 9)"]
    scores = asyncio.run(get_verifier("oracle").score(game24, p, [good, bad, good[:2]]))
    assert scores == [[1, 1, 1, 1], [0, 0], [1, 0]]  # an unfinished solution is not a solution
    arith = Arith()
    q = arith.make(3, 3)
    ref = arith.reference_solution(q)
    assert asyncio.run(get_verifier("oracle").score(arith, q, [ref]))[0] == [1.0] * len(ref)


@pytest.mark.parametrize(("how", "expected"), [("min", 0.2), ("last", 0.5), ("prod", 0.9 * 0.2 * 0.5),
                                               ("mean", (0.9 + 0.2 + 0.5) / 3)])
def test_aggregation(how, expected):
    assert aggregate([0.9, 0.2, 0.5], how) == pytest.approx(expected)
    assert aggregate([], how) == 0.0


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([1.0], "median")


def test_arith_policy_writes_well_formed_steps_and_solves_three_operations(arith_backend):
    """The shipped arith policy writes one `Name = x op y = a op b = c` step per line, ending with `Answer: N`, and
    solves most three-operation test problems greedily (its card: 0.9 and more up to four operations)."""
    import re

    lm = Engine(arith_backend)
    task = Arith(n_ops=3)
    problems = task.problems("test", limit=10)

    async def all_cot():
        return await asyncio.gather(*(search(task, p, lm, None, get_method("cot"), SearchConfig(max_tokens=200))
                                      for p in problems))

    name, number = r"[A-Z][a-z]+", r"-?\d+"
    step = re.compile(rf"^{name} = {name} [-+*/] (?:{name}|\d+) = {number} [-+*/] {number} = {number}$")
    traces = asyncio.run(all_cot())
    well_formed = solved = 0
    for p, t in zip(problems, traces):
        steps = task.split_steps(t.solution or "")
        well_formed += bool(steps) and all(step.match(s) for s in steps[:-1]) and steps[-1].startswith("Answer: ")
        solved += task.grade(p, t.answer)
    assert well_formed >= 9 and solved >= 7


def test_a_step_may_take_only_what_is_left_of_the_solution_budget(game24_backend):
    """`max_tokens` bounds a whole solution: the steps written so far count against it, and a prefix that has spent
    it gets the one proposal to end there, with no model call."""
    from ponder.lm.base import Metered
    from ponder.search.base import propose_steps, room
    from ponder.trace import Usage

    lm = Engine(game24_backend)
    p = game24.problem("4 5 6 10")
    prefix = ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)"]
    used = asyncio.run(lm.count_tokens(game24.join_steps(prefix)))
    assert used == len(game24.join_steps(prefix))  # the game24 policy's tokenizer reads characters
    cfg = SearchConfig(max_tokens=used + 5, temperature=1.0)
    assert asyncio.run(room(game24, lm, cfg, prefix)) == 5 and asyncio.run(room(game24, lm, cfg, [])) == used + 5
    drawn = asyncio.run(propose_steps(game24, p, lm, cfg, prefix, 8, 1.0, "budget"))
    assert all(c.generated_tokens <= 5 for c in drawn) and any(c.finish_reason == "length" for c in drawn)
    wide = SearchConfig(max_tokens=used + 5, max_step_tokens=3, temperature=1.0)
    assert all(c.generated_tokens <= 3 for c in asyncio.run(propose_steps(game24, p, lm, wide, prefix, 8, 1.0, "b")))
    usage = Usage()
    spent = SearchConfig(max_tokens=used, temperature=1.0)
    ended = asyncio.run(propose_steps(game24, p, Metered(lm, usage), spent, prefix, 8, 1.0, "budget"))
    assert [(c.text, c.finish_reason) for c in ended] == [("", "length")] and usage.model_calls == 0


def test_a_step_search_keeps_its_solutions_within_max_tokens(game24_backend):
    """Beam search whose budget allows about two steps: its paths reach the budget and none passes it (without the
    budget, each of its four steps could take `max_tokens`)."""
    lm = Engine(game24_backend)
    budget = 40
    for p in game24.problems("test", limit=3):
        trace = run(game24, p, lm, "beam", get_verifier("oracle"), n=4, seed=0, max_tokens=budget,
                    knobs=parse_options("beam", {"width": 2}))
        lengths = [len(game24_backend.encode(game24.join_steps(trace.path(n.id)))) for n in trace.nodes]
        assert budget - 5 <= max(lengths) <= budget + 1  # (+1: a step's stop character is in its tokens, not its text)
