"""`ponder bench arithmetic`: does a model know the arithmetic of the steps it writes or judges?

For each test problem, every correct first move (`StepOracle.moves`) is cut after its last `=`, and the model continues
it greedily: the result it writes is compared with the move's. A policy trained on solver solutions sees only the
moves that lead to the answer and can learn which results are likely rather than how to compute them; a
verifier initialised from it inherits that. The table gives the share of right results per operation.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ponder.lm.base import Request, SamplingParams
from ponder.lm.hf import HFBackend
from ponder.tasks import StepOracle, get_task, require


def arithmetic_benchmark(models: list[str], task_name: str = "game24", problems: int = 100) -> dict[str, Any]:
    task = require(get_task(task_name), StepOracle, "`ponder bench arithmetic` (it cuts every correct first move)")
    cut = []  # (prompt ending in "= ", the result, the operation)
    for problem in task.problems("test", limit=problems):
        # cut at the last `=`: game24 `10 - 4 = 6 (left: …)`, arith `Ben = Ann * 3 = 12 * 3 = 36`
        for move in task.moves(problem, []):
            equation, _, rest = move.rpartition(" = ")
            if equation:
                cut.append((task.prompt(problem) + equation + " = ", rest.split()[0], equation.split()[-2]))
    params = SamplingParams(temperature=0.0, max_tokens=12, stop=(" ", "\n"))
    rows = []
    for name in models:
        lm = HFBackend(name)
        written = [c.text.strip() for c in lm.generate_batch([Request(p, params) for p, _, _ in cut])]
        by_op: dict[str, list[bool]] = defaultdict(list)
        for (_, result, op), text in zip(cut, written):
            by_op[op].append(text == result)
        every = [x for v in by_op.values() for x in v]
        rows.append({"model": name, "all": sum(every) / len(every),
                     **{op: sum(v) / len(v) for op, v in sorted(by_op.items())}})
    return {"task": task_name, "problems": problems, "moves": len(cut), "rows": rows}
