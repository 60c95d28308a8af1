"""Final answers of free-text solutions: where a solution states its answer, what it states, and whether it is right.

Where the answer is stated. The earliest of these in the solution is its statement (a search ends a solution at its
first step that states an answer, and lm-evaluation-harness's strict filters take the first match too):

- `\\boxed{…}` or `\\fbox{…}`, braces matched to any depth (MATH's convention, `\\boxed{\\frac{1}{2}}`);
- `#### …` (how GSM8K's reference solutions end);
- `The answer is …`, `The final answer is …` anywhere, or a line opening with `Answer:` / `Final answer:`
  (markdown `**` and `#` allowed), up to the end of the line; a box inside it is read instead.

A solution that states no answer is read as lm-evaluation-harness's flexible GSM8K filter reads one: its last number.

GSM8K (and any data set whose reference is a number): the number of the statement. The statement's first number
is the answer, so text after it is ignored (`18 dollars, or 1800 cents` is 18; `18 (9 * 2)` is 18; `50%` is 50;
`18 or 20` is 18: a statement offering two candidates is read at its first). Parenthesised asides are skipped
(`(9 * 2) 18` is 18) unless nothing else holds a number. A statement that opens with a computation gives its
result: `9 + 9 = 18 dollars` is 18 (everything before an `=` made only of numbers and operators is passed over).
A number is `1234`, `1,234` (commas between groups of three digits only: `1,23` is 1), `-5` (or `−5`, `-$5`),
`3.50`, `.5`, `3/4`, a mixed `1 1/2`, `$18`, LaTeX `\\frac{3}{4}`, `1{,}234`, `1\\,234`; digits are never joined
across a space (`1 2` is 1, `1 234` is 1).

Two plain numbers (the forms above) are compared exactly, as rationals: `3.50` = `3.5` = `7/2`, `18.0` = `18`, and
two different 20-digit integers differ; `0.333` is not `1/3`. Anything else (MATH500's LaTeX) goes to `math-verify`
(Hugging Face's grader, that of open-r1 and search-and-learn), which compares mathematically (`0.5` =
`\\frac{1}{2}`, `(3, \\pi/2)` = `\\left( 3, \\frac{\\pi}{2} \\right)`) after a textual match is tried. math-verify
runs in a worker process of its own, with a deadline (`timeout`, seconds) that holds in any thread: a comparison
past it is graded wrong, and the worker is replaced. Garbage is graded wrong, never raised.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

from ponder.errors import PonderError

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"""
    (?:(?<![\w)])(?P<sign>[-−]))?  # a sign, not after a word or a bracket (10-5 is a subtraction)
    (?:\\?\$\s?)?(?:(?<=\$)(?P<sign2>[-−]))?  # a currency sign, and a sign after it ($-5)
    (?<![\d.])  # never from inside a number
    (?:(?P<whole>\d+)\ (?P<mixed>\d+/\d+)(?![\d/])  # 1 1/2
      |(?P<int>\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?P<dec>\.\d+)?(?P<den>/\d+)?  # 1,234.5 3/4
      |(?P<dot>\.\d+))  # .5
    """, re.VERBOSE)
_LATEX_NUMBER = [  # LaTeX spellings of numbers and operators, rewritten before a number is read
    (re.compile(r"(?<=\d)\s*\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"), r" \1/\2"),  # 15\frac{39}{40}
    (re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}"), r"\1/\2"),
    (re.compile(r"\{,\}|\\,"), ","), (re.compile(r"\\[!;:]|\\left|\\right"), ""),
    (re.compile(r"\\times|\\cdot"), "*"), (re.compile(r"\\div"), "/"), (re.compile(r"\\%"), "%"),
]
_ARITHMETIC = re.compile(r"[\s\d.,$+\-−*/×÷xX^%]*")  # what a computation before an `=` is made of
_ASIDE = re.compile(r"\([^()]*\)")
_ANSWER_IS = re.compile(r"(?:\bthe\s+(?:final\s+)?answer\s+is\b|^[\s*#]*(?:final\s+)?answer\s*\**\s*:)\**\s*:?\s*(.*)",
                        re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*(.*)")
_BOX = re.compile(r"\\(?:boxed|fbox)\{")


def boxed(text: str) -> str | None:
    """The content of the first `\\boxed{…}` or `\\fbox{…}`, nested braces matched; None if there is none or it is
    never closed."""
    found = _BOX.search(text)
    if found is None:
        return None
    depth = 1
    for j in range(found.end(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[found.end():j].strip()
    return None


def statement(text: str) -> str | None:
    """What the solution's earliest answer statement says (the formats in the module's docstring), a box inside it
    read instead; None when it states no answer."""
    found = [(m.start(), m.group(1)) for pattern in (_HASHES, _ANSWER_IS) for m in pattern.finditer(text)]
    box = _BOX.search(text)
    if box is not None:
        found.append((box.start(), text[box.start():]))
    if not found:
        return None
    said = min(found)[1]
    inner = boxed(said)
    return inner if inner is not None else said.strip() or None


def states_answer(text: str) -> bool:
    """Whether the text gives its final answer in one of the explicit formats (not merely ends with a number)."""
    return statement(text) is not None


def _value(match: re.Match[str]) -> Fraction | None:
    sign = -1 if match["sign"] or match["sign2"] else 1
    try:
        if match["whole"]:
            return sign * (int(match["whole"]) + Fraction(match["mixed"]))
        if match["dot"]:
            return sign * Fraction(match["dot"])
        value = Fraction(match["int"].replace(",", "") + (match["dec"] or ""))
        return sign * (value / int(match["den"][1:]) if match["den"] else value)
    except ZeroDivisionError:
        return None


def _rewrite(text: str) -> str:
    """LaTeX spellings of numbers and operators as plain text (`\\frac{3}{4}` -> `3/4`)."""
    for pattern, replacement in _LATEX_NUMBER:
        text = pattern.sub(replacement, text)
    return text


def _numbers(text: str) -> list[Fraction]:
    """Every number in a text already rewritten by `_rewrite`, in order."""
    return [value for m in _NUMBER.finditer(text) if (value := _value(m)) is not None]


def read_number(said: str) -> Fraction | None:
    """The number an answer statement gives (the rules in the module's docstring), or None."""
    said = _rewrite(said)
    plain = said
    while _ASIDE.search(plain):
        plain = _ASIDE.sub(" ", plain)
    if not _numbers(plain):
        plain = said
    while "=" in plain and _ARITHMETIC.fullmatch(plain.partition("=")[0]):
        plain = plain.partition("=")[2]
    numbers = _numbers(plain)
    return numbers[0] if numbers else None


def plain_number(text: str) -> Fraction | None:
    """The value of a text that is one number and nothing else (`1,234`, `-3.50`, `$18`, `3/4`, `\\frac{3}{4}`), or
    None."""
    match = _NUMBER.fullmatch(_rewrite(text).strip().rstrip(".").strip("$ "))
    return _value(match) if match else None


def number_text(value: Fraction) -> str:
    """A number written the one canonical way: `18`, `-3.5`, `2/3` (a decimal where it terminates)."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
    digits = str(abs(value.numerator * 10**places // value.denominator)).rjust(places + 1, "0")
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def extract(text: str) -> str | None:
    """The final answer a free-text solution states, as written (dollar signs and a closing full stop dropped); the
    last number when it states none; None when it has neither."""
    said = statement(text)
    if said is not None:
        return said.strip().rstrip(".").strip("$ ").strip() or None
    numbers = _numbers(_rewrite(text))
    return number_text(numbers[-1]) if numbers else None


def extract_number(text: str) -> str | None:
    """The number a GSM8K-style solution gives as its final answer (its statement's number, else its last number),
    written canonically; None when it gives none."""
    said = statement(text)
    if said is not None:
        value = read_number(said)
        return number_text(value) if value is not None else None
    numbers = _numbers(_rewrite(text))
    return number_text(numbers[-1]) if numbers else None


def normalize(answer: str) -> str:
    """A key for voting: `\\left`/`\\right`, `\\!`, `dfrac`/`tfrac`, `$`, `%`, a trailing full stop and spacing
    removed (a space between two digits kept); a plain number written the canonical way (`18.0`, `18` -> `18`)."""
    value = plain_number(answer)
    if value is not None:
        return number_text(value)
    key = answer.strip().rstrip(".")
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("$", ""), ("\\%", ""), ("%", "")):
        key = key.replace(old, new)
    return re.sub(r"(?<=\d)\s+(?=\d)", " ", re.sub(r"(?<!\d)\s+|\s+(?!\d)", "", key))


class GradingError(PonderError, RuntimeError):
    """math-verify's worker process could not be started."""


class _MathVerify:
    """One math-verify worker process shared by every thread, started on first use; a comparison that runs past its
    deadline is answered False and its worker killed (the next comparison starts another)."""

    worker = Path(__file__).with_name("mathverify_worker.py")
    startup_s = 300.0  # importing sympy and math-verify on a loaded machine

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        atexit.register(self.close)

    def _reply(self, seconds: float) -> str | None:
        """The worker's next line, or None if none came within `seconds` (or the worker died)."""
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], seconds)
        return self._process.stdout.readline().strip() or None if ready else None

    def _start(self) -> None:
        self._process = subprocess.Popen([sys.executable, str(self.worker)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
        if self._reply(self.startup_s) != "ready":
            self.close()
            raise GradingError(f"math-verify's worker ({self.worker}) did not start; is math-verify installed?")

    def compare(self, gold: str, answer: str, timeout: float) -> bool:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            self._process.stdin.write(json.dumps([gold, answer]) + "\n")
            self._process.stdin.flush()
            reply = self._reply(timeout)
            if reply is None:
                log.warning("math-verify ran past %ss comparing %.80r with %.80r: graded wrong", timeout, answer, gold)
                self.close()
            return reply == "1"

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_MATH_VERIFY = _MathVerify()


def equivalent(gold: str, answer: str | None, timeout: float = 15.0) -> bool:
    """Whether `answer` equals the reference `gold`: exactly when both are plain numbers, else textually or by
    math-verify within `timeout` seconds (by default the most math-verify's own timeouts allow: 5 s to parse each
    answer, 5 s to compare). False for garbage, for no answer and past the deadline."""
    if answer is None or not answer.strip():
        return False
    gold_value, value = plain_number(gold), plain_number(answer)
    if gold_value is not None and value is not None:
        return gold_value == value
    return normalize(gold) == normalize(answer) or _MATH_VERIFY.compare(gold, answer, timeout)
