from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.tasks import Arith, TaskError
from ponder.tasks.arith import generate

task = Arith()
seeds = st.integers(0, 10**9)
ops = st.integers(2, 12)  # 2-8 in train and test, 9-12 in the long split


@settings(max_examples=200, deadline=None)
@given(seeds, ops)
def test_reference_solution_is_accepted_at_every_prefix(seed, n_ops):
    problem = task.make(seed, n_ops)
    ref = task.reference_solution(problem)
    assert len(ref) == n_ops + 1
    assert all(task.check_step(problem, ref[:i]) for i in range(len(ref) + 1))
    assert task.grade(problem, task.extract_answer(problem, ref))


@settings(max_examples=200, deadline=None)
@given(seeds, ops, st.data())
def test_a_corrupted_step_is_rejected(seed, n_ops, data):
    problem = task.make(seed, n_ops)
    ref = task.reference_solution(problem)
    i = data.draw(st.integers(0, n_ops - 1))
    tokens = ref[i].split()  # Name = x op y = a op b = c
    where = data.draw(st.sampled_from([0, 2, 3, 4, 6, 7, 8, 10]))
    if where == 0:
        tokens[0] = data.draw(st.sampled_from(["Zed", ref[(i + 1) % n_ops].split()[0]]))
    elif where in (3, 7):
        tokens[where] = data.draw(st.sampled_from([o for o in "+-*/" if o != tokens[where]]))
    elif tokens[where].isdigit():
        tokens[where] = str(int(tokens[where]) + data.draw(st.integers(1, 9)))
    else:  # a quantity's name in the relation
        tokens[where] = data.draw(st.sampled_from(["Zed", tokens[0]]))
    bad = " ".join(tokens)
    if bad == ref[i]:
        return
    assert task.check_step(problem, ref[:i])
    assert not task.check_step(problem, [*ref[:i], bad])


def test_commutative_steps_swap_relation_and_values_together():
    problem = next(p for p in task.problems("train", limit=200) if task.reference_solution(p)[0].split()[3] in "+*")
    name, _, x, op, y, _, a, _, b, _, c = task.reference_solution(problem)[0].split()
    assert task.check_step(problem, [f"{name} = {y} {op} {x} = {b} {op} {a} = {c}"])
    assert not task.check_step(problem, [f"{name} = {y} {op} {x} = {a} {op} {b} = {c}"] if a != b else ["x"])


def test_a_step_may_not_use_a_quantity_before_it_is_computed():
    problem = task.make(5, 4)
    ref = task.reference_solution(problem)
    assert task.check_step(problem, ref[:2]) and not task.check_step(problem, [ref[1]])
    assert task.moves(problem, ref[:1]) == [ref[1]]
    assert task.moves(problem, ref[:-1]) == [ref[-1]]
    assert task.moves(problem, [ref[1]]) == [] and task.moves(problem, ref) == []


def test_every_value_is_two_digit_at_most():
    for p in task.problems("train", limit=3000):
        assert all(1 <= q.value <= 99 for q in p.meta["quantities"]), p.question


@given(seeds, ops)
def test_generation_is_deterministic(seed, n_ops):
    assert generate(seed, n_ops) == generate(seed, n_ops)


def test_difficulty_knob_and_splits():
    test = task.problems("test")
    assert len(test) == 200
    assert {p.meta["n_ops"] for p in test} == set(range(2, 9))
    train_questions = {p.question for p in task.problems("train", limit=2000)}
    assert not train_questions & {p.question for p in test}
    assert all(p.meta["n_ops"] == 5 for p in Arith(n_ops=5).problems("test", limit=10))


def test_bad_inputs():
    with pytest.raises(TaskError, match="n_ops must be between 2 and 12"):
        Arith(n_ops=13).problems()
    with pytest.raises(TaskError, match="splits"):
        task.problems("dev")
    p = task.make(1, 3)
    assert not task.grade(p, "lots")
    assert not task.grade(p, None)
    assert not task.check_step(p, ["Answer: " + str(int(p.answer) + 1)])
    assert not task.check_step(p, ["garbage", "Answer: " + p.answer])
    assert task.check_step(p, ["Answer: " + p.answer])  # a right final answer is a right prefix


def test_step_repeated_is_rejected():
    p = task.make(7, 4)
    ref = task.reference_solution(p)
    assert not task.check_step(p, [ref[0], ref[0]])


def test_error_kinds_tell_false_equations_from_true_ones_about_the_wrong_quantity():
    task = Arith()
    problem = task.problems("test", limit=1)[0]
    first = task.reference_solution(problem)[0]  # e.g. "Eve = Cal - 8 = 15 - 8 = 7"
    assert task.error_kind(problem, [f"{first.rsplit(' ', 1)[0]} {int(first.split()[-1]) + 1}"]) == "arithmetic"
    assert task.error_kind(problem, ["Zed = Ann + 2 = 2 + 2 = 4"]) == "wrong quantity"
    assert task.error_kind(problem, ["Answer: -1"]) == "answer"


@settings(max_examples=50, deadline=None)
@given(seeds, ops)
def test_step_candidates_hold_the_one_right_step_and_slips_that_carry_on(seed, n_ops):
    problem = task.make(seed, n_ops)
    ref = task.reference_solution(problem)
    for k in range(len(ref)):
        candidates = task.step_candidates(problem, ref[:k])
        right = [c for c in candidates if task.check_step(problem, [*ref[:k], c])]
        assert ref[k] in right and set(right) <= {ref[k], ref[-1]}  # an early answer is right when it is the answer
    slip = task.step_candidates(problem, [])[1]  # the first result off by one
    written = slip.split()[-1]
    after = task.step_candidates(problem, [slip])
    assert after and (after[0].startswith("Answer: " + written) or f" {written} " in after[0])
    assert task.step_candidates(problem, ref) == [] and task.step_candidates(problem, ["garbage"]) == []


def test_a_stored_record_rebuilds_its_problem_and_drills_its_moves():
    from ponder.collect.records import StepRecord
    from ponder.train.sft import move_pairs

    problem = task.problems("train", limit=4)[3]
    ref = task.reference_solution(problem)
    assert task.rebuild(problem.id, problem.question).meta["quantities"] == problem.meta["quantities"]
    assert task.rebuild("arith-train-3", "another question").meta == {}  # a mismatch is not guessed at
    record = StepRecord(problem.question, ref, [1.0] * len(ref), task="arith", problem_id=problem.id)
    assert [move for _, move in move_pairs(task, [record])] == ref


def test_the_long_split_holds_longer_chains_and_leaves_the_other_splits_as_they_were():
    long = task.problems("long", limit=8)
    assert [task.difficulty(p) for p in long] == [9, 10, 11, 12] * 2
    assert not {p.question for p in long} & {p.question for p in task.problems("test", limit=200)}
    for problem in long:
        names = {q.name for q in problem.meta["quantities"]}
        assert len(names) == len(problem.meta["quantities"]) <= 20  # one name each, within the 20 names
        assert task.check_step(problem, task.reference_solution(problem))
        assert task.rebuild(problem.id, problem.question).meta == problem.meta
    # the test split is pinned: problems of up to 9 operations draw exactly as before the long split existed
    assert task.problems("test", limit=1)[0].question == (
        "Cal has 15 marbles. Eve has 8 fewer than Cal. Sue has 24. Ben has as many as Eve and Sue together. "
        "How many marbles does Ben have?")
    assert generate(7, 8)[0].startswith("Kim has 3 apples. Eve has 2 times as many as Kim. Ben has 21.")
    with pytest.raises(TaskError, match="'long'"):
        task.problems("longer")
