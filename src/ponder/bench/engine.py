"""`ponder bench engine`: the engine for tree search against the whole-batch engine, the same workloads in one run.

Engines:
- `static` (the whole-batch engine): a batch starts once every search waits, runs in the event loop until its
  longest row ends,
  nothing joins it; every prompt is computed from scratch; the key-value cache is copied whole with every token;
  the PRM scores each search's call at once, alone.
- `continuous`: `Engine` (rows join and leave at every decoding step, in a worker thread), the prefix cache
  (a radix tree of keys and values under a memory budget), keys and values written in place, and the verifier
  engine (the PRM calls of all searches share forward passes, in their own worker thread).

Workloads (every request seeded, so both engines run the same searches):
- `beam`: step-level beam search over game24 test puzzles: ToT-BFS with b = 4 states kept, k = 4 independent
  candidate steps each, every new state scored by the shipped PRM.
- `arith`: self-consistency@16 on arith test problems (a longer prompt, 16 samples of it).
- `sc`: self-consistency@8 on game24 (a workload of single samples), also against sequential one-request calls and one
  maximal batch.
- `greedy`: greedy CoT on game24, whose texts must not change with the engine.
- `gsm8k`: step-level beam search (N = 4 beams, M = 2 proposals each) on GSM8K test problems with SmolLM2-135M
  (`smollm2`, a vocabulary of 49,152), each step judged by the policy itself (the `judge` verifier): the workload
  whose decoding steps are dominated by host work when the forward pass is fast (`--device cuda`).

`device` places the policies and the learned verifiers (`cpu`, `cuda`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

from ponder import heap
from ponder.errors import ConfigError
from ponder.lm.base import Completion, LanguageModel, Request, Wrapper
from ponder.lm.engine import Engine, StaticEngine
from ponder.lm.hf import HFBackend
from ponder.lm.load import resolve_alias
from ponder.lm.prefix_cache import PrefixCache
from ponder.search import SearchConfig, get_method, search
from ponder.search.beam import BeamConfig
from ponder.search.tot import ToTBFSConfig
from ponder.tasks import get_task
from ponder.tasks.base import Problem
from ponder.trace import Trace, Usage
from ponder.verifiers import ASKING, Verifier, get_verifier
from ponder.verifiers.learned import LearnedVerifier

logger = logging.getLogger(__name__)

ENGINES = ("static", "continuous")
WORKLOADS = ("beam", "arith", "sc", "greedy", "gsm8k")


@dataclass(frozen=True)
class Workload:
    name: str
    task: str
    method: str
    problems: int
    cfg: SearchConfig
    verifier: str | None = None
    model: str = ""  # the policy (default: the task's shipped one)

    @property
    def policy(self) -> str:
        return self.model or f"{self.task}-policy"

    @property
    def title(self) -> str:
        return {"beam": f"beam search (b=4, k=4, PRM), {self.problems} game24",
                "arith": f"SC@16, {self.problems} arith", "sc": f"SC@8, {self.problems} game24",
                "greedy": f"greedy CoT, {self.problems} game24",
                "gsm8k": f"beam search (N=4, M=2, judge), {self.problems} gsm8k"}[self.name]


def workloads(names: list[str], problems: int, seed: int) -> list[Workload]:
    known = {
        "beam": Workload("beam", "game24", "tot_bfs", problems, SearchConfig(
            n=4, temperature=0.8, max_tokens=160, max_step_tokens=32, aggregate="min", seed=seed,
            knobs=ToTBFSConfig(width=4, breadth=4, distinct=False)), verifier="game24-prm"),
        "arith": Workload("arith", "arith", "self_consistency", problems // 2,
                          SearchConfig(n=16, temperature=0.8, max_tokens=256, seed=seed)),
        "sc": Workload("sc", "game24", "self_consistency", problems,
                       SearchConfig(n=8, temperature=0.8, max_tokens=160, seed=seed)),
        "greedy": Workload("greedy", "game24", "cot", problems, SearchConfig(n=1, temperature=0.0, max_tokens=160,
                                                                          seed=seed)),
        "gsm8k": Workload("gsm8k", "gsm8k", "beam", max(1, problems // 16), SearchConfig(
            n=4, temperature=0.8, min_p=0.01, max_tokens=256, max_step_tokens=64, seed=seed,
            knobs=BeamConfig(width=2)), verifier="judge", model=resolve_alias("smollm2")),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    return [known[n] for n in names]


class _Recorder(Wrapper):
    """Keeps every request and its completions, to compare the engines' texts request by request."""

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__(lm)
        self.texts: dict[tuple[str, int | None, int], list[str]] = {}
        self.requests: list[Request] = []
        self.completions: list[Completion] = []

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        outs = await self.lm.generate_many(requests)
        for r, out in zip(requests, outs):
            self.texts[(r.prompt, r.params.seed, r.n)] = [c.text for c in out]
            if r.n == 1:
                self.requests.append(r)
                self.completions.append(out[0])
        return outs


