"""STaR: hints, the generate / rationalize pass, and a whole (tiny) run that resumes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from ponder.bench.star import StarConfig, all_steps_right, rationales, run_star, split_problems
from ponder.errors import ConfigError
from ponder.lm.base import Completion, LanguageModel, Request
from ponder.lm.engine import Engine
from ponder.tasks import get_task
from ponder.train.data import solver_pairs


class Recording(LanguageModel):
    """The real policy, with the prompts it was asked recorded."""

    def __init__(self, inner: LanguageModel) -> None:
        self.inner = inner
        self.prompts: list[str] = []

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        self.prompts.extend(r.prompt for r in requests)
        return await self.inner.generate_many(requests)


@pytest.mark.parametrize("name", ["game24", "arith"])
def test_answer_hints_are_answers_that_grade_right(name):
    task = get_task(name)
    for problem in task.problems("train", limit=5):
        hint = task.answer_hint(problem)
        assert task.grade(problem, hint), (problem.question, hint)
        assert task.hinted_prompt(problem, hint).startswith(task.prompt(problem))
        assert f"Hint: the answer is {hint}\n" in task.hinted_prompt(problem, hint)


def test_hinted_solver_pairs_give_each_path_its_own_answer():
    task = get_task("game24")
    problems = task.problems("train", limit=3)
    plain, hinted = solver_pairs(task, problems), solver_pairs(task, problems, hinted=True)
    assert len(hinted) == 2 * len(plain)
    for (prompt, steps), (hint_prompt, hint_steps) in zip(hinted[::2], hinted[1::2], strict=True):
        assert steps == hint_steps and "Hint:" not in prompt
        expression = hint_prompt.split("Hint: the answer is ")[1].strip()
        problem = next(p for p in problems if task.prompt(p) == prompt)
        # the hint is the expression these very steps build, and it solves the puzzle
        assert expression == task.extract_answer(problem, task.split_steps(steps))
        assert task.grade(problem, expression)


def test_seed_set_and_star_problems_are_disjoint_training_problems():
    task = get_task("game24")
    seed, rest = split_problems(task, StarConfig(seed_problems=20, problems=30))
    assert len(seed) == 20 and len(rest) == 30
    assert not {p.id for p in seed} & {p.id for p in rest}
    test_ids = {p.id for p in task.problems("test")}
    assert not ({p.id for p in seed} | {p.id for p in rest}) & test_ids
    with pytest.raises(ConfigError, match="filter"):
        StarConfig(filter="vibes").resolved()


def test_a_seed_set_of_streams_gives_each_stream_with_and_without_the_answer_it_reaches():
    from itertools import islice

    from ponder.bench.star import SeedSet

    task = get_task("game24")
    cfg = StarConfig(seed_problems=4, seed_offset=10, walk="streams", detour=0.5).resolved()
    seeds, rest = split_problems(task, replace(cfg, problems=20))
    train = task.problems("train", limit=40)
    assert [p.id for p in seeds] == [p.id for p in train[10:14]]  # the seed set starts after `seed_offset`
    assert {p.id for p in rest} == {p.id for p in train[:10] + train[14:24]}
    by_prompt = {task.prompt(p): p for p in seeds}
    drawn = list(islice(SeedSet(task, seeds, cfg).examples(0), 40))
    for (prompt, text), (hint_prompt, hint_text) in zip(drawn[::2], drawn[1::2], strict=True):
        problem = by_prompt[prompt]
        steps = task.split_steps(text)
        assert hint_text == text and task.solves(problem, steps)
        hint = hint_prompt.split("Hint: the answer is ")[1].strip()
        assert hint_prompt == task.hinted_prompt(problem, hint) and task.grade(problem, hint)
    assert any("back" in text for _, text in drawn), "no stream backed out of a dead end"
    # a kept stream's steps are right when the path it ends on is: its dead ends are wrong by design
    detoured = next(text for _, text in drawn if "back" in text)
    problem = by_prompt[next(prompt for prompt, text in drawn if text == detoured)]
    assert all_steps_right(task, problem, task.split_steps(detoured))
    assert not all(x > 0 for x in task.step_labels(problem, task.split_steps(detoured)))
    assert len(SeedSet(task, seeds, cfg)) == 8  # two examples a problem, each drawn afresh
    for bad in (dict(walk="revisions"), dict(walk="sideways"), dict(detour=0.5), dict(walk="streams", detour=2)):
        with pytest.raises(ConfigError):
            StarConfig(**bad).resolved()


@pytest.mark.parametrize("rationalize", [True, False])
def test_rationales_keep_only_solutions_and_hint_exactly_the_failures(game24_backend, rationalize):
    task = get_task("game24")
    # test puzzles, which the shipped policy sometimes fails (it solves nearly every training puzzle); nothing is
    # trained on these rationales
    problems = task.problems("test", limit=12)
    cfg = StarConfig(samples=2, temperature=0.8, rationalize=rationalize).resolved()
    lm = Recording(Engine(game24_backend))
    rows = asyncio.run(rationales(task, problems, lm, cfg, iteration=1))
    assert [r["problem_id"] for r in rows] == [p.id for p in problems]
    hinted = [p for p in lm.prompts if "Hint:" in p]
    for problem, row in zip(problems, rows, strict=True):
        if row["steps"] is not None:
            assert task.solves(problem, row["steps"])
            assert row["steps_right"] == all(task.step_labels(problem, row["steps"]))
        first_try_failed = row["source"] != "generated"
        expected = task.hinted_prompt(problem, task.answer_hint(problem))
        assert hinted.count(expected) == (cfg.samples if rationalize and first_try_failed else 0)
    assert any(r["source"] is None or r["source"] == "rationalized" for r in rows), "the policy solved everything"
    if not rationalize:
        assert not hinted


@pytest.mark.slow
def test_tiny_star_run_trains_each_iteration_and_resumes_without_retraining(tmp_path):
    cfg = StarConfig(seed_problems=6, problems=10, iterations=2, seed_steps=8, steps=4, batch_size=8,
                     eval_problems=3)
    first = run_star(cfg, tmp_path)
    assert [r["iteration"] for r in first["rows"]] == [0, 1, 2]
    assert [r["train_steps"] for r in first["rows"]] == [0, 4, 5]  # +20% per outer loop
    for n in (1, 2):
        rows = [json.loads(line) for line in (tmp_path / f"iter-{n}" / "rationales.jsonl").read_text().splitlines()]
        assert len(rows) == 10
        kept = sum(r["steps"] is not None for r in rows)
        row = first["rows"][n]
        assert row["generated"] + row["rationalized"] == kept
        assert row["examples"] == len(solver_pairs(get_task("game24"), split_problems(
            get_task("game24"), cfg)[0], hinted=True)) + kept
        # generated tokens are metered as a search's: every problem wrote at least a token, a failed one twice
        tries = 10 + sum(r["source"] != "generated" for r in rows)
        assert tries <= row["generated_tokens"] <= tries * get_task("game24").max_tokens
    assert first["rows"][0]["generated_tokens"] == 0
    weights = tmp_path / "iter-2" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_star(cfg, tmp_path)  # everything is done: nothing is retrained, the rows are the same
    assert weights.stat().st_mtime_ns == stamp
    assert [r["examples"] for r in again["rows"]] == [r["examples"] for r in first["rows"]]
    with pytest.raises(ConfigError, match="config"):
        run_star(replace(cfg, iterations=3, seed_steps=9), tmp_path)
    # an original model is shared only between runs with the same seed set and training
    with pytest.raises(ConfigError, match="other settings"):
        run_star(replace(cfg, seed_steps=9), tmp_path / "other", base=tmp_path / "base")


def test_seed_share_sets_the_share_of_seed_examples_in_fine_tuning():
    from itertools import islice

    from ponder.train.data import endless, mixture

    seed = [("s", str(i)) for i in range(50)]
    kept = [("k", str(i)) for i in range(3)]
    drawn = list(islice(mixture([endless(seed, 0), endless(kept, 1)], [0.25, 0.75], 0), 4000))
    assert 0.22 < sum(p == "s" for p, _ in drawn) / len(drawn) < 0.28
    with pytest.raises(ConfigError, match="seed_share"):
        StarConfig(seed_share=1.5).resolved()
