"""The task interface: a task that implements only the core runs every method that needs nothing more; a method
that needs an optional capability asks for it and names the tasks that have it."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

import ponder
from ponder.collect.mc import exact_labels
from ponder.collect.records import StepRecord, write_jsonl
from ponder.collect.run import CollectConfig
from ponder.collect.states import state_walks
from ponder.evaluate import EvalConfig
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, search
from ponder.tasks import (
    GSM8K,
    MATH500,
    TASKS,
    Arith,
    Backtracking,
    Game24,
    Hintable,
    Problem,
    ReferenceSolver,
    Revisable,
    RStarActions,
    StepOracle,
    Task,
    TaskError,
    get_task,
    require,
)
from ponder.tasks.base import CAPABILITIES
from ponder.train.data import solver_examples
from ponder.train.verifier import VerifierRecipe, train_verifier
from ponder.verifiers import get_verifier


class Pens(Task):
    """A task written against the core alone: three word problems in the layout the shipped arith policy reads
    (`Question: …`), answered on an `Answer: N` line."""

    name = "pens"
    default_model = "arith-policy"
    max_tokens = 160

    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        rows = [("Ann has 12 pens. Ben has 3 times as many as Ann. How many pens does Ben have?", "36"),
                ("Ann has 7 coins. Ben has 5 more than Ann. Cal has 2 fewer than Ben. How many coins does Cal have?",
                 "10"),
                ("Dee has 20 cards. Eve has 1/4 as many as Dee. How many cards does Eve have?", "5")]
        return [Problem(f"pens-{i}", q, a) for i, (q, a) in enumerate(rows)][:limit]

    def prompt(self, problem: Problem) -> str:
        return f"Question: {problem.question}\n"

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        answers = [s.split(":", 1)[1].strip() for s in steps if s.lower().startswith("answer:")]
        return answers[0] if answers else None  # the first: a small policy may go on after it

    def grade(self, problem: Problem, answer: str | None) -> bool:
        return answer is not None and answer == problem.answer


pens = Pens()


def run(problem: Problem, lm: Engine, method: str, verifier: str | None = None, **cfg: object):
    ver = get_verifier(verifier) if verifier else None
    return asyncio.run(search(pens, problem, lm, ver, get_method(method), SearchConfig(max_tokens=pens.max_tokens,
                                                                                      **cfg)))


def test_the_core_is_four_abstract_methods_and_a_core_task_has_no_capability():
    assert Task.__abstractmethods__ == {"problems", "prompt", "extract_answer", "grade"}
    assert not any(isinstance(pens, capability) for capability in CAPABILITIES)
    for capability in CAPABILITIES:  # what a capability adds is not on the core; it may refine a core hook
        added = {name for name in vars(capability) if not name.startswith("_")}
        refined = {name for name in added if name in vars(Task) and name not in Task.__abstractmethods__}
        new = added - refined  # (Backtracking.judged: a verifier judges the path a stream ends on)
        assert new and not any(hasattr(Task, name) for name in new), capability.__name__


@pytest.mark.parametrize(("method", "verifier", "n"), [("cot", None, 1), ("self_consistency", None, 4),
                                                     ("best_of_n", "vote", 4), ("beam", "depth", 4)])
def test_a_core_only_task_runs_the_methods_that_need_nothing_more(arith_backend, method, verifier, n):
    lm = Engine(arith_backend)
    for problem in pens.problems():
        trace = run(problem, lm, method, verifier, n=n, seed=0)
        assert trace.solution and trace.usage.generated_tokens > 0
        assert trace.answer == pens.extract_answer(problem, pens.split_steps(trace.solution))
        assert trace.answer is not None  # the policy's layout is the task's: it writes an answer line


def test_the_shipped_policy_solves_the_core_task_greedily(arith_backend):
    lm = Engine(arith_backend)
    graded = [pens.grade(p, run(p, lm, "cot").answer) for p in pens.problems()]
    assert all(graded), graded


def test_the_oracle_verifier_grades_outcomes_on_a_task_without_a_step_oracle(arith_backend):
    lm = Engine(arith_backend)
    problem = pens.problems(limit=1)[0]
    trace = run(problem, lm, "best_of_n", "oracle", n=4, seed=0)
    leaves = [n for n in trace.nodes if n.terminal]
    assert trace.answer is not None and len(leaves) == 4
    assert pens.grade(problem, trace.answer) == any(pens.grade(problem, n.extra["answer"]) for n in leaves)


@pytest.mark.parametrize(("method", "verifier", "missing", "having"), [
    ("revisions", "depth", "prompt that shows earlier attempts, which the revisions method needs", "game24, arith"),
    ("rstar", None, "formats for rStar's actions, which the rstar method", "arith"),
])
def test_a_method_needing_a_missing_capability_says_which_tasks_have_it(arith_backend, method, verifier, missing,
                                                                        having):
    problem = pens.problems(limit=1)[0]
    with pytest.raises(TaskError) as err:
        run(problem, Engine(arith_backend), method, verifier, n=4)
    assert str(err.value).startswith(f"task 'pens' has no {missing}")
    assert str(err.value).endswith(f"; tasks with one: {having}")


def test_commands_needing_the_step_oracle_name_the_tasks_that_have_one():
    gsm8k = get_task("gsm8k")
    problem = gsm8k.from_text("0")
    with pytest.raises(TaskError, match=r"^task 'gsm8k' has no exact step oracle, which labelling random walks "
                                        r"through its states \(`ponder collect states`\) needs; "
                                        r"tasks with one: game24, arith$"):
        state_walks(gsm8k, problem, walks=1, seed=0)
    for labeller in ("oracle", "states", "search"):  # refused before a model loads
        with pytest.raises(TaskError, match=rf"^task 'gsm8k' has no exact step oracle, which `ponder collect "
                                            rf"{labeller}` needs; tasks with one: game24, arith$"):
            CollectConfig(task="gsm8k", labeller=labeller).resolved()
    with pytest.raises(TaskError, match="no exact step oracle, which the oracle labeller"):
        exact_labels(pens, pens.problems(limit=1)[0], ["Answer: 36"])
    with pytest.raises(TaskError, match="task 'pens' has no reference solutions, which training on the solver's"):
        next(solver_examples(pens, {"train": 1.0}, "paths", seed=0))
    with pytest.raises(TaskError, match=r"task 'gsm8k' has no formats for rStar's actions.*tasks with one: arith$"):
        next(solver_examples(gsm8k, {"train": 1.0}, "actions", seed=0, limit=1))


def test_a_data_file_is_a_core_task_and_says_what_it_lacks(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n')
    task = get_task(f"data:{path}")
    assert not any(isinstance(task, capability) for capability in CAPABILITIES)
    with pytest.raises(TaskError, match=r"^task 'data:mine.jsonl' has no exact step oracle, .*tasks with one: game24, "
                                        r"arith$"):
        state_walks(task, task.problems()[0], walks=1, seed=0)


def test_training_a_verifier_on_a_task_without_an_oracle_fails_before_training(tmp_path):
    records = tmp_path / "records.jsonl"
    write_jsonl([StepRecord("What is 2 + 3?", ["2 + 3 = 5", "The answer is 5."], [1.0, 1.0], task="gsm8k",
                            problem_id="gsm8k-train-0").to_dict()], records)
    recipe = replace(VerifierRecipe.load("arith-orm"), task="gsm8k", data=str(records))
    with pytest.raises(TaskError, match="task 'gsm8k' has no exact step oracle, which a learned verifier's self-test"):
        train_verifier(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing trained, nothing saved


def test_require_returns_the_task_itself_when_it_has_the_capability():
    game24 = Game24()
    assert require(game24, StepOracle, "anything") is game24


def test_the_built_in_tasks_have_the_capabilities_they_claim():
    claims = {Game24: {StepOracle, ReferenceSolver, Hintable, Revisable, Backtracking},
              Arith: {StepOracle, ReferenceSolver, Hintable, Revisable, RStarActions},
              GSM8K: {ReferenceSolver}, MATH500: {ReferenceSolver}}
    assert set(claims) == set(TASKS.values())
    for make, capabilities in claims.items():
        task = make()
        assert {c for c in CAPABILITIES if isinstance(task, c)} == capabilities, make.__name__
        problem = task.problems("test", limit=1)[0]
        solution = task.reference_solution(problem)
        assert solution and task.solves(problem, solution)  # each claim holds on a real problem
        if isinstance(task, StepOracle):
            assert task.is_solvable(problem) and all(task.step_labels(problem, solution))
            assert task.check_step(problem, [*solution[:-1], "garbage"]) is False
            assert task.moves(problem, []) and task.step_candidates(problem, [])
        if isinstance(task, Hintable):
            assert task.hinted_prompt(problem, "7").startswith(task.prompt(problem))
            assert task.grade(problem, task.answer_hint(problem))
        if isinstance(task, Revisable):
            shown = task.revision_prompt(problem, [solution])
            assert shown.startswith(task.prompt(problem)) and task.join_steps(solution) in shown
        if isinstance(task, RStarActions):
            actions = task.action_solution(problem, random.Random(0))
            assert task.solves(problem, actions) and task.actions.subquestion


def test_game24_solvability_comes_from_the_oracle():
    game24 = Game24()
    assert game24.is_solvable(game24.problem("4 5 6 10"))
    assert not game24.is_solvable(game24.problem("1 1 1 1"))


@pytest.mark.parametrize(("task", "method", "missing"), [("game24", "rstar", "formats for rStar's actions"),
                                                        ("gsm8k", "revisions", "prompt that shows earlier attempts")])
def test_eval_and_solve_refuse_a_method_whose_capability_the_task_lacks_before_any_model_loads(task, method, missing,
                                                                                               tmp_path):
    with pytest.raises(TaskError, match=f"^task '{task}' has no {missing}, which the {method} method needs"):
        EvalConfig(task=task, methods=[method]).resolved()
    with pytest.raises(TaskError, match=f"which the {method} method needs"):
        ponder.solve("0" if task == "gsm8k" else "4 5 6 10", task=task, method=method, model="/no/such/model")
