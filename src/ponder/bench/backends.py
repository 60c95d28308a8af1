"""`ponder bench backends`: llama.cpp in process against transformers, on the same GGUF file, in one run.

Both backends get the same prompt, a grade-school math question (GSM8K-style) and "Let's think step by step."
through the model's chat template, sampled at temperature 0.7 with a seed per request, `max_tokens` each, through
the continuous-batching `Engine`: one request alone (one row per decoding step), then `prompts` requests at once
(all rows in one step). Throughput is generated tokens over the wall time from submission to the last completion,
prefill included. transformers runs the weights de-quantized to float32 (`HFBackend`), llama.cpp the quantized
ones (`LlamaCppBackend`); each backend reuses the prompt's keys and values across the requests (prefix cache, shared
prefill), so the batch measures decoding.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from ponder.errors import ConfigError
from ponder.lm.base import Backend, Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.lm.llamacpp import LlamaCppBackend

QUESTION = ("A bakery sells muffins for $3 each and cookies for $2 each. On Monday it sold 24 muffins and twice as "
            "many cookies as muffins. On Tuesday it sold half as many muffins as on Monday and 10 more cookies than "
            "on Monday. How much money did the bakery make from muffins and cookies over the two days?")


def _measure(backend: Backend, prompt: str, requests: int, max_tokens: int, seed: int) -> dict[str, Any]:
    """`requests` seeded requests at once through an engine as wide as they are: tokens, seconds, throughput."""
    engine = Engine(backend, max_rows=requests)
    batch = [Request(prompt, SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=seed + i))
             for i in range(requests)]

    async def everything() -> list[list[Any]]:
        return list(await asyncio.gather(*(engine.generate([r]) for r in batch)))

    start = time.perf_counter()
    outs = asyncio.run(everything())
    seconds = time.perf_counter() - start
    tokens = sum(c.generated_tokens for [c] in outs)
    return {"requests": requests, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "mean_rows": engine.stats.mean_batch}


def run(model_path: str, prompts: int = 32, max_tokens: int = 128, threads: int | None = None,
        seed: int = 0, prompt: str = "") -> dict[str, Any]:
    """Generated tokens per second of llama.cpp and transformers on `model_path` (a .gguf file), one request and
    `prompts` at once, and llama.cpp's ratio to transformers at each. `prompt`: a raw prompt instead of the question
    through the chat template (a model without one, such as an exported policy)."""
    llama = LlamaCppBackend(model_path, threads=threads, max_rows=prompts, n_ctx=max_tokens + 512)
    prompt = prompt or llama.chat_prompt([{"role": "user", "content": f"{QUESTION}\nLet's think step by step."}])
    if prompt is None:
        raise ConfigError(f"{model_path} has no chat template: give a raw prompt")
    rows = []
    for name, backend in [("llama.cpp", llama), ("transformers", HFBackend(model_path, threads=threads))]:
        _measure(backend, prompt, 1, 4, seed=seed - 1)  # warm up: the first call allocates
        for requests in (1, prompts):
            rows.append({"backend": name, **_measure(backend, prompt, requests, max_tokens, seed)})
    speed = {(r["backend"], r["requests"]): r["tokens_per_s"] for r in rows}
    return {"model": llama.name, "prompt_tokens": len(llama.encode(prompt)), "prompts": prompts,
            "max_tokens": max_tokens, "threads": threads, "rows": rows,
            "ratio_single": speed["llama.cpp", 1] / speed["transformers", 1],
            "ratio_batch": speed["llama.cpp", prompts] / speed["transformers", prompts]}


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"{result['model']}: {result['prompt_tokens']}-token prompt, {result['max_tokens']} tokens "
                        f"each, threads {result['threads'] or 'default'}")
    for header in ("backend", "requests", "tokens", "seconds", "tokens/s", "mean rows"):
        table.add_column(header, justify="right")
    for r in result["rows"]:
        table.add_row(r["backend"], str(r["requests"]), str(r["tokens"]), f"{r['seconds']:.1f}",
                      f"{r['tokens_per_s']:.1f}", f"{r['mean_rows']:.1f}")
    console = console or Console()
    console.print(table)
    console.print(f"llama.cpp / transformers: {result['ratio_single']:.2f}x at 1 request, "
                  f"{result['ratio_batch']:.2f}x at {result['prompts']}")
