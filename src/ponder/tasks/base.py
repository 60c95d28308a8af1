"""The task interface: a small core every task implements (problems, prompt, steps, answer, grade) and the optional
capabilities some methods need (an exact step oracle, reference solutions, the prompts of STaR, revisions, rStar)."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ponder.errors import PonderError
from ponder.tasks.exact import apply_op, format_number, parse_equation, parse_number


def last_equation(step: str) -> tuple[Fraction, str, Fraction, Fraction] | None:
    """The `a op b = c` a step ends its working with (`8 - 6 = 2 (left: …)`, `Sue = 6 + 21 = 27`)."""
    tokens = step.split()
    if "=" not in tokens:
        return None
    i = len(tokens) - 1 - tokens[::-1].index("=")
    return parse_equation(tokens[i - 3 :]) if i >= 3 else None


def equation_slips(text: str) -> tuple[int, int]:
    """(false, written): of the lines of `text` that end their working with an equation (`last_equation`), how many
    state a false one: a policy's arithmetic slips, whatever else is right or wrong about its steps."""
    equations = [e for e in map(last_equation, text.splitlines()) if e is not None]
    return sum(apply_op(a, op, b) != c for a, op, b, c in equations), len(equations)


class TaskError(PonderError, ValueError):
    """Bad task input: a malformed puzzle, file or record. The message says where and what was expected."""


class NoReference(TaskError):
    """A problem graded that has no reference answer to grade by (a question a person asked); `Task.gradable` says
    which problems have one."""


@dataclass(frozen=True)
class Actions:
    """How a task's solutions write rStar's actions (Qi et al., 2024) beside its plain steps: the text that opens a
    rephrased question, a sub-question and a sub-answer. A search asks the policy for an action by writing its
    opening and letting the policy go on."""

    rephrase: str
    subquestion: str
    subanswer: str


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class Task(ABC):
    """The core every task implements: its problems, the prompt the policy continues, how a solution splits into
    steps (one per line, or per `step_end`), the final answer a solution gives and its grade. Four methods are
    abstract (`problems`, `prompt`, `extract_answer`, `grade`); the rest have defaults a task may override.

    What only some methods need is an optional capability a task adds by inheriting it (below): `StepOracle`,
    `ReferenceSolver`, `Hintable`, `Revisable`, `RStarActions`. A method that needs one asks for it through
    `ponder.tasks.require`, which names the tasks that have it when this one does not.
    """

    name: str
    max_tokens: int = 256  # what a whole solution may take to generate, by default
    max_steps: int = 16  # the most steps a solution takes: where a step-level search stops
    default_method: str = "best_of_n"  # what `ponder solve` runs unless told: the best measured on the task
    step_end: str = "\n"  # what ends a step: a step-level search stops generating there
    # The model's chat template (`LanguageModel.chat_prompt`), set by whoever pairs the task with a model: tasks whose
    # prompts are chat messages (real data sets) render them through it; the built-in tasks, whose policies were
    # trained on plain prompts, ignore it.
    template: Callable[[list[dict[str, str]]], str | None] | None = None

    @property
    def default_model(self) -> str:
        """The policy a run uses unless told: the task's shipped policy."""
        return f"{self.name}-policy"

    @property
    def default_verifier(self) -> str:
        """The verifier a method that needs one uses unless told: the task's shipped PRM."""
        return f"{self.name}-prm"

    @abstractmethod
    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]: ...

    @abstractmethod
    def prompt(self, problem: Problem) -> str:
        """Text the policy continues with its steps."""

    def from_text(self, text: str) -> Problem:
        """The problem a person names on the command line (`ponder solve`)."""
        raise TaskError(f"task {self.name!r} cannot read a problem from the command line")

    def rebuild(self, problem_id: str, question: str) -> Problem:
        """The problem a stored record names (its id and question), with whatever the task's checks need."""
        return Problem(problem_id, question)

    def difficulty(self, problem: Problem) -> int | None:
        """The problem's difficulty level where the task defines one (arith: the number of operations), for
        results by difficulty; None otherwise."""
        return None

    def split_steps(self, text: str) -> list[str]:
        return [step.strip() for step in text.split(self.step_end) if step.strip()]

    def join_steps(self, steps: list[str]) -> str:
        return "".join(step + self.step_end for step in steps)

    def judged(self, problem: Problem, steps: list[str]) -> list[str]:
        """The steps a verifier judges for this solution: the solution itself (a stream of search: the path it ends
        on, `Backtracking`)."""
        return steps

    def is_final(self, steps: list[str]) -> bool:
        """Whether a solution prefix is complete (it has given its final answer)."""
        return bool(steps) and steps[-1].lower().startswith("answer:")

    @abstractmethod
    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        """The final answer a solution gives, or None when it gives none."""

    @abstractmethod
    def grade(self, problem: Problem, answer: str | None) -> bool:
        """Whether `answer` solves `problem`. Garbage is graded wrong, never raised; a problem that is not `gradable`
        raises `NoReference`."""

    def gradable(self, problem: Problem) -> bool:
        """Whether the task can grade answers to `problem`: False for a question with no reference answer, on a
        task that grades against references."""
        return True

    def answer_key(self, problem: Problem, answer: str | None) -> str | None:
        """What majority voting compares: answers with the same key count as the same answer."""
        if answer is None or not answer.strip():
            return None
        value = parse_number(answer.strip().rstrip("."))
        return format_number(value) if value is not None else " ".join(answer.split()).lower()

    def solves(self, problem: Problem, steps: list[str]) -> bool:
        """Whether the answer these steps give is right (the outcome)."""
        return self.grade(problem, self.extract_answer(problem, steps))


