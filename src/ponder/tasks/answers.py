"""Final answers of free-text solutions: where a solution states its answer, and whether it is right.

Extraction, in this order (the first rule that finds something wins; within a rule, the last occurrence):

1. `\\boxed{…}` (or `\\fbox{…}`), braces matched to any depth: MATH's convention, `\\boxed{\\frac{1}{2}}`.
2. `#### n`: GSM8K's reference solutions end with it.
3. `The answer is …` / a line starting `Answer: …` (case-insensitive), up to the end of the line, a trailing
   full stop dropped.
4. Fallback: the last number in the text (`1,234`, `-3.5`, `2/3`), commas dropped: a model that states no answer
   in any format is graded on the last number it wrote, as lm-evaluation-harness's flexible GSM8K filter does.

Grading is `math-verify` (Hugging Face, the grader of open-r1 and search-and-learn): it parses both answers as
LaTeX or expressions and compares them mathematically (`0.5` = `\\frac{1}{2}`, `(3, \\pi/2)` =
`\\left( 3, \\frac{\\pi}{2} \\right)`), with its own timeouts. Garbage is graded wrong, never raised.
"""

from __future__ import annotations

import re
import threading

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_ANSWER_IS = re.compile(r"(?:the (?:final )?answer is|^\s*answer\s*:)\s*:?\s*(.+)", re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*(.+)")


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{…}` or `\\fbox{…}`, nested braces matched; None if there is none or it is
    never closed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _line_answer(found: list[str]) -> str | None:
    if not found:
        return None
    answer = found[-1].strip().rstrip(".").strip()
    inner = boxed(answer)
    return inner if inner is not None else answer or None


def extract(text: str) -> str | None:
    """The final answer a free-text solution states (the rules in the module's docstring), or None."""
    for rule in (boxed(text), _line_answer(_HASHES.findall(text)), _line_answer(_ANSWER_IS.findall(text))):
        if rule:
            return rule.strip("$ ").strip() or None
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def states_answer(text: str) -> bool:
    """Whether the text gives its final answer in one of the explicit formats (not merely ends with a number)."""
    return boxed(text) is not None or bool(_HASHES.search(text)) or bool(_ANSWER_IS.search(text))


def normalize(answer: str) -> str:
    """A key for voting: spacing, `\\left`/`\\right`, `\\!`, `dfrac`/`tfrac`, `$`, a trailing full stop and thousands
    commas in numbers removed; a plain number written the canonical way (`18.0` -> `18`)."""
    key = answer.strip().rstrip(".")
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("$", ""), ("\\%", ""), ("%", "")):
        key = key.replace(old, new)
    key = "".join(key.split())
    if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", key):
        value = float(key.replace(",", ""))
        return str(int(value)) if value.is_integer() else str(value)
    return key


def equivalent(gold: str, answer: str | None) -> bool:
    """Whether `answer` equals the reference `gold`, by math-verify; False for garbage or a timeout."""
    if answer is None or not answer.strip():
        return False
    if normalize(gold) == normalize(answer):
        return True
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        parsed_gold = parse(f"${gold}$", parsing_timeout=timeout)
        parsed = parse(f"${answer}$", parsing_timeout=timeout)
        return bool(parsed_gold and parsed and verify(parsed_gold, parsed, timeout_seconds=timeout))
    except Exception:  # a pathological expression: graded wrong, as the docstring promises
        return False
