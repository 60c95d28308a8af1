"""Sequential revisions: the revision pairs the data engine writes, the search's chains and its hierarchical
selection on a scripted policy, then the shipped policy that revises."""

from __future__ import annotations

import asyncio
from itertools import islice

import pytest

from ponder.lm.base import Completion, LanguageModel, Request
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.tasks import Game24
from ponder.train.data import solver_examples
from ponder.verifiers import get_verifier

task = Game24()
PROBLEM = task.problem("4 5 6 10")
WRONG = ["5 + 4 = 9 (left: 6 9 10)", "10 - 9 = 1 (left: 1 6)", "6 * 1 = 6 (left: 6)"]
RIGHT = ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)", "20 + 4 = 24 (left: 24)"]


def test_revision_pairs_show_wrong_attempts_then_a_right_solution_that_keeps_their_right_steps():
    problems = {p.question: p for p in task.problems("train", 40)}
    drawn = list(islice(solver_examples(task, {"train": 1.0}, "revisions", seed=0, limit=40), 300))
    plain = [d for d in drawn if "Attempt 1:" not in d[0]]
    assert 40 < len(plain) < 140  # about 30% start a chain
    for prompt, solution in drawn:
        head, _, shown = prompt.partition("\n")
        problem = problems[head.removeprefix("Input: ")]
        target = task.split_steps(solution)
        assert task.solves(problem, target) and task.check_step(problem, target)
        if not shown:
            continue
        assert shown.endswith("Revision:\n")
        blocks = shown.removesuffix("Revision:\n").split("Attempt ")[1:]
        attempts = [task.split_steps(a.partition("\n")[2]) for a in blocks]
        assert 1 <= len(attempts) <= 3 and not any(task.solves(problem, a) for a in attempts)
        last = attempts[-1]
        right = max(i for i in range(len(last) + 1) if task.check_step(problem, last[:i]))
        assert target[:right] == last[:right] or right == len(last)  # the revision keeps the right steps


class Reviser(LanguageModel):
    """Writes WRONG when it sees no attempt, RIGHT once it sees one; records how many attempts each prompt shows."""

    name = "reviser"

    def __init__(self) -> None:
        self.shown: list[int] = []

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        out = []
        for r in requests:
            self.shown.append(r.prompt.count("Attempt "))
            steps = RIGHT if self.shown[-1] else WRONG
            out.append([Completion(task.join_steps(steps), 10, 10, "stop")])
        return out


def run(lm: LanguageModel, n: int, verifier: str = "oracle", **options):
    cfg = SearchConfig(n=n, max_tokens=task.max_tokens, knobs=parse_options("revisions", options))
    return asyncio.run(search(task, PROBLEM, lm, get_verifier(verifier), get_method("revisions"), cfg))


def test_chains_show_their_last_attempts_and_the_verifier_picks_across_them():
    lm = Reviser()
    trace = run(lm, n=8, sequential=4, context=2)
    assert sorted(lm.shown) == [0, 0, 1, 1, 2, 2, 2, 2]  # two chains: 0, 1, 2, 2 attempts shown (context 2)
    assert trace.answer is not None and task.grade(PROBLEM, trace.answer)
    assert trace.extra["chains"] == 2 and trace.usage.model_calls == 8 and trace.usage.verifier_calls == 8
    leaves = [n for n in trace.nodes if n.terminal]
    places = sorted((n.extra["chain"], n.extra["attempt"]) for n in leaves)
    assert places == [(c, k) for c in range(2) for k in range(4)]
    # sequential = 1 is best-of-n: no attempt ever shown, nothing right to pick
    lm = Reviser()
    trace = run(lm, n=4, sequential=1)
    assert lm.shown == [0] * 4 and not task.grade(PROBLEM, trace.answer)
    with pytest.raises(ValueError, match="below sequential"):
        run(Reviser(), n=2, sequential=4)


@pytest.mark.slow
def test_the_shipped_policy_revises_a_wrong_attempt(game24_revision_backend):
    from ponder.lm.engine import Engine

    engine = Engine(game24_revision_backend)
    prompt = task.revision_prompt(PROBLEM, [WRONG])
    from ponder.lm.base import SamplingParams

    [first] = asyncio.run(engine.generate([Request(prompt, SamplingParams(temperature=0.0, max_tokens=120))]))
    steps = task.split_steps(first.text)
    assert steps and task.check_step(PROBLEM, steps[:1])  # a right first step after a wrong attempt
    trace = run(engine, n=8, sequential=4)
    assert task.grade(PROBLEM, trace.answer)