# --- optional capabilities: what some methods need beyond the core ------------------------------------------------


class StepOracle(Task):
    """An exact step oracle: whether any prefix of steps is right AND can still reach a correct answer, and the
    steps that can follow a prefix. Oracle labels (`ponder collect`), the oracle verifier on partial solutions,
    labelling states without a policy, SFT on every correct move or on revision walks, and the benchmarks that
    judge steps need one."""

    @abstractmethod
    def check_step(self, problem: Problem, steps: list[str]) -> bool:
        """Whether every step of the prefix is right and a correct final answer can still be reached."""

    @abstractmethod
    def moves(self, problem: Problem, steps: list[str]) -> list[str]:
        """Every correct next step after a correct prefix, dead ends included (none after a wrong one)."""

    @abstractmethod
    def step_candidates(self, problem: Problem, steps: list[str]) -> list[str]:
        """Plausible next steps after a prefix, right and wrong (for labelling states without a policy)."""

    def step_labels(self, problem: Problem, steps: list[str]) -> list[float]:
        """The oracle's label of every step: 1 while the prefix can still reach a correct answer, then 0."""
        labels, ok = [], True
        for i in range(1, len(steps) + 1):
            ok = ok and self.check_step(problem, steps[:i])
            labels.append(float(ok))
        return labels

    def is_solvable(self, problem: Problem) -> bool:
        """Whether the problem has a solution at all: the empty prefix can reach a correct answer."""
        return self.check_step(problem, [])

    def error_kind(self, problem: Problem, steps: list[str]) -> str:
        """What is wrong with the last step, its prefix being right (for per-kind verifier metrics): `answer`
        (a wrong answer line), `format` (not a step), `arithmetic` (the equation is false), or a task's own
        kinds (`other_error`)."""
        step = steps[-1]
        if step.lower().startswith("answer:"):
            return "answer"
        parsed = last_equation(step)
        if parsed is None:
            return "format"
        a, op, b, c = parsed
        return "arithmetic" if apply_op(a, op, b) != c else self.other_error(problem, steps)

    def other_error(self, problem: Problem, steps: list[str]) -> str:
        """The kind of a wrong last step whose equation is true."""
        return "wrong"


class ReferenceSolver(Task):
    """Right step-by-step solutions: the task's own solver's, or a data set's worked ones. SFT on solver
    solutions, STaR's seed set and a learned verifier's self-test need them."""

    @abstractmethod
    def reference_solution(self, problem: Problem) -> list[str] | None:
        """A right step-by-step solution, or None where the task has none for this problem."""

    def solutions(self, problem: Problem) -> list[list[str]]:
        """Every solution the task's solver writes, what SFT trains a policy on: the reference solution by
        default; a task whose problems have many solutions lists them all (game24: every canonical path)."""
        reference = self.reference_solution(problem)
        return [reference] if reference else []


