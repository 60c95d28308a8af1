"""Grading as a careful reader grades: each row is a whole solution, the reference answer, the grade it must get and
why. Solutions go through what a search does with them (steps cut at the first stated answer, the answer extracted,
graded against the reference): GSM8K's rules for a numeric reference, MATH500's (math-verify) for LaTeX."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.tasks import Problem, Task, get_task
from ponder.tasks.answers import equivalent, extract_number, number_text, plain_number

GSM8K = [  # (solution, reference, right?, why)
    # where the answer is stated
    ("She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\nThe answer is 18.", "18", True,
     "the number after 'The answer is'"),
    ("9 * 2 = 18\n#### 18", "18", True, "the number after ####"),
    ("So she earns $\\boxed{18}$ dollars.", "18", True, "a boxed answer"),
    ("The answer is 18 (9 * 2).", "18", True, "an aside after the number is not read"),
    ("The answer is 18 (9 * 2).", "2", False, "the last number of the line is not the answer"),
    ("The answer is 18 dollars, or 1800 cents.", "18", True, "the statement's first number, not its last"),
    ("The answer is 18 dollars, or 1800 cents.", "1800", False, "a restatement in other units is not read"),
    ("The answer is 9 + 9 = 18 dollars.", "18", True, "a statement that opens with a computation gives its result"),
    ("The answer is 9 x 2 = 18", "18", True, "x as a times sign in a computation"),
    ("The answer is $3 \\times 6 = 18$.", "18", True, "LaTeX times in a computation"),
    ("The answer is 2 + 3 = 5 * 2 = 10.", "10", True, "a chain of computations gives its last result"),
    ("The answer is 18, where x = 2.", "18", True, "an = after words is not a computation to follow"),
    ("The answer is x = 5.", "5", True, "a variable set to the answer"),
    ("The answer is (9 * 2) 18.", "18", True, "a parenthesised aside before the number is skipped"),
    ("The answer is (18).", "18", True, "the number in brackets when nothing else holds one"),
    ("The final answer is: 42", "42", True, "'The final answer is:'"),
    ("**Final Answer:** 42", "42", True, "a markdown answer line"),
    ("Answer: 42 apples", "42", True, "a line opening with 'Answer:'"),
    ("The answer is:\n42", "42", True, "the statement's number on the next line"),
    ("the answer is 42", "42", True, "case does not matter"),
    ("To answer this, note 3 + 4 = 7.\nThe answer is 7.", "7", True, "'answer' in a sentence is not a statement"),
    # two candidate answers
    ("The answer is 18 or 20.", "18", True, "a statement offering two candidates is read at its first"),
    ("The answer is 18 or 20.", "20", False, "the second candidate is not read"),
    ("The answer is 18.\nWait, the answer is 20.", "18", True, "the solution ends at its first stated answer"),
    ("The answer is 18.\nThe answer is 20.", "20", False, "a later statement is cut off"),
    ("#### 18\nThe answer is 20.", "18", True, "the earliest statement whatever its format"),
    ("\\boxed{18} and then \\boxed{20}", "18", True, "the first of two boxes"),
    # numbers
    ("The answer is 1,234.", "1234", True, "a thousands separator"),
    ("The answer is 1,234,567 people.", "1234567", True, "two thousands separators"),
    ("The answer is 1,234, which is a lot.", "1234", True, "a comma after a number ends it"),
    ("The answer is 1,23.", "123", False, "a comma not before three digits is no thousands separator"),
    ("The answer is 1 2.", "12", False, "digits are never joined across a space"),
    ("The answer is 1 234.", "1234", False, "a space is no thousands separator"),
    ("The answer is 3.50 dollars.", "3.5", True, "decimals compare by value"),
    ("The answer is 18.0", "18", True, "a whole number written with a decimal point"),
    ("The answer is 18.01", "18", False, "a near miss is wrong"),
    ("The answer is .5", "0.5", True, "a decimal without its leading zero"),
    ("The answer is 3/4 of a cup.", "0.75", True, "a fraction equals its decimal"),
    ("The answer is 1 1/2 cups.", "1.5", True, "a mixed number"),
    ("The answer is \\frac{3}{4}.", "0.75", True, "a LaTeX fraction"),
    ("The answer is $\\dfrac{3}{4}$.", "3/4", True, "a LaTeX display fraction"),
    ("The answer is 1{,}234.", "1234", True, "LaTeX's thousands separator"),
    ("The answer is 12345678901234567891.", "12345678901234567890", False,
     "two different 20-digit integers differ (no floats)"),
    ("The answer is 12345678901234567890.", "12345678901234567890", True, "a 20-digit integer equals itself"),
    ("The answer is 0.1 + 0.2 = 0.3", "0.3", True, "decimals are exact rationals: 0.3 is 0.3"),
    ("The answer is 5/0.", "5", False, "a division by zero is no number"),
    # negatives
    ("The answer is -5.", "-5", True, "a negative number"),
    ("The answer is −5.", "-5", True, "a Unicode minus sign"),
    ("The answer is -$5.", "-5", True, "a sign before the currency"),
    ("The answer is $-5.", "-5", True, "a sign after the currency"),
    ("The answer is 5.", "-5", False, "a lost sign is wrong"),
    ("She had 10-5 = 5 left", "5", True, "a dash after a number is a subtraction, not a sign"),
    # percent, currency, units
    ("The answer is 50%.", "50", True, "a percent sign after the number"),
    ("The answer is 50 percent.", "50", True, "'percent' after the number"),
    ("The answer is 0.5.", "50", False, "a fraction for a percent is wrong"),
    ("The answer is $18.", "18", True, "a dollar sign"),
    ("The answer is \\$18.", "18", True, "a LaTeX dollar sign"),
    ("The answer is $1,234.50.", "1234.5", True, "currency, separator and cents"),
    ("The answer is 18 dollars.", "18", True, "a unit after the number"),
    ("The answer is 18th.", "18", True, "an ordinal suffix"),
    ("The answer is 60 km/h.", "60", True, "a compound unit"),
    ("The answer is 3 hours and 20 minutes.", "3", True, "a second quantity after the first is not read"),
    # no statement: the last number, as lm-evaluation-harness's flexible filter reads it
    ("9 + 3 = 12 then 12 / 4 = 3 eggs", "3", True, "no statement: the last number"),
    ("She has 18 dollars.", "18", True, "no statement: the only number"),
    ("18 dollars, or 1800 cents", "18", False, "no statement: the last number, even where a reader disagrees"),
    # garbage
    ("I don't know.", "18", False, "no number at all"),
    ("The answer is unknown.", "18", False, "a statement without a number"),
    ("", "18", False, "an empty solution"),
    ("The answer is eighteen.", "18", False, "a number in words is not read"),
    ("\\boxed{18", "18", True, "an unclosed box is no statement: the last number"),
    ("The answer is }{\\frac", "18", False, "malformed LaTeX"),
]

MATH500 = [
    ("So $x = \\frac{\\sqrt{3}}{2}$.\nThe answer is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}", True,
     "a boxed answer with nested braces"),
    ("The answer is $\\boxed{0.5}$.", "\\frac{1}{2}", True, "a decimal equals a fraction (math-verify)"),
    ("The answer is $\\boxed{\\dfrac12}$.", "\\frac{1}{2}", True, "dfrac without braces"),
    ("$\\boxed{(3,\\pi/2)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", True, "a tuple, with \\left and \\right"),
    ("$\\boxed{(3, \\pi)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", False, "a tuple with a wrong entry"),
    ("$\\boxed{\\sqrt{117}}$", "3\\sqrt{13}", True, "the same surd"),
    ("$\\boxed{6-5i}$", "6 - 5i", True, "a complex number"),
    ("$\\boxed{15\\frac{39}{40}}$", "\\frac{639}{40}", True, "a LaTeX mixed number"),
    ("$\\boxed{10\\%}$", "10", True, "a LaTeX percent"),
    ("$\\boxed{x^2+2x}$", "x^2 + 2x", True, "a polynomial, spacing aside"),
    ("$\\boxed{2x+x^2}$", "x^2 + 2x", True, "a polynomial, terms reordered"),
    ("$\\boxed{12}$", "1 2", False, "a reference's spaced digits are not joined"),
    ("$\\boxed{4}$ or $\\boxed{5}$", "5", False, "two candidates: the first box"),
    ("$\\boxed{}$", "5", False, "an empty box"),
    ("The answer is $\\boxed{\\text{(C)}}$.", "\\text{(C)}", True, "a multiple-choice letter"),
]


@cache
def task(name: str) -> Task:
    return get_task(name)


@pytest.mark.parametrize(("name", "solution", "reference", "right", "why"), [
    *[pytest.param("gsm8k", *row, id=f"gsm8k: {row[3]}") for row in GSM8K],
    *[pytest.param("math500", *row, id=f"math500: {row[3]}") for row in MATH500],
])
def test_a_careful_reader_agrees(name: str, solution: str, reference: str, right: bool, why: str) -> None:
    t = task(name)
    problem = Problem(f"{name}-test", "?", reference)
    assert t.solves(problem, t.split_steps(solution)) is right, why


def test_the_table_is_large_and_varied() -> None:
    assert len(GSM8K) + len(MATH500) >= 60
    assert {right for _, _, right, _ in GSM8K} == {True, False}


def test_math_verify_times_out_from_a_worker_thread(capfd: pytest.CaptureFixture[str]) -> None:
    """A pathological answer (9^(9^9) has 370 million digits) is graded wrong at the deadline from a thread that
    may not set signals, quietly, and the next comparison is served."""
    results: list[bool] = []
    assert equivalent("\\sqrt{4}", "2")  # the worker has started: the deadline times the comparison alone
    start = time.monotonic()
    worker = threading.Thread(target=lambda: results.append(equivalent("5", "9^{9^{9}}", timeout=1.0)))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and results == [False]
    assert time.monotonic() - start < 20
    assert equivalent("\\frac{1}{2}", "0.5")  # a fresh worker serves the next comparison
    out, err = capfd.readouterr()
    assert "Timeout during parsing" not in out + err and "Timeout is disabled" not in out + err


def test_many_threads_grade_at_once() -> None:
    pairs = [("\\frac{1}{2}", "0.5", True), ("3\\sqrt{13}", "\\sqrt{117}", True), ("\\pi", "3.14", False),
             ("x^2+2x", "2x+x^2", True)] * 4
    results: dict[int, bool] = {}
    threads = [threading.Thread(target=lambda i=i, g=g, a=a: results.__setitem__(i, equivalent(g, a)))
               for i, (g, a, _) in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {i: right for i, (_, _, right) in enumerate(pairs)}


@given(st.fractions(max_denominator=10**6) | st.integers(-10**30, 10**30).map(Fraction))
def test_a_number_reads_back_as_itself(value: Fraction) -> None:
    """Canonical spelling and reading are inverse, for huge integers and every fraction: no float on the way."""
    text = number_text(value)
    assert plain_number(text) == value
    assert extract_number(f"The answer is {text} dollars.") == text
