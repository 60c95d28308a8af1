"""rStar on arith: the task's action formats and its oracle, the mutual-consistency discriminator, the search on a
scripted policy whose every action is known, then on the shipped policy taught the formats."""

from __future__ import annotations

import asyncio
import random

import pytest

from ponder.lm.base import Completion, LanguageModel, Request
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.search.rstar import A1, A2, A3, A4, A5
from ponder.tasks.arith import Arith, rephrased
from ponder.tasks.base import Problem
from ponder.verifiers.base import PrefixError, Verifier
from ponder.verifiers.consistency import MutualConsistency

task = Arith()
PROBLEM = task.problems("test", 10)[3]  # five operations


def test_action_solutions_are_right_and_the_oracle_catches_wrong_action_lines():
    rng = random.Random(0)
    for problem in task.problems("train", 300):
        steps = task.action_solution(problem, rng)
        assert task.check_step(problem, steps) and task.solves(problem, steps)
    chain = task.reference_solution(PROBLEM)
    first = chain[0].split()[0]
    second = chain[1].split()[0]
    assert task.check_step(PROBLEM, [rephrased(PROBLEM), f"Q: What is {first}?", f"A: {chain[0]}"])
    assert task.moves(PROBLEM, [f"Q: What is {first}?"]) == [f"A: {chain[0]}"]
    assert not task.check_step(PROBLEM, [f"Q: What is {second}?"])  # not computable yet
    assert not task.check_step(PROBLEM, [f"Q: What is {first}?", chain[0]])  # a question left unanswered
    assert not task.check_step(PROBLEM, [f"Q: What is {first}?", f"A: {chain[1]}"])  # the answer to another one
    assert not task.check_step(PROBLEM, [chain[0], rephrased(PROBLEM)])  # rephrasing only comes first
    assert not task.check_step(PROBLEM, [rephrased(PROBLEM).replace(" + ", " - ", 1)])


class Oracle(LanguageModel):
    """Writes the one right continuation of whatever it is asked: the line after the cue that ends the prompt (a
    sub-question, its answer, the rephrasing, a plain step), or the rest of the solution when the request has no
    stop. `final` replaces the answer line it writes (a policy that reaches another answer)."""

    name = "oracle-policy"

    def __init__(self, problem: Problem, final: str | None = None) -> None:
        self.problem, self.final = problem, final
        self.calls = 0

    def line(self, steps: list[str], cue: str) -> str:
        if cue == "Given:":
            return rephrased(self.problem)
        moves = task.moves(self.problem, steps)
        if not moves:  # after a wrong step: nothing to say
            return ""
        if moves[0].startswith("Answer:"):
            return "" if cue == "Q:" else f"Answer: {self.final or self.problem.answer}"
        return f"Q: What is {moves[0].split()[0]}?" if cue == "Q:" else moves[0]

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        out = []
        for r in requests:
            self.calls += 1
            body, _, cue = r.prompt.partition("\n")[2].rpartition("\n")
            steps = task.split_steps(body)
            if r.params.stop:
                text = self.line(steps, cue).removeprefix(cue)
            else:
                rest = []
                while not task.is_final(steps + rest) and (step := self.line(steps + rest, "")):
                    rest.append(step)
                text = task.join_steps(rest)
            out.append([Completion(text, len(r.prompt), len(text), "stop", logprob=0.0)] * (1 if r.n > 1 else r.n))
        return out


def run(lm: LanguageModel, verifier=None, problem: Problem = PROBLEM, **options) -> object:
    cfg = SearchConfig(n=int(options.pop("n", 6)), max_tokens=task.max_tokens, knobs=parse_options("rstar", options))
    return asyncio.run(search(task, problem, lm, verifier, get_method("rstar"), cfg))


def test_rstar_takes_every_action_where_the_paper_allows_it_and_answers_right():
    trace = run(Oracle(PROBLEM), n=8, depth=5)
    nodes = trace.nodes
    actions = {n.extra["action"] for n in nodes[1:]}
    assert actions == {A1, A2, A3, A5}  # the oracle's re-answer equals its answer: no A4 child
    for node in nodes[1:]:
        parent = nodes[node.parent]
        assert node.extra["action"] != A5 or node.parent == 0  # rephrasing from the root only
        assert node.extra["action"] != A4 or parent.extra["action"] == A3  # re-answering right after a sub-question
        depth = 0
        while parent.id:
            depth, parent = depth + 1, nodes[parent.parent]
        assert depth < 5
        if depth == 4:
            assert node.extra["action"] == A2  # at the depth limit only the remaining steps
    assert trace.root.visits == 8 and trace.answer == PROBLEM.answer
    finished = [n for n in nodes if n.terminal]
    assert finished and all(n.extra["kept"] and n.score == 1.0 for n in finished)  # all agree; every vote agrees
    assert "verifier_uninformative" not in trace.extra  # every solution confirmed is a verdict
    assert sum(n.visits for n in nodes[1:] if n.parent == 0) == 8