class Hintable(Task):
    """A prompt that gives the answer away, for STaR's rationalization: the policy writes steps that reach a known
    answer, and the pair is kept (with the plain prompt) only if they really reach it."""

    def hinted_prompt(self, problem: Problem, hint: str) -> str:
        return f"{self.prompt(problem)}Hint: the answer is {hint}\n"

    def answer_hint(self, problem: Problem, steps: list[str] | None = None) -> str | None:
        """The answer to give as a hint: the one `steps` (a solver's solution) reach, else the one of the task's
        reference solution (where it has a solver), else the data set's answer."""
        if not steps and isinstance(self, ReferenceSolver):
            steps = self.reference_solution(problem)
        return self.extract_answer(problem, steps) if steps else problem.answer


class Revisable(Task):
    """A prompt that shows earlier attempts, for a policy that revises (Snell et al., 2024, §6): the `revisions`
    method and the SFT walk that trains such a policy need it."""

    def revision_prompt(self, problem: Problem, attempts: list[list[str]]) -> str:
        """Each attempt under `Attempt k:`, then `Revision:`; the plain prompt when there are none."""
        if not attempts:
            return self.prompt(problem)
        shown = "".join(f"Attempt {k}:\n{self.join_steps(steps)}" for k, steps in enumerate(attempts, 1))
        return f"{self.prompt(problem)}{shown}Revision:\n"


class RStarActions(Task):
    """rStar's actions (Qi et al., 2024) written in the task's solutions: `actions` names the text that opens each
    action's line; the `rstar` method and the SFT walk that teaches a policy the formats need them."""

    actions: Actions

    @abstractmethod
    def action_solution(self, problem: Problem, rng: random.Random) -> list[str]:
        """A right solution that takes rStar's actions at random, to teach a policy their formats."""

    def step_result(self, step: str) -> str | None:
        """What a step computes (sub-answers are voted on by it): the result of its last equation by default."""
        parsed = last_equation(step)
        return None if parsed is None else format_number(parsed[3])


class Backtracking(Task):
    """A step that returns to an earlier state, so that one solution can hold a whole depth-first search: the states it
    entered in order, a back step wherever it left a dead end, and the path it ends on (Gandhi et al., 2024, "Stream of
    Search (SoS): Learning to Search in Language"). A policy trained on such streams searches in its own chain of
    thought; the `stream` distillation of `ponder improve` writes them from the search's trees. The answer of a
    stream is the answer of the path it ends on (`resolve`)."""

    @abstractmethod
    def back_step(self, problem: Problem, steps: list[str]) -> str:
        """The step that returns to the state after `steps` (the problem's start when empty); a TaskError when the
        steps do not say what that state is."""

    @abstractmethod
    def resolve(self, problem: Problem, steps: list[str]) -> list[str] | None:
        """The steps of the path a stream ends on, every dead end it backed out of left out; None for a back step to
        a state that is not on the path."""

    def judged(self, problem: Problem, steps: list[str]) -> list[str]:
        """The path the stream ends on, as a verifier should judge it: the dead ends it left carry no weight on the
        answer. A back step to a state that is not on the path ends the stream there, as its last step (a verifier
        sees the search go astray)."""
        path = self.resolve(problem, steps)
        if path is not None:
            return path
        end = next(i for i in range(1, len(steps) + 1) if self.resolve(problem, steps[:i]) is None)
        return [*(self.resolve(problem, steps[:end - 1]) or []), steps[end - 1]]


CAPABILITIES: dict[type[Task], str] = {
    StepOracle: "exact step oracle", ReferenceSolver: "reference solutions", Hintable: "prompt that gives a hint",
    Revisable: "prompt that shows earlier attempts", RStarActions: "formats for rStar's actions",
    Backtracking: "back steps (a search written as one solution)"}
