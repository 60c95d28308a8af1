from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.tasks import Game24, TaskError
from ponder.tasks.exact import apply_op, format_number, parse_equation
from ponder.tasks.game24 import load_puzzles, solutions

task = Game24()
numbers = st.lists(st.integers(1, 13), min_size=4, max_size=4).map(tuple)


def brute_force(values: list[Fraction]) -> bool:
    """Independent check: every expression tree over every ordering, evaluated bottom-up."""

    def results(xs: tuple[Fraction, ...]) -> set[Fraction]:
        if len(xs) == 1:
            return {xs[0]}
        out = set()
        for cut in range(1, len(xs)):
            for a in results(xs[:cut]):
                for b in results(xs[cut:]):
                    out |= {a + b, a - b, a * b}
                    if b != 0:
                        out.add(a / b)
        return out

    return any(Fraction(24) in results(p) for p in itertools.permutations(values))


@settings(max_examples=60, deadline=None)
@given(numbers)
def test_solver_agrees_with_brute_force(nums):
    problem = task.problem(nums)
    expected = brute_force([Fraction(n) for n in nums])
    assert task.is_solvable(problem) == expected
    paths = solutions(nums, limit=5)
    assert bool(paths) == expected
    for path in paths:
        assert all(task.check_step(problem, path[:i]) for i in range(1, len(path) + 1))
        assert task.grade(problem, task.extract_answer(problem, path))


@settings(max_examples=150, deadline=None)
@given(numbers, st.data())
def test_oracle_agrees_with_brute_force_on_any_first_step(nums, data):
    """A random first step, right or wrong: the oracle accepts it iff it is exact and 24 is still reachable."""
    problem = task.problem(nums)
    i, j = data.draw(st.lists(st.integers(0, 3), min_size=2, max_size=2, unique=True))
    op = data.draw(st.sampled_from("+-*/"))
    a, b = Fraction(nums[i]), Fraction(nums[j])
    true_c = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
    c = data.draw(st.sampled_from([x for x in (true_c, Fraction(data.draw(st.integers(-5, 30)))) if x is not None]))
    left = sorted([Fraction(n) for k, n in enumerate(nums) if k not in (i, j)] + [c])
    step = f"{format_number(a)} {op} {format_number(b)} = {format_number(c)} (left: " \
           f"{' '.join(format_number(x) for x in left)})"
    expected = c == true_c and brute_force(left)
    assert task.check_step(problem, [step]) == expected


def test_oracle_rejects_bad_steps():
    p = task.problem("4 5 6 10")
    good = ["10 - 4 = 6 (left: 5 6 6)", "6 - 5 = 1 (left: 1 6)", "6 * 1 = 6 (left: 6)"]
    assert task.check_step(p, good[:1])
    assert not task.check_step(p, good)  # arithmetic right, but 6 is not 24
    assert not task.check_step(p, ["10 - 4 = 7 (left: 5 6 7)"])  # wrong arithmetic
    assert not task.check_step(p, ["10 - 4 = 6 (left: 5 6)"])  # wrong left list
    assert not task.check_step(p, ["10 - 3 = 7 (left: 4 5 6 7)"])  # 3 is not available
    assert not task.check_step(p, ["10 - 4 = 6"])  # no left list
    assert not task.check_step(p, ["hello world"])
    assert not task.check_step(p, ["10 / 0 = 0 (left: 0 4 5 6)"])


def test_fraction_steps_parse_by_spaces():
    p = task.problem("1 4 5 6")
    steps = ["5 / 4 = 5/4 (left: 1 5/4 6)", "5/4 - 1 = 1/4 (left: 1/4 6)", "6 / 1/4 = 24 (left: 24)"]
    assert all(task.check_step(p, steps[:i]) for i in (1, 2, 3))
    assert task.grade(p, task.extract_answer(p, steps))
    assert not task.check_step(p, ["1 / 4 = 1/4 (left: 1/4 5 6)"])  # exact, but 24 is out of reach
    assert not task.check_step(p, ["4 / 1 = 4 (left: 4 5 6)", "6 / 1/4 = 24 (left: 5 24)"])  # 1/4 not available


