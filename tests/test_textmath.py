"""GSM8K and MATH500: shipped data, answer extraction, math-verify grading, prompts, step splitting."""

from __future__ import annotations

import pytest

from ponder.tasks import NoReference, TaskError, get_task
from ponder.tasks.answers import boxed, equivalent, extract, normalize, states_answer


@pytest.mark.parametrize(("text", "answer"), [
    ("so x = 2.\nThe answer is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),  # nested braces
    # the first box: a solution ends at its first stated answer (a search cuts it there), so a later box is not read
    ("\\boxed{1} first, then \\boxed{(3, \\pi)}", "1"),
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18"),
    ("Janet has 3.\nThe answer is 1,234.", "1,234"),
    ("The final answer is: 42", "42"),
    ("Answer: \\boxed{7}", "7"),
    ("9 + 3 = 12 then 12 / 4 = 3 eggs", "3"),  # fallback: the last number
    ("so the total is -3.5 and then 2/3", "2/3"),  # a number's canonical spelling: `2/3`, `1234`, `-3.5`
    ("no numbers at all", None),
])
def test_extraction_rules(text, answer):
    assert extract(text) == answer


def test_boxed_never_closed_and_states_answer():
    assert boxed("\\boxed{\\frac{1}{2}") is None
    assert states_answer("#### 5") and states_answer("The answer is 5.") and states_answer("so \\boxed{5}")
    assert not states_answer("5 eggs are left")


@pytest.mark.parametrize(("gold", "answer", "right"), [
    ("18", "18.0", True), ("18", "$18", True), ("1234", "1,234", True), ("18", "19", False),
    ("\\frac{14}{3}", "14/3", True), ("\\frac{1}{2}", "0.5", True), ("\\frac{1}{2}", "\\dfrac12", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)", True), ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)",
                                                                  False),
    ("3\\sqrt{13}", "\\sqrt{117}", True), ("6 - 5i", "6-5i", True), ("9", None, False), ("9", "}{\\frac", False),
])
def test_grading_by_math_verify(gold, answer, right):
    assert equivalent(gold, answer) is right


def test_normalize_makes_vote_keys():
    assert normalize("1,234.") == normalize("1234") == "1234"
    assert normalize("\\left( 3, \\dfrac{1}{2} \\right)") == "(3,\\frac{1}{2})"


@pytest.mark.parametrize("name", ["gsm8k", "math500"])
def test_every_reference_solution_grades_right(name):
    task = get_task(name)
    problems = task.problems("test")
    assert len(problems) == {"gsm8k": 1319, "math500": 500}[name]
    wrong = [p.id for p in problems if not task.solves(p, task.reference_solution(p) or [])]
    assert not wrong


def test_gsm8k_prompts_in_both_styles_and_through_a_chat_template():
    zero, few = get_task("gsm8k"), get_task("gsm8k", style="few_shot")
    problem = zero.problems(limit=1)[0]
    assert problem.answer == "18" and "Let's think step by step." in zero.prompt(problem)
    shot = zero.records("train")[0]["question"]
    assert shot in few.prompt(problem) and "<<" not in few.prompt(problem)  # calculator marks removed
    assert few.prompt(problem).count("The answer is") == 2 * 4 + 1  # each example asked and answered; the question

    def chatml(messages):
        return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"

    few.template = chatml
    rendered = few.prompt(problem)
    assert rendered.count("<|user|>") == 5 and rendered.count("<|assistant|>") == 5 and rendered.endswith(
        "<|assistant|>")
    zero.template = lambda messages: None  # a model without a template: plain text
    assert zero.prompt(problem).startswith("Question: ")
    with pytest.raises(TaskError, match="style"):
        get_task("gsm8k", style="five_shot")
    with pytest.raises(TaskError, match="does not take"):
        get_task("game24", style="few_shot")


def test_steps_end_at_the_first_stated_answer_and_paragraphs_split():
    task = get_task("gsm8k")
    problem = task.problems(limit=1)[0]
    steps = task.split_steps("\n16 - 3 - 4 = 9\n\n9 * 2 = 18\nThe answer is 18.\nThe answer is 54.\n")
    assert steps == ["16 - 3 - 4 = 9", "9 * 2 = 18", "The answer is 18."]
    assert task.is_final(steps) and not task.is_final(steps[:2]) and task.solves(problem, steps)
    assert task.extract_answer(problem, ["The answer is 9 + 9 = 18 dollars."]) == "18"
    paragraphs = get_task("gsm8k", steps="paragraphs")
    assert paragraphs.split_steps("a\nb\n\nc\n\nThe answer is 3.") == ["a\nb", "c", "The answer is 3."]
    assert paragraphs.step_end == "\n\n"


def test_math500_levels_custom_questions_and_bad_indices():
    task = get_task("math500")
    problem = task.from_text("0")
    assert task.difficulty(problem) == 2 and problem.meta["subject"] == "Precalculus"
    assert task.rebuild(problem.id, problem.question).answer == problem.answer
    custom = task.from_text("What is 2 + 2?")
    assert custom.answer is None and not task.gradable(custom) and task.gradable(problem)
    with pytest.raises(NoReference, match="no reference answer"):  # nothing to grade by: neither right nor wrong
        task.grade(custom, "4")
    with pytest.raises(TaskError, match="0-499"):
        task.from_text("500")
    with pytest.raises(TaskError, match="splits"):
        task.problems("train")
