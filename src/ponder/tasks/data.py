"""A question-answer set of your own as a task: `--task data:FILE`.

FILE is one of:
- JSON Lines (`.jsonl`, `.jsonl.gz`): one JSON object a line; or a `.json` file holding a list of objects;
- CSV (`.csv`) or TSV (`.tsv`) with a header row;
- a folder written by Hugging Face `datasets`' `save_to_disk`: a `Dataset`, or a `DatasetDict` whose splits become
  the task's splits.

Each record needs a question, the first of the fields `question`, `problem`, `prompt`, and a reference answer, the
first of `answer`, `target`, `solution` (field names in any case). A reference that states its answer the way a
solution does (GSM8K's `… #### 72`, MATH's `… \\boxed{5}`) is read as that answer.

The problems are the `test` split: a file's records are all `test`; a saved `DatasetDict` has the splits it was saved
with. Prompts are the text-math tasks' zero-shot chat prompt through the model's chat template (there are no worked
examples for few-shot prompting), asking for `The answer is <number>.` when every reference is a number, else for a
boxed answer. A reference that is a number is graded as GSM8K is (the number the solution states, compared
exactly); any other through math-verify, as MATH500 is (`ponder.tasks.answers`). Default model `smollm2`, default
verifier `judge`, as for GSM8K.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ponder.tasks.answers import extract, extract_number, plain_number, statement
from ponder.tasks.base import Problem, TaskError
from ponder.tasks.textmath import GSM8K, MATH500, Messages, TextMath

QUESTION_FIELDS = ("question", "problem", "prompt")
ANSWER_FIELDS = ("answer", "target", "solution")


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The record's first non-empty field among `names` (case aside), as text."""
    by_name = {str(key).lower(): value for key, value in record.items()}
    for name in names:
        value = by_name.get(name)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _open(path: Path) -> IO[str]:
    """The file as text; a byte-order mark (as spreadsheets write one) is dropped."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{path}, line {number}: not JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise TaskError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield f"line {number}", record


def _json_list(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open(path) as file:
        try:
            records = json.load(file)
        except json.JSONDecodeError as err:
            raise TaskError(f"{path}, line {err.lineno}: not JSON ({err.msg})") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TaskError(f"{path}: expected a list of JSON objects (or JSON Lines, one object a line, in a .jsonl)")
    yield from ((f"record {i}", record) for i, record in enumerate(records))


def _table(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open(path) as file:
        reader = csv.DictReader(file, delimiter="\t" if ".tsv" in path.suffixes else ",")
        header = reader.fieldnames or []
        try:
            for row in reader:
                if None in row or None in row.values():
                    found = len(header) + len(row.get(None, [])) - sum(v is None for v in row.values())
                    raise TaskError(f"{path}, line {reader.line_num}: {found} fields where the header has "
                                    f"{len(header)}")
                yield f"line {reader.line_num}", row
        except csv.Error as err:
            raise TaskError(f"{path}, line {reader.line_num}: {err}") from err


def _saved_dataset(path: Path) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError as err:
        raise TaskError(f"{path} is a folder: reading a saved Hugging Face dataset needs `pip install datasets`") \
            from err
    try:
        saved = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise TaskError(f"{path} is a folder but not a dataset saved by `datasets`' save_to_disk: {err}") from err
    splits = saved if isinstance(saved, DatasetDict) else {"test": saved}
    return {split: ((f"row {i}", dict(row)) for i, row in enumerate(rows)) for split, rows in splits.items()}


READERS: dict[str, Callable[[Path], Iterator[tuple[str, dict[str, Any]]]]] = {
    ".jsonl": _json_lines, ".json": _json_list, ".csv": _table, ".tsv": _table}


def load(path: Path) -> dict[str, list[dict[str, str]]]:
    """The question-answer records of a data file or saved dataset, by split, each `{"question", "answer"}`."""
    if not path.exists():
        raise TaskError(f"no such data file or folder: {path}")
    if path.is_dir():
        raw = _saved_dataset(path)
    else:
        suffix = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
        if suffix not in READERS:
            raise TaskError(f"{path}: a data file is {', '.join(READERS)} (or .jsonl.gz), or a folder written by "
                            "`datasets`' save_to_disk")
        raw = {"test": READERS[suffix](path)}
    splits: dict[str, list[dict[str, str]]] = {}
    for split, records in raw.items():
        splits[split] = []
        for where, record in records:
            question, answer = _pick(record, QUESTION_FIELDS), _pick(record, ANSWER_FIELDS)
            if question is None or answer is None:
                missing = "question" if question is None else "answer"
                fields = QUESTION_FIELDS if question is None else ANSWER_FIELDS
                raise TaskError(f"{path}, {where}: no {missing} (a non-empty field named {' or '.join(fields)}); "
                                f"fields found: {', '.join(map(str, record)) or 'none'}")
            said = statement(answer)
            splits[split].append({"question": question, "answer": (said or answer).strip().strip("$").strip()})
    if not any(splits.values()):
        raise TaskError(f"{path} holds no records")
    return splits


class DataTask(TextMath):
    """The question-answer records of a file or saved dataset (the module's docstring says which), graded by their
    reference answers."""

    def __init__(self, path: str | Path, style: str = "zero_shot", steps: str = "lines",
                 template: Callable[[Messages], str | None] | None = None) -> None:
        if style == "few_shot":
            raise TaskError("a data file has no worked examples to prompt few-shot with: use the zero_shot style")
        super().__init__(style, steps, template)
        self.path = Path(path)
        self.name = f"data:{self.path.name}"
        self._records = load(self.path)
        self.numeric = all(plain_number(r["answer"]) is not None for rs in self._records.values() for r in rs)
        self.answer_format = GSM8K.answer_format if self.numeric else MATH500.answer_format

    def splits(self) -> tuple[str, ...]:
        return tuple(self._records)

    def records(self, split: str) -> list[dict[str, Any]]:
        if split not in self._records:
            raise TaskError(f"{self.name} has splits {', '.join(self._records)}, not {split!r}")
        return self._records[split]

    def to_problem(self, split: str, index: int, record: dict[str, Any]) -> Problem:
        return Problem(f"{self.name}-{split}-{index}", record["question"], record["answer"])

    def extract_answer(self, problem: Problem, steps: list[str]) -> str | None:
        """A number, read as GSM8K's answers are, where the reference is one (or, for a question of your own, where
        every reference is); else the stated answer, as MATH500's."""
        numeric = self.numeric if problem.answer is None else plain_number(problem.answer) is not None
        text = "\n".join(steps)
        return (extract_number(text) if numeric else extract(text)) if steps else None
