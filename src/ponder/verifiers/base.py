"""The verifier interface and the verifiers that need no trained model: the exact oracle and the vote."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter

from ponder.tasks.base import Problem, StepOracle, Task
from ponder.trace import METER, Meter, Usage


class Verifier(ABC):
    name: str

    @abstractmethod
    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        """Per-step scores in [0, 1] for each solution (a list of steps)."""

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        """Per-step scores of partial solutions, as a step-level search asks: is each step right so far? A PRM
        scores a prefix as it scores a solution; a verifier that judges only whole solutions says so."""
        return await self.score(task, problem, prefixes)


class MeteredVerifier(Verifier):
    """Counts a verifier's judgements (one per solution or prefix) into one problem's `Usage`; while a call runs,
    `METER` points at that problem's `Meter`, where the verifier charges the tokens it judged and its time (as the
    accounting contract of `Usage` says). Every search method is metered the same way, none by hand. The verifier
    reads what the task says each solution stands for (`Task.judged`: a stream of search, the path it ends on)."""

    def __init__(self, verifier: Verifier, usage: Usage) -> None:
        self.verifier, self.usage, self.name = verifier, usage, verifier.name
        self.meter = Meter(usage)

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return await self._metered(self.verifier.score, task, problem, solutions)

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        return await self._metered(self.verifier.score_prefixes, task, problem, prefixes)

    async def _metered(self, fn, task: Task, problem: Problem, items: list[list[str]]) -> list[list[float]]:
        self.usage.verifier_calls += len(items)
        token = METER.set(self.meter)
        try:
            return await fn(task, problem, [task.judged(problem, steps) for steps in items])
        finally:
            METER.reset(token)


def one_line(step: str, marker: str = "") -> str:
    """A step as one line, without the text of the marker a PRM reads its score at (so a step never carries a
    spurious marker)."""
    step = " ".join(step.split("\n"))
    return step.replace(marker.strip(), "") if marker.strip() else step


class PrefixError(ValueError):
    """A verifier that judges only whole solutions was asked about a partial one."""


class OracleVerifier(Verifier):
    """The task's exact checker as a verifier: 1 while a prefix can still reach a correct answer, else 0.

    On tasks without a step oracle it grades the final answer and gives that score to every step. It is an
    upper bound for learned verifiers, not something a real deployment has.
    """

    name = "oracle"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        out = []
        for steps in solutions:
            if not isinstance(task, StepOracle):
                out.append([float(task.solves(problem, steps))] * len(steps))
                continue
            scores = task.step_labels(problem, steps)
            if steps and not task.is_final(steps):  # steps all fine but no answer given: not a solution
                scores[-1] = 0.0
            out.append(scores)
        return out

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        """1 for each step while the prefix is right and can still reach a correct answer."""
        if not isinstance(task, StepOracle):
            raise PrefixError(f"task {task.name!r} has no step oracle: the oracle cannot judge a partial solution")
        return [task.step_labels(problem, steps) for steps in prefixes]


class VoteVerifier(Verifier):
    """Self-consistency as a verifier (Wang et al., 2023): a solution scores the share of solutions in the
    same pool that reach the same answer. Only the last step carries the score."""

    name = "vote"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        keys = [task.answer_key(problem, task.extract_answer(problem, s)) for s in solutions]
        counts = Counter(k for k in keys if k is not None)
        return [[0.0] * (len(s) - 1) + [counts[k] / len(solutions) if k is not None else 0.0]
                for s, k in zip(solutions, keys)]

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        raise PrefixError("the vote judges answers: it cannot score a partial solution")


class DepthVerifier(Verifier):
    """A baseline that reads no text: step i (from 0) scores 1 / (i + 1). When a weak policy's steps are mostly
    wrong after the first few, depth alone separates good from bad steps; a learned PRM's step AUROC means
    something only where it beats this one."""

    name = "depth"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        return [[1.0 / (i + 1) for i in range(len(s))] for s in solutions]


VERIFIERS: dict[str, type[Verifier]] = {"oracle": OracleVerifier, "vote": VoteVerifier, "depth": DepthVerifier}
