"""How often a stream policy's answers retry a move they already backed out of, right answers and wrong apart.

    python experiments/stream_retries.py runs/eval-stream-unlikely-cot/results.jsonl [--method cot] [--split test]

Reads a `ponder eval` results file of a task with back steps (game24) and counts, per method, the answers that take
a move again from a state where they took it before (`ponder.train.data.tried_moves`)."""

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
    counts: Counter[tuple[bool, bool]] = Counter()
    for line in args.results.read_text().splitlines():
        row = json.loads(line)
        if row.get("method") != args.method or "solution" not in row:
            continue
        steps = task.split_steps(row["solution"])
        problem = problems[row["problem_id"]]
        retried = any(step in tried for step, tried in zip(steps, tried_moves(task, problem, steps)))
        counts[(bool(row["correct"]), retried)] += 1
    total = sum(counts.values())
    print(f"{args.results} ({args.method}, {total} answers)")
    for right in (True, False):
        n = counts[(right, True)] + counts[(right, False)]
        print(f"  {'right' if right else 'wrong'}: {n}, of which retry a move: {counts[(right, True)]}")


if __name__ == "__main__":
    main()