def test_the_discriminator_keeps_what_a_second_model_finishes_the_same_way():
    right = MutualConsistency(Oracle(PROBLEM))
    wrong = MutualConsistency(Oracle(PROBLEM, final="7"))
    solution = task.reference_solution(PROBLEM)
    cut = right.cut(task, solution)
    assert 1 <= cut < len(solution) and cut == right.cut(task, solution)
    assert asyncio.run(right.score(task, PROBLEM, [solution])) == [[1.0] * len(solution)]
    assert asyncio.run(wrong.score(task, PROBLEM, [solution])) == [[0.0] * len(solution)]
    with pytest.raises(PrefixError):
        asyncio.run(right.score_prefixes(task, PROBLEM, [solution[:2]]))
    # a generator that reaches 7: nothing kept by a right discriminator, so the answer falls back to the vote of all
    trace = run(Oracle(PROBLEM, final="7"), verifier=right, n=4)
    assert trace.answer == "7" and trace.extra["kept"] == 0 and trace.extra["discriminator"] == "consistency"


class Rejects(Verifier):
    """A discriminator that knows nothing: it scores every solution 0."""

    name = "rejects"

    async def score(self, task, problem, solutions):
        return [[0.0] * len(s) for s in solutions]


def test_a_discriminator_that_confirms_nothing_is_said_and_every_solution_votes(caplog):
    with caplog.at_level("WARNING", logger="ponder.search.guard"):
        trace = run(Oracle(PROBLEM), verifier=Rejects(), n=4)
    assert "guard_floor" in trace.extra["verifier_uninformative"]
    assert "rejects knows nothing" in caplog.text and "choosing among every solution by majority" in caplog.text
    assert trace.extra["kept"] == 0 and trace.answer == PROBLEM.answer
    quiet = run(Oracle(PROBLEM), verifier=Rejects(), n=4, guard="false")
    assert "verifier_uninformative" not in quiet.extra and quiet.answer == PROBLEM.answer


def test_the_discriminator_by_name_asks_the_policy_or_a_second_model():
    from ponder.verifiers import get_verifier, verifier_fingerprint

    policy = Oracle(PROBLEM)
    assert get_verifier("consistency", policy).lm is policy
    second = get_verifier("consistency:arith-policy")
    assert isinstance(second, MutualConsistency) and second.lm is not policy
    assert verifier_fingerprint("consistency:arith-policy") and not verifier_fingerprint("consistency")
    with pytest.raises(ValueError, match="asks a model"):
        get_verifier("consistency")


def test_rstar_refuses_a_task_without_action_formats():
    from ponder.tasks import Game24

    with pytest.raises(ValueError, match="no formats"):
        asyncio.run(get_method("rstar")(Game24(), Game24().problem("4 5 6 10"), Oracle(PROBLEM), None,
                                        SearchConfig()))


def steps_of(trace, node) -> list[str]:
    """The solution a node stands for: the lines on its path, a re-answer (A4) replacing the answer before it."""
    path = []
    while node.id:
        path.append(node)
        node = trace.nodes[node.parent]
    steps: list[str] = []
    for n in reversed(path):
        kept = steps[:-1] if n.extra["action"] == A4 else steps
        steps = [*kept, *task.split_steps(n.text)]
    return steps


@pytest.mark.slow
def test_rstar_on_the_policy_taught_the_actions(arith_rstar_backend):
    from ponder.lm.engine import Engine

    problem = task.problems("test", 10)[1]  # three operations
    trace = run(Engine(arith_rstar_backend), problem=problem, n=3, votes=2)
    assert trace.answer == problem.answer
    by_action: dict[str, list] = {}
    for node in trace.nodes[1:]:
        by_action.setdefault(node.extra["action"], []).append(node)
    assert {A1, A2, A3, A5} <= set(by_action)
    assert all(n.text.startswith("Given: ") and n.text.endswith(" = ?") for n in by_action[A5])
    assert all(n.text.startswith("Q: What is ") and "\nA: " in n.text for n in by_action[A3])
    # the policy takes the step-level actions right most of the time: the oracle accepts most of those nodes
    # (rephrasing a whole question is where it slips most: measured in docs/notes/benchmarks-notebook.md)
    for action in (A1, A3):
        right = [n for n in by_action[action] if task.check_step(problem, steps_of(trace, n))]
        assert len(right) >= len(by_action[action]) / 2, [steps_of(trace, n) for n in by_action[action]]
    assert trace.usage.model_calls > 0