def test_grade_checks_numbers_and_value_and_never_evaluates_text():
    p = task.problem("4 5 6 10")
    assert task.grade(p, "(5 * 4) + (10 - 6)")
    assert not task.grade(p, "(5 * 4) + 4")  # value 24 but wrong numbers
    assert not task.grade(p, "4 * 5 + 6 + 10")  # right numbers, wrong value
    assert not task.grade(p, "__import__('os').system('true')")
    assert not task.grade(p, "(5 * 4) + (10 - 6")
    assert not task.grade(p, "4 / (5 - 5) + 6 * 10")
    assert not task.grade(p, None)
    assert not task.grade(p, "9" * 5000)


def test_impossible_puzzle_is_graded_wrong():
    p = task.problem("1 1 1 1")
    assert not task.is_solvable(p)
    assert task.reference_solution(p) is None
    assert not task.check_step(p, ["1 + 1 = 2 (left: 1 1 2)"])


def test_test_split_is_ranks_901_to_1000_and_train_excludes_it():
    test, train = task.problems("test"), task.problems("train")
    assert [p.id for p in test] == [f"game24-{r}" for r in range(901, 1001)]
    assert test[0].question == "4 5 6 10"
    assert not {p.id for p in test} & {p.id for p in train}
    assert len(train) + len(test) == 1362


def test_shipped_puzzles_match_the_source_copy(data_dir):
    assert load_puzzles(data_dir / "game24" / "24.csv") == load_puzzles()


@pytest.mark.parametrize(("text", "message"), [
    ("Rank,Puzzles\n1,1 2 3\n", ":2: expected four non-negative integers"),
    ("Rank,Puzzles\n1,1 2 3 4\nx,1 2 3 4\n", ":3: expected 'rank,a b c d"),
    ("Name,Numbers\n1,1 2 3 4\n", ":1: expected a header"),
    ("Rank,Puzzles\n1,1 2 3 four\n", ":2: expected four non-negative integers"),
])
def test_malformed_puzzle_file(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TaskError, match=message):
        Game24(path).problems("all")


def test_missing_puzzle_file(tmp_path):
    with pytest.raises(TaskError, match="cannot read puzzle file"):
        Game24(tmp_path / "missing.csv").problems()


@pytest.mark.parametrize(("steps", "kind"), [
    (["10 - 4 = 7 (left: 5 6 7)"], "arithmetic"),
    (["10 - 4 = 6 (left: 5 6)"], "bookkeeping"),  # a number dropped from the list
    (["11 - 4 = 7 (left: 5 6 7)"], "bookkeeping"),  # 11 is not on the table
    (["5 + 4 = 9 (left: 6 9 10)"], "dead end"),  # true, but 6 9 10 cannot make 24
    (["ten minus four"], "format"),
    (["Answer: 4 + 5 + 6 + 10 = 24"], "answer"),
])
def test_error_kinds_name_the_mistake_of_a_wrong_last_step(steps, kind):
    task = Game24()
    problem = task.problem("4 5 6 10")
    assert task.check_step(problem, steps) is False
    assert task.error_kind(problem, steps) == kind


