"""How a stream policy's answers go wrong: retries of a move already backed out of, dead first moves, false finishes.

    python experiments/stream_retries.py runs/eval-stream-unlikely-cot/results.jsonl [--method cot] [--split test]

Reads a `ponder eval` results file of a task with back steps (game24) and counts, right answers and wrong apart, the
answers that take a move again from a state where they took it before (`ponder.train.data.tried_moves`) and those
whose first move leaves the answer out of reach (the task's exact step oracle, used here to measure only); and the
wrong answers that end on a finishing step (a false `= 24`) rather than running out of tokens or moves."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ponder.tasks import get_task
from ponder.train.data import tried_moves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--task", default="game24")
    parser.add_argument("--split", default="test", help="the split the eval ran on")
    parser.add_argument("--method", default="cot")
    args = parser.parse_args()
    task = get_task(args.task)
    problems = {p.id: p for p in task.problems(args.split)}
    counts: Counter[tuple[bool, str]] = Counter()
    for line in args.results.read_text().splitlines():
        row = json.loads(line)
        if row.get("method") != args.method or "solution" not in row:
            continue
        steps = task.split_steps(row["solution"])
        problem = problems[row["problem_id"]]
        right = bool(row["correct"])
        counts[(right, "answers")] += 1
        counts[(right, "retry a move")] += any(step in tried for step, tried in zip(steps, tried_moves(task, problem,
                                                                                                      steps)))
        counts[(right, "first move dead")] += bool(steps) and not task.check_step(problem, steps[:1])
        counts[(right, "end on a finish")] += bool(steps) and task.is_final(steps)
    print(f"{args.results} ({args.method}, {counts[(True, 'answers')] + counts[(False, 'answers')]} answers)")
    for right in (True, False):
        print(f"  {'right' if right else 'wrong'}: {counts[(right, 'answers')]}, of which "
              + ", ".join(f"{what}: {counts[(right, what)]}" for what in ("retry a move", "first move dead",
                                                                          "end on a finish")))


if __name__ == "__main__":
    main()
