"""`ponder bench engine`: what the batching engine buys, measured side by side in one run.

One workload (game24 test problems x self-consistency@n with the shipped policy) three ways:
(a) through the engine, all searches concurrent; (b) every request as its own one-row `generate_batch`
call, one after another; (c) all requests in one maximal `generate_batch` call, the ceiling for (a).
For reference, (d) the same requests as one call of transformers' own `model.generate` (no per-row seeds).
Every request carries its own seed, so (a)-(c) produce the same texts; the benchmark checks that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch

from ponder.lm.base import Completion, LanguageModel, Request
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search import SearchConfig
from ponder.search.base import request_seed
from ponder.search.self_consistency import self_consistency
from ponder.tasks import Game24


class _Recorder(LanguageModel):
    """Records every request a search makes, so the other modes can replay exactly the same workload."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.requests: list[Request] = []
        self.completions: list[Completion] = []

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        out = await self.lm.generate_many(requests)
        self.requests += requests
        self.completions += [c for [c] in out]  # the workload's requests are single samples
        return out


def engine_benchmark(model: str, n_problems: int, n: int, sequential_problems: int, seed: int) -> list[dict[str, Any]]:
    task = Game24()
    problems = task.problems("test", limit=n_problems)
    backend = HFBackend(model)
    cfg = SearchConfig(n=n, temperature=0.8, max_tokens=160, seed=seed)
    backend.generate_batch([Request(task.prompt(problems[0]))])  # warm-up: first call pays one-off costs

    engine = Engine(backend, max_rows=n_problems * n)
    recorder = _Recorder(engine)

    async def all_searches() -> None:
        await asyncio.gather(*(self_consistency(task, p, recorder, None, cfg) for p in problems))

    start = time.perf_counter()
    asyncio.run(all_searches())
    t_engine = time.perf_counter() - start
    requests, reference = recorder.requests, recorder.completions

    start = time.perf_counter()
    ceiling = backend.generate_batch(requests)
    t_batch = time.perf_counter() - start

    subset = [r for r in requests if any(r.params.seed == request_seed(cfg, p, "sample", i)
                                         for p in problems[:sequential_problems] for i in range(n))]
    start = time.perf_counter()
    sequential = [backend.generate_batch([r])[0] for r in subset]
    t_seq = time.perf_counter() - start

    start = time.perf_counter()
    hf_tokens = _hf_generate(backend, requests, cfg)
    t_hf = time.perf_counter() - start

    same = [c.text for c in ceiling] == [c.text for c in reference]
    by_prompt_seed = {(r.prompt, r.params.seed): c.text for r, c in zip(requests, reference)}
    same_seq = all(by_prompt_seed[(r.prompt, r.params.seed)] == c.text for r, c in zip(subset, sequential))
    rows = [
        {"mode": "(a) engine", "rows": len(requests), "tokens": sum(c.generated_tokens for c in reference),
         "seconds": t_engine, "batches": engine.stats.batches},
        {"mode": "(b) sequential, 1 request per call", "rows": len(subset),
         "tokens": sum(c.generated_tokens for c in sequential), "seconds": t_seq, "batches": len(subset)},
        {"mode": "(c) one maximal batch", "rows": len(requests), "tokens": sum(c.generated_tokens for c in ceiling),
         "seconds": t_batch, "batches": 1},
        {"mode": "(d) transformers generate, one batch", "rows": len(requests), "tokens": hf_tokens,
         "seconds": t_hf, "batches": 1},
    ]
    for row in rows:
        row["tokens_per_s"] = row["tokens"] / row["seconds"]
    for row in rows:
        row["vs_sequential"] = row["tokens_per_s"] / rows[1]["tokens_per_s"]
        row["vs_max_batch"] = row["tokens_per_s"] / rows[2]["tokens_per_s"]
        row["same_texts"] = same if row is not rows[1] else same_seq
    rows[3]["same_texts"] = "n/a"
    return rows


@torch.inference_mode()
def _hf_generate(backend: HFBackend, requests: list[Request], cfg: SearchConfig) -> int:
    """Generated tokens (up to and including end-of-sequence) of one `model.generate` call over all requests."""
    tok = backend.tokenizer
    tok.padding_side = "left"
    enc = tok([r.prompt for r in requests], add_special_tokens=False, padding=True, return_tensors="pt")
    out = backend.model.generate(**enc, do_sample=True, temperature=cfg.temperature, max_new_tokens=cfg.max_tokens,
                                 pad_token_id=backend.pad, eos_token_id=sorted(backend.eos), top_k=0)
    new = out[:, enc.input_ids.shape[1] :]
    total = 0
    for row in new.tolist():
        ends = [i for i, t in enumerate(row) if t in backend.eos]
        total += ends[0] + 1 if ends else len(row)
    return total
