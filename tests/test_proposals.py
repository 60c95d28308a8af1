from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import combinations
from math import comb

import pytest

from ponder.evaluate.proposals import ProposalConfig, measure, recall_at, solver_states, summarize
from ponder.lm.base import Completion, LanguageModel, Request
from ponder.tasks import Game24, TaskError, get_task
from ponder.tasks.base import Problem, Task
from ponder.trace import Usage

RIGHT_PER_DEPTH = {0: 3, 1: 0, 2: 16}  # how many of the 16 proposals the script makes right, by depth


class ScriptedProposer(LanguageModel):
    """A fake policy whose proposals are known: at a state of depth d, the first RIGHT_PER_DEPTH[d] of the 16
    proposals are right moves (cycling through them) and the rest a move with a wrong result; asked for 16
    distinct proposals, it gives the same 16 in reverse, wrong ones first. A whole solution (a rollout) is the
    solver's reference solution."""

    def __init__(self, task: Game24, problems: list[Problem]) -> None:
        self.task = task
        self.by_prompt = {task.prompt(p): p for p in problems}
        self.asked: dict[str, int] = defaultdict(int)

    def _state(self, prompt: str) -> tuple[Problem, list[str]]:
        head, _, rest = prompt.partition("\n")
        return self.by_prompt[head + "\n"], self.task.split_steps(rest)

    def _proposal(self, problem: Problem, prefix: list[str], i: int) -> str:
        good = [m for m in self.task.moves(problem, prefix) if self.task.check_step(problem, [*prefix, m])]
        if i < RIGHT_PER_DEPTH[len(prefix)]:
            return good[i % len(good)]
        a, op, b = good[0].split()[:3]
        return f"{a} {op} {b} = {1000 + i} (left: 1 2 3)"  # no two numbers of these puzzles make 1000 or more

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        out = []
        for r in requests:
            problem, prefix = self._state(r.prompt)
            if r.n > 1:
                out.append([Completion(self._proposal(problem, prefix, i), 10, 5, "stop")
                            for i in reversed(range(r.n))])
                continue
            if "\n" in r.params.stop:
                i = self.asked[r.prompt] % 16
                self.asked[r.prompt] += 1
                text = self._proposal(problem, prefix, i)
            else:
                text = self.task.join_steps(self.task.reference_solution(problem)[:-1])
            out.append([Completion(text, 10, len(text), "stop")])
        return out


def test_recall_estimator_is_the_share_of_k_subsets_holding_a_right_proposal():
    for k, right in [(6, 0), (6, 1), (6, 3), (5, 5)]:
        flags = [True] * right + [False] * (k - right)
        for at in range(1, k + 1):
            subsets = list(combinations(flags, at))
            assert recall_at(k, right, at) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError, match="at least 16"):
        recall_at(8, 1, 16)


def test_recall_bench_on_a_scripted_policy_gives_the_known_recall():
    task = Game24()
    problems = [task.problem("4 5 6 10", id="a"), task.problem("1 3 4 6", id="b")]
    cfg = ProposalConfig(k=16, recall_at=(1, 4, 16), paths=3, rollouts=2)
    records, usage = asyncio.run(measure(task, problems, ScriptedProposer(task, problems), cfg))
    rows = summarize(records, cfg, usage)
    by = {(r["source"], r["depth"]): r for r in rows}
    for source in ("solver", "policy"):
        for depth, right in RIGHT_PER_DEPTH.items():
            row = by[(source, depth)]
            assert row["recall@1"] == pytest.approx(right / 16)
            assert row["recall@4"] == pytest.approx(1 - comb(16 - right, 4) / comb(16, 4))
            assert row["recall@16"] == (1.0 if right else 0.0)
            assert row["right"] == pytest.approx(right / 16)
            assert row["arithmetic"] == pytest.approx(right / 16)  # the wrong ones are all false equations
    # the policy's states: the empty prefix and the two unfinished prefixes of each reference solution
    assert by[("policy", 0)]["states"] == 2 and by[("policy", 1)]["states"] == 2 and by[("policy", 2)]["states"] == 2
    assert by[("policy", "all")]["states"] == 6
    assert usage.model_calls == 16 * sum(r["states"] for r in rows if r["depth"] == "all")
    assert by[("solver", 1)]["distinct"] == 16  # 16 different wrong results


class WordCounter(ScriptedProposer):
    """The scripted policy, counting a text's tokens as its words."""

    async def count_tokens(self, text: str) -> int | None:
        return len(text.split())


def test_a_state_past_the_solutions_token_budget_is_not_measured():
    task = Game24()
    problems = [task.problem("4 5 6 10", id="a")]
    cfg = ProposalConfig(k=16, recall_at=(16,), paths=3, rollouts=0, max_tokens=12)  # one step is 9 words
    records, _ = asyncio.run(measure(task, problems, WordCounter(task, problems), cfg, sources=("solver",)))
    assert [r["depth"] for r in records] == [0, 1, 1] and all(r["k"] == 16 for r in records)
    assert summarize(records, cfg, Usage())[-1]["recall@16"] == pytest.approx(1 / 3)  # depth 0 right, depth 1 not
    whole = ProposalConfig(k=16, recall_at=(16,), paths=3, rollouts=0)  # the task's budget: every state
    records, _ = asyncio.run(measure(task, problems, WordCounter(task, problems), whole, sources=("solver",)))
    assert {r["depth"] for r in records} == {0, 1, 2}


def test_distinct_proposals_count_recall_at_k_in_the_order_drawn():
    task = Game24()
    problems = [task.problem("4 5 6 10", id="a"), task.problem("1 3 4 6", id="b")]
    cfg = ProposalConfig(k=16, recall_at=(1, 4, 16), paths=3, rollouts=2, distinct=True)
    records, usage = asyncio.run(measure(task, problems, ScriptedProposer(task, problems), cfg))
    by = {(r["source"], r["depth"]): r for r in summarize(records, cfg, usage)}
    for depth, right in RIGHT_PER_DEPTH.items():  # the first right one is drawn at place 16 - right
        for at in (1, 4, 16):
            assert by[("solver", depth)][f"recall@{at}"] == float(right > 0 and 16 - right < at)
    assert usage.model_calls == sum(r["states"] for r in by.values() if r["depth"] == "all")  # one request a state


def test_solver_states_follow_solver_solutions_and_every_one_is_right():
    task = Game24()
    problem = task.problem("4 5 6 10", id="p")
    states = solver_states(task, problem, paths=5, seed=0)
    assert states[0] == [] and all(task.check_step(problem, s) for s in states[1:])
    assert states == solver_states(task, problem, paths=5, seed=0)  # reproducible
    assert {len(s) for s in states} == {0, 1, 2}


def test_recall_bench_refuses_a_task_without_an_oracle_and_unknown_sources():
    class NoOracle(Task):
        name = "free"

        def problems(self, split="test", limit=None):
            return [Problem("x", "2 + 2?")]

        def prompt(self, problem):
            return problem.question + "\n"

        def extract_answer(self, problem, steps):
            return None

        def grade(self, problem, answer):
            return False

    with pytest.raises(TaskError, match="no exact step oracle"):
        asyncio.run(measure(NoOracle(), NoOracle().problems(), None, ProposalConfig()))
    task = get_task("game24")
    with pytest.raises(ValueError, match="k >= 1"):
        ProposalConfig(k=0)
    with pytest.raises(TaskError, match="unknown state source"):
        asyncio.run(measure(task, task.problems(limit=1), None, ProposalConfig(), sources=("dreams",)))