class _PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms from /proc). It starts by
    handing the memory an earlier run freed back to the system (glibc keeps freed heap pages otherwise, and the
    second engine's peak would include the first's)."""

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        heap.trim()
        self.peak = self.start = heap.resident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, heap.resident())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, heap.resident())


def run_workload(w: Workload, engine: str, backend: HFBackend, max_rows: int, cache_mb: float) -> dict[str, Any]:
    """One workload through one engine: its usage, time, memory, traces and texts."""
    task = get_task(w.task)
    problems = task.problems("test", limit=w.problems)
    backend.prefixes = PrefixCache(int(cache_mb * 2**20)) if engine == "continuous" else None
    backend.grow_in_place = engine == "continuous"
    lm: LanguageModel = Engine(backend, max_rows=max_rows) if engine == "continuous" else StaticEngine(
        backend, max_rows=max_rows)
    task.template = lm.chat_prompt
    recorder = _Recorder(lm)
    # the whole-batch engine scores each search's PRM call at once, alone, every text from scratch; the continuous
    # engine batches them and the PRM reads on from its own prefix cache. A verifier that asks the policy asks it
    # through the engine.
    verifier: Verifier | None = None
    if w.verifier in ASKING:
        verifier = get_verifier(w.verifier, recorder)
    elif w.verifier:
        verifier = LearnedVerifier(w.verifier, batched=engine == "continuous",
                                   prefix_cache_mb=128 if engine == "continuous" else 0, device=backend.device)
    method = get_method(w.method)

    async def one(problem: Problem) -> Trace | None:
        try:
            return await search(task, problem, recorder, verifier, method, w.cfg)
        except Exception as err:  # this problem fails alone: counted wrong, and in `errors`
            logger.warning("bench engine %s (%s), problem %s: %s: %s", w.name, engine, problem.id,
                           type(err).__name__, err)
            return None

    async def everything() -> list[Trace | None]:
        return list(await asyncio.gather(*(one(p) for p in problems)))

    forward = backend.forward_seconds
    with _PeakMemory() as memory:
        start = time.perf_counter()
        traces = asyncio.run(everything())
        seconds = time.perf_counter() - start
    usage = Usage()
    for t in traces:
        if t is not None:
            usage.add(t.usage)
    right = sum(t is not None and task.grade(p, t.answer) for p, t in zip(problems, traces))
    return {"workload": w.name, "title": w.title, "engine": engine, "seconds": seconds, "usage": usage,
            "forward_s": backend.forward_seconds - forward,
            "accuracy": right / len(problems),  # a problem whose search raised counts wrong, and in `errors`
            "errors": sum(t is None for t in traces),
            "peak_rss_mb": memory.peak / 2**20,
            "cache_mb": (backend.prefixes.peak_bytes / 2**20) if backend.prefixes else 0.0,
            "cache_budget_mb": cache_mb if backend.prefixes else 0.0,
            "steps": lm.stats.batches,  # type: ignore[attr-defined]
            "traces": traces, "recorder": recorder}


def _tree(trace: Trace) -> list[tuple[int | None, str, bool]]:
    return [(n.parent, n.text, n.terminal) for n in trace.nodes]


def compare(static: dict[str, Any], fast: dict[str, Any]) -> dict[str, Any]:
    """Speed-up, and how much of the two runs' output is identical (requests answered by both). `bound`: the
    speed-up if the continuous run spent no time outside the policy's forward passes and the PRM, the most
    any scheduling of those passes can give (beyond a few hundred rows a token costs about the same in any
    batch: see the SC@8 baselines' one maximal batch)."""
    a, b = static["recorder"].texts, fast["recorder"].texts
    shared = [k for k in a if k in b]
    same_trees = sum(x is not None and y is not None and _tree(x) == _tree(y)
                     for x, y in zip(static["traces"], fast["traces"]))
    busy = fast["forward_s"] + fast["usage"].verifier_seconds
    return {"speedup": static["seconds"] / fast["seconds"], "bound": static["seconds"] / busy,
            "requests_compared": len(shared),
            "texts_differ": sum(a[k] != b[k] for k in shared) / max(1, len(shared)),
            "same_trees": same_trees / len(static["traces"])}


def baselines(w: Workload, backend: HFBackend, recorded: _Recorder, sequential: int) -> list[dict[str, Any]]:
    """The baselines of a workload of single samples: every request as its own call (the first `sequential`
    requests), and all of them as one maximal batch (the same decoding loop, no prefix cache)."""
    backend.prefixes, backend.grow_in_place = None, True
    requests, reference = recorded.requests, recorded.completions
    start = time.perf_counter()
    ceiling = backend.generate_batch(requests)
    t_batch = time.perf_counter() - start
    start = time.perf_counter()
    alone = [backend.generate_batch([r])[0] for r in requests[:sequential]]
    t_seq = time.perf_counter() - start
    return [
        {"mode": "one request per call", "requests": len(alone), "seconds": t_seq,
         "tokens": sum(c.generated_tokens for c in alone),
         "same_texts": [c.text for c in alone] == [c.text for c in reference[:sequential]]},
        {"mode": "one maximal batch", "requests": len(requests), "seconds": t_batch,
         "tokens": sum(c.generated_tokens for c in ceiling),
         "same_texts": [c.text for c in ceiling] == [c.text for c in reference]},
    ]


def engine_benchmark(names: list[str], problems: int, seed: int, engines: list[str], max_rows: int = 512,
                     cache_mb: float = 256, sequential: int = 64, device: str = "cpu") -> dict[str, Any]:
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ConfigError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    backends: dict[str, HFBackend] = {}
    rows, comparisons, extra = [], [], []
    for w in workloads(names, problems, seed):
        if w.policy not in backends:
            backends[w.policy] = HFBackend(w.policy, device=device)
            backends[w.policy].generate_batch([Request("Input: 1 2 3 4\n")])  # warm-up: one-off costs
        backend = backends[w.policy]
        runs = {e: run_workload(w, e, backend, max_rows, cache_mb) for e in engines}
        for run in runs.values():
            u = run["usage"]
            rows.append({
                "workload": w.title, "engine": run["engine"], "seconds": run["seconds"],
                "gen_tokens": u.generated_tokens, "tokens_per_s": u.generated_tokens / run["seconds"],
                "prompt_tokens": u.prompt_tokens, "computed": u.computed_prompt_tokens / max(1, u.prompt_tokens),
                "model_calls": u.model_calls, "verifier_calls": u.verifier_calls,
                "verifier_tokens": u.verifier_tokens, "verifier_s": u.verifier_seconds, "steps": run["steps"],
                "forward_s": run["forward_s"],
                "accuracy": run["accuracy"], "errors": run["errors"], "peak_rss_mb": run["peak_rss_mb"],
                "cache_mb": run["cache_mb"],
                "cache_budget_mb": run["cache_budget_mb"],
                **{f"usage_{f.name}": getattr(u, f.name) for f in fields(u)},
            })
        if set(ENGINES) <= set(runs):
            comparisons.append({"workload": w.title, **compare(runs["static"], runs["continuous"])})
        if w.name == "sc" and "continuous" in runs:
            fast = runs["continuous"]
            for row in baselines(w, backend, fast["recorder"], min(sequential, len(fast["recorder"].requests))):
                row["tokens_per_s"] = row["tokens"] / row["seconds"]
                extra.append(row)
            engine_rate = fast["usage"].generated_tokens / fast["seconds"]
            for row in extra:
                row["engine_vs_this"] = engine_rate / row["tokens_per_s"]
    return {"rows": rows, "comparisons": comparisons, "sc_baselines": extra}
