"""`OpenAIServer` against llama-cpp-python's HTTP server: throughput with 1, 8 and 32 requests in flight, and the
same prompts run greedily in process through `llama_cpp.Llama`, whose texts the server's should equal.

The prompts are GSM8K test questions (a sample drawn with `seed`) through the GGUF's own chat template
(`template_from`), sent greedily to `/v1/completions`. The server runs on 127.0.0.1 at a free port with
`--n_threads 2`, and is stopped before the in-process run so that the two never share the cores.

llama-cpp-python's server has no parallel sequences: its options have no `--n_parallel` (that is the C++
`llama-server`'s), and every request takes one global lock around its single `Llama`, so requests in flight queue
and run one at a time. More requests in flight hide only the HTTP round trips.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ponder.lm.base import Request, SamplingParams
from ponder.lm.openai_http import OpenAIServer
from ponder.tasks import GSM8K


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(cmd: list[str], base_url: str, startup: float = 180, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a server command until the block ends; yields `base_url` once `{base_url}/models` answers. A server that
    exits or does not answer within `startup` seconds raises RuntimeError with the end of its log."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        try:
            deadline = time.monotonic() + startup
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{' '.join(cmd[:4])} ... "
                                       f"{'exited' if proc.poll() is not None else 'did not answer'}:\n"
                                       f"{log.read()[-3000:]}")
                try:
                    if httpx.get(f"{base_url}/models", timeout=5).is_success:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield base_url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def llama_cpp_server(model_path: str, n_ctx: int = 2048, threads: int = 2) -> Iterator[str]:
    """llama-cpp-python's server on a GGUF file at 127.0.0.1 (a free port); yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--verbose", "False"]
    with serving(cmd, f"http://127.0.0.1:{port}/v1") as url:
        yield url


def run(model_path: str, n_prompts: int = 64, max_tokens: int = 64, in_flight: tuple[int, ...] = (1, 8, 32),
        seed: int = 0) -> dict[str, Any]:
    problems = random.Random(seed).sample(GSM8K().problems("test"), n_prompts)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    rows: list[dict[str, Any]] = []
    texts: list[list[str]] = []
    with llama_cpp_server(model_path) as url:
        prompts = [GSM8K(template=OpenAIServer(url, template_from=model_path).chat_prompt).prompt(p) for p in problems]
        for level in in_flight:
            lm = OpenAIServer(url, max_in_flight=level)
            start = time.perf_counter()
            outs = asyncio.run(lm.generate([Request(p, params) for p in prompts]))
            seconds = time.perf_counter() - start
            texts.append([c.text for c in outs])
            tokens = sum(c.generated_tokens for c in outs)
            rows.append(_row(f"server, {level} in flight", seconds, len(prompts), tokens))
    from llama_cpp import Llama

    llama = Llama(model_path, n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
    start = time.perf_counter()
    local = [llama.create_completion(p, temperature=0.0, max_tokens=max_tokens) for p in prompts]
    rows.append(_row("in process (Llama.create_completion)", time.perf_counter() - start, len(prompts),
                     sum(c["usage"]["completion_tokens"] for c in local)))
    local_texts = [c["choices"][0]["text"] for c in local]
    for row, server_texts in zip(rows, texts):
        row["same_text"] = sum(a == b for a, b in zip(server_texts, local_texts)) / len(prompts)
    return {"model": os.path.basename(model_path), "prompts": len(prompts), "max_tokens": max_tokens, "seed": seed,
            "cores": os.cpu_count(), "rows": rows}


def _row(mode: str, seconds: float, requests: int, tokens: int) -> dict[str, Any]:
    return {"mode": mode, "seconds": seconds, "requests_per_s": requests / seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds, "same_text": None}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} over HTTP (llama-cpp-python server) and in process: {result['prompts']} "
                        f"GSM8K prompts, greedy, {result['max_tokens']} tokens at most, {result['cores']} cores")
    for header in ("mode", "seconds", "requests/s", "generated tokens", "generated tokens/s", "same text as local"):
        table.add_column(header, justify="right")
    for r in result["rows"]:
        same = "-" if r["same_text"] is None else f"{r['same_text']:.0%}"
        table.add_row(r["mode"], f"{r['seconds']:.1f}", f"{r['requests_per_s']:.2f}", str(r["tokens"]),
                      f"{r['tokens_per_s']:.1f}", same)
    Console(width=160).print(table)
