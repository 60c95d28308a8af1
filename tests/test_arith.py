from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.tasks import Arith, TaskError
from ponder.tasks.arith import generate

task = Arith()
seeds = st.integers(0, 10**9)
ops = st.integers(2, 8)


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
    name, _, a, op, b, _, c = ref[i].split()
    field = data.draw(st.sampled_from(["a", "b", "c", "op", "name"]))
    delta = data.draw(st.integers(1, 9))
    parts = {"a": a, "b": b, "c": c, "op": op, "name": name}
    if field == "op":
        parts["op"] = data.draw(st.sampled_from([o for o in "+-*/" if o != op]))
    elif field == "name":
        parts["name"] = data.draw(st.sampled_from(["Zed", ref[(i + 1) % n_ops].split()[0]]))
    else:
        parts[field] = str(int(parts[field]) + delta)
    bad = f"{parts['name']} = {parts['a']} {parts['op']} {parts['b']} = {parts['c']}"
    if bad == ref[i]:
        return
    corrupted = [*ref[:i], bad]
    assert task.check_step(problem, ref[:i])
    assert not task.check_step(problem, corrupted)


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
    with pytest.raises(TaskError, match="n_ops must be between 2 and 8"):
        Arith(n_ops=9).problems()
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
    first = task.reference_solution(problem)[0]  # e.g. "Eve = 15 - 8 = 7"
    name, _, a, op, b, _, c = first.split()
    assert task.error_kind(problem, [f"{name} = {a} {op} {b} = {int(c) + 1}"]) == "arithmetic"
    assert task.error_kind(problem, ["Zed = 2 + 2 = 4"]) == "wrong quantity"
    assert task.error_kind(problem, ["Answer: -1"]) == "answer"
