"""The remote verifier against the in-process one on the same search: `ponder serve` runs in its own process on
127.0.0.1 serving the task's PRM for scoring, and the same searches run with the PRM in process, through Ponder's
`/v1/score` and through the vLLM-style `/pooling` endpoint (Ponder's implementation of it; vLLM does not run here).

The policy's completions are remembered (`Remembered`): the first search generates them and every later one reads
them, so each mode searches the same proposals and the times compare the verifiers alone. Every mode runs once to
warm up (the verifiers' prefix caches), then `rounds` timed rounds interleaved (so that load on the machine falls on
all alike); a row gives the median wall seconds of the whole set of searches, the verifier's compute and HTTP
seconds per problem, its calls and tokens per problem, and the share of answers equal to the in-process ones."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from ponder.bench.http import free_port, serving
from ponder.lm.base import LanguageModel
from ponder.lm.load import shared_model
from ponder.search import SearchConfig, get_method, parse_options, search
from ponder.search.compute_optimal import Remembered
from ponder.serve.recipes import shipped_recipes
from ponder.tasks import get_task
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers import Verifier, get_verifier


def run(task_name: str = "game24", method: str = "beam", budget: int = 4, problems: int = 10, rounds: int = 2,
        seed: int = 0) -> dict[str, Any]:
    task = get_task(task_name)
    chosen = task.problems("test", limit=problems)
    prm = task.default_verifier
    cfg = SearchConfig(n=budget, temperature=0.8, min_p=0.001, max_tokens=task.max_tokens, aggregate="min",
                       seed=seed, knobs=parse_options(method, {}, budget))
    policy = Remembered(shared_model(task.default_model))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    recipe = next(r.name for r in shipped_recipes() if r.task == task_name)  # any: the server loads its policy too
    cmd = [sys.executable, "-m", "ponder.cli", "serve", "--port", str(port), "--models", recipe, "--verifiers", prm]
    with serving(cmd, f"{url}/v1"):
        modes = {"in process": get_verifier(prm), "/v1/score": get_verifier(url),
                 "/pooling": get_verifier(f"{url}/pooling?model={prm}")}
        for verifier in modes.values():  # the first generates the completions; each warms its prefix cache
            searches(task, chosen, policy, verifier, method, cfg)
        timed: dict[str, list[float]] = {mode: [] for mode in modes}
        traces: dict[str, list[Trace]] = {}
        for _ in range(rounds):
            for mode, verifier in modes.items():
                start = time.perf_counter()
                traces[mode] = searches(task, chosen, policy, verifier, method, cfg)
                timed[mode].append(time.perf_counter() - start)
    local = traces["in process"]
    rows = []
    for mode, ts in traces.items():
        n = len(ts)
        rows.append({
            "mode": mode, "seconds": statistics.median(timed[mode]),
            "verifier_seconds": sum(t.usage.verifier_seconds for t in ts) / n,
            "verifier_http_seconds": sum(t.usage.verifier_http_seconds for t in ts) / n,
            "verifier_calls": sum(t.usage.verifier_calls for t in ts) / n,
            "verifier_tokens": sum(t.usage.verifier_tokens for t in ts) / n,
            "accuracy": sum(task.grade(p, t.answer) for p, t in zip(chosen, ts)) / n,
            "same_answers": sum(t.answer == u.answer for t, u in zip(ts, local)) / n})
    config = {"task": task_name, "method": method, "budget": budget, "problems": problems, "rounds": rounds,
              "seed": seed, "verifier": prm}
    return {"config": config, "rows": rows}


def searches(task: Task, problems: list[Problem], lm: LanguageModel, verifier: Verifier, method: str,
             cfg: SearchConfig) -> list[Trace]:
    """One search per problem, all at once (the verifier's calls go concurrently)."""

    async def all_of_them() -> list[Trace]:
        return list(await asyncio.gather(*(search(task, p, lm, verifier, get_method(method), cfg) for p in problems)))

    return asyncio.run(all_of_them())


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = result["config"]
    table = Table(title=f"{c['method']}@{c['budget']} on {c['problems']} {c['task']} test problems with "
                        f"{c['verifier']}: in process, through /v1/score, through /pooling",
                  caption=f"seconds: the whole set, median of {c['rounds']} rounds; v. (the verifier's): per problem")
    for header in ("verifier", "seconds", "v. compute s", "v. HTTP s", "v. calls", "v. tokens", "accuracy",
                   "same answers"):
        table.add_column(header, justify="right")
    for r in result["rows"]:
        table.add_row(r["mode"], f"{r['seconds']:.1f}", f"{r['verifier_seconds']:.2f}",
                      f"{r['verifier_http_seconds']:.2f}", f"{r['verifier_calls']:.1f}", f"{r['verifier_tokens']:.0f}",
                      f"{r['accuracy']:.2f}", f"{r['same_answers']:.0%}")
    Console(width=160).print(table)
