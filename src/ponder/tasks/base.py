"""The task interface: problems, prompts, step splitting, answer extraction, grading, exact step oracle."""

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
    """A family of problems whose solutions are lists of steps, one per line (or per `step_end`).

    `check_step` is the exact oracle: given a prefix of steps it says whether every step is right AND a
    correct final answer can still be reached. Tasks without one (real data sets) return None.
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
    actions: Actions | None = None  # rStar's action formats, where the task's solutions have them

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

    def hinted_prompt(self, problem: Problem, hint: str) -> str:
        """The prompt with the answer given away, for STaR's rationalization: the policy writes steps that
        reach a known answer, and the pair is kept (with the plain prompt) only if they really reach it."""
        return f"{self.prompt(problem)}Hint: the answer is {hint}\n"

    def revision_prompt(self, problem: Problem, attempts: list[list[str]]) -> str:
        """The prompt with earlier attempts shown, for a policy that revises (Snell et al., 2024, §6): each attempt
        under `Attempt k:`, then `Revision:`; the plain prompt when there are none."""
        if not attempts:
            return self.prompt(problem)
        shown = "".join(f"Attempt {k}:\n{self.join_steps(steps)}" for k, steps in enumerate(attempts, 1))
        return f"{self.prompt(problem)}{shown}Revision:\n"

    def answer_hint(self, problem: Problem, steps: list[str] | None = None) -> str | None:
        """The answer to give as a hint: the one `steps` (a solver's solution) reach, else the one of the task's
        reference solution, else the data set's answer."""
        steps = steps or self.reference_solution(problem)
        return self.extract_answer(problem, steps) if steps else problem.answer

    def from_text(self, text: str) -> Problem:
        """The problem a person names on the command line (`ponder solve`)."""
        raise TaskError(f"task {self.name!r} cannot read a problem from the command line")

    def is_solvable(self, problem: Problem) -> bool | None:
        """Whether the problem has a solution at all, where the task can tell (None: it cannot)."""
        return None

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

    def check_step(self, problem: Problem, steps: list[str]) -> bool | None:
        """Exact oracle for a prefix of steps; None when the task has none."""
        return None

    def solves(self, problem: Problem, steps: list[str]) -> bool:
        """Whether the answer these steps give is right (the outcome)."""
        return self.grade(problem, self.extract_answer(problem, steps))

    def step_labels(self, problem: Problem, steps: list[str]) -> list[float] | None:
        """The exact oracle's label of every step: 1 while the prefix can still reach a correct answer, then 0;
        None when the task has no step oracle."""
        labels, ok = [], True
        for i in range(1, len(steps) + 1):
            check = self.check_step(problem, steps[:i])
            if check is None:
                return None
            ok = ok and check
            labels.append(float(ok))
        return labels

    def error_kind(self, problem: Problem, steps: list[str]) -> str:
        """What is wrong with the last step, its prefix being right (for per-kind verifier metrics): `answer`
        (a wrong answer line), `format` (not a step), `arithmetic` (the equation is false), or a task's own
        kinds; `wrong` when the task cannot tell."""
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

    def step_candidates(self, problem: Problem, steps: list[str]) -> list[str] | None:
        """Plausible next steps after a correct prefix, right and wrong (for labelling states without a policy);
        None when the task cannot enumerate them."""
        return None

    def moves(self, problem: Problem, steps: list[str]) -> list[str] | None:
        """Every correct next step after a correct prefix, dead ends included (none after a wrong one); None when
        the task cannot enumerate them."""
        return None

    def is_final(self, steps: list[str]) -> bool:
        """Whether a solution prefix is complete (it has given its final answer)."""
        return bool(steps) and steps[-1].lower().startswith("answer:")

    def reference_solution(self, problem: Problem) -> list[str] | None:
        """A correct step-by-step solution written by the task's own solver, if it has one."""
        return None

    def action_solution(self, problem: Problem, rng: random.Random) -> list[str]:
        """A right solution that takes rStar's actions at random (`actions`), to teach a policy their formats."""
        raise TaskError(f"task {self.name!r} has no solutions written with rStar's actions")

    def step_result(self, step: str) -> str | None:
        """What a step computes (sub-answers are voted on by it): the result of its last equation by default."""
        parsed = last_equation(step)
        return None if parsed is None else format_number(parsed[3])

    def solutions(self, problem: Problem) -> list[list[str]]:
        """Every solution the task's solver writes, what SFT trains a policy on: the reference solution by
        default; a task whose problems have many solutions lists them all (game24: every canonical path)."""
        reference = self.reference_solution(problem)
        return [reference] if reference else []