def test_step_candidates_are_every_move_and_four_wrong_versions_of_each_of_many_kinds():
    game = Game24()
    problem = game.problem("1 3 4 6")
    first = game.step_candidates(problem, [])
    assert first == game.step_candidates(problem, [])  # reproducible: walks are seeded by their own rng
    good_equations = [s for s in first if game._replay(problem, [s]) is not None]
    assert good_equations == game.moves(problem, [])  # the moves, in the candidates' order
    assert len(first) == 5 * len(good_equations)  # each move, then four slips of it
    slips = [s for s in first if s not in good_equations]
    assert not any(game.check_step(problem, [s]) for s in slips)
    kinds = Counter(game.error_kind(problem, [s]) for s in slips)
    assert kinds["arithmetic"] >= len(good_equations) and kinds["bookkeeping"] >= len(good_equations)
    # wrong results are not only off by one: a verifier must learn to check the arithmetic, not a slip's shape
    offsets = set()
    for s in slips:
        a, op, b, c = parse_equation(s.split())
        right = apply_op(a, op, b)
        if right is not None and right != c and a in (1, 3, 4, 6) and b in (1, 3, 4, 6):
            offsets.add(abs(c - right))
    assert len(offsets) >= 5
    # after a slip the walk goes on from the numbers the slip wrote
    moves = game.step_candidates(problem, ["6 * 4 = 25 (left: 1 3 25)"])[::5]
    assert len(moves) >= 3
    for move in moves:
        a, op, b, c = parse_equation(move.split())
        assert {a, b} <= {1, 3, 25} and apply_op(a, op, b) == c


@settings(max_examples=80, deadline=None)
@given(numbers, st.data())
def test_oracle_prefix_scores_agree_with_brute_force_on_random_prefixes(nums, data):
    """Random prefixes of one to three steps, each step exact or not: step i scores 1 iff every step so far is exact
    and 24 is still reachable from what is left after it (the verifier's `score_prefixes`)."""
    import asyncio

    from ponder.verifiers.base import OracleVerifier

    problem = task.problem(nums)
    values, steps, expected, ok = [Fraction(n) for n in nums], [], [], True
    for _ in range(data.draw(st.integers(1, 3))):
        i, j = data.draw(st.lists(st.integers(0, len(values) - 1), min_size=2, max_size=2, unique=True))
        op = data.draw(st.sampled_from("+-*/"))
        a, b = values[i], values[j]
        if op == "/" and b == 0:
            op = "+"
        true_c = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        c = true_c if data.draw(st.booleans()) else Fraction(data.draw(st.integers(-5, 30)))
        values = sorted([x for k, x in enumerate(values) if k not in (i, j)] + [c])
        steps.append(f"{format_number(a)} {op} {format_number(b)} = {format_number(c)} "
                     f"(left: {' '.join(format_number(x) for x in values)})")
        ok = ok and c == true_c
        expected.append(float(ok and brute_force(values)))
    [scores] = asyncio.run(OracleVerifier().score_prefixes(task, problem, [steps]))
    assert scores == expected


def test_back_steps_return_to_a_state_on_the_path_and_the_answer_is_the_path_a_stream_ends_on():
    p = task.problem("4 5 6 10")
    dead = ["10 + 5 = 15 (left: 4 6 15)", "15 + 4 = 19 (left: 6 19)"]
    assert task.back_step(p, dead[:1]) == "back (left: 4 6 15)" and task.back_step(p, []) == "back (left: 4 5 6 10)"
    stream = [*dead, task.back_step(p, dead[:1]), "15 - 6 = 9 (left: 4 9)", task.back_step(p, []),
              "10 - 4 = 6 (left: 5 6 6)", "6 - 5 = 1 (left: 1 6)", "back (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)",
              "30 - 6 = 24 (left: 24)"]
    assert task.resolve(p, stream) == ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]
    assert task.grade(p, task.extract_answer(p, stream)) and task.is_final(stream)
    # the oracle judges a stream by the state it is in: after backing out of a dead end it is alive again
    assert not task.check_step(p, stream[:2]) and task.check_step(p, stream[:5]) and task.check_step(p, stream)
    # a back step to a state that is not on the path (nor the start) is wrong, and so is everything after it
    lost = [dead[0], "back (left: 1 2 3)", "10 - 4 = 6 (left: 5 6 6)"]
    assert task.resolve(p, lost) is None and not task.check_step(p, lost[:2]) and not task.check_step(p, lost)
    assert not task.grade(p, task.extract_answer(p, [*lost, "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]))
