"""`OpenAIServer` against llama-cpp-python's HTTP server: throughput with 1, 8 and 32 requests in flight, and the
same prompts run greedily in process through `llama_cpp.Llama`, whose texts the server's should equal.

The prompts are GSM8K test questions (a sample drawn with `seed`) through the GGUF's own chat template
(`load_chat_template`), sent greedily to `/v1/completions`. The server runs on 127.0.0.1 at a free port with
`--n_threads 2`. The prompts go in parts of the largest in-flight count, each part through every mode in turn (the
server idles while the in-process model runs), so that other work on the machine slows every mode alike.

llama-cpp-python's server has no parallel sequences: its options have no `--n_parallel` (that is the C++
`llama-server`'s), and every request takes one global lock around its single `Llama`, so requests in flight queue
and run one at a time. More requests in flight hide only the HTTP round trips. It also keeps `logits_all` on by
default (the log-probabilities `next_token` needs), computing the output layer for every prompt token."""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import util
from typing import Any

import httpx

from ponder.errors import MissingExtra
from ponder.lm.base import Request, SamplingParams
from ponder.lm.openai_http import OpenAIServer, load_chat_template
from ponder.tasks import GSM8K

PR_SET_PDEATHSIG = 1  # prctl(2)


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
                                start_new_session=True, preexec_fn=_die_with_parent)
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
        finally:  # a server that exited by itself has no process group left: its error above is the one to see
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _die_with_parent() -> None:
    """In the server's process, before it starts: be killed when the thread that started it dies (Linux), so that a
    run killed without clean-up (SIGTERM, SIGKILL) leaves no server behind."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def need_server() -> None:
    """Fail in one line where llama-cpp-python's server cannot start: it needs the package and its web stack."""
    if not all(util.find_spec(name) for name in ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context")):
        raise MissingExtra("llama.cpp's OpenAI-compatible server", "llama-cpp-python[server]", "server")


@contextmanager
def llama_cpp_server(model_path: str, n_ctx: int = 2048, threads: int = 2) -> Iterator[str]:
    """llama-cpp-python's server on a GGUF file at 127.0.0.1 (a free port); yields its base URL."""
    need_server()
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--verbose", "False"]
    with serving(cmd, f"http://127.0.0.1:{port}/v1") as url:
        yield url


def run(model_path: str, n_prompts: int = 64, max_tokens: int = 64, in_flight: tuple[int, ...] = (1, 8, 32),
        seed: int = 0) -> dict[str, Any]:
    need_server()
    from llama_cpp import Llama

    load = os.getloadavg()
    template = load_chat_template(model_path)
    prompts = [GSM8K(template=template).prompt(p)
               for p in random.Random(seed).sample(GSM8K().problems("test"), n_prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    modes = [*in_flight, 0]  # 0: in process
    seconds, tokens = dict.fromkeys(modes, 0.0), dict.fromkeys(modes, 0)
    texts: dict[int, list[str]] = {m: [] for m in modes}
    with llama_cpp_server(model_path) as url:
        llama = Llama(model_path, n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
        step = max(in_flight)
        for part in (prompts[i : i + step] for i in range(0, len(prompts), step)):
            for mode in modes:  # each mode in turn on each part: other work on the machine slows them alike
                start = time.perf_counter()
                if mode:  # the server runs one request at a time: the last of a part waits for all the others
                    lm = OpenAIServer(url, max_in_flight=mode, timeout=3600)
                    outs = asyncio.run(lm.generate([Request(p, params) for p in part]))
                    done = [(c.text, c.generated_tokens) for c in outs]
                else:  # the server idles meanwhile
                    local = [llama.create_completion(p, temperature=0.0, max_tokens=max_tokens) for p in part]
                    done = [(c["choices"][0]["text"], c["usage"]["completion_tokens"]) for c in local]
                seconds[mode] += time.perf_counter() - start
                texts[mode] += [text for text, _ in done]
                tokens[mode] += sum(n for _, n in done)
    rows = [{"mode": f"server, {m} in flight" if m else "in process (Llama.create_completion)",
             "seconds": seconds[m], "requests_per_s": len(prompts) / seconds[m], "tokens": tokens[m],
             "tokens_per_s": tokens[m] / seconds[m],
             "same_text": sum(a == b for a, b in zip(texts[m], texts[0])) / len(prompts) if m else None}
            for m in modes]
    return {"model": os.path.basename(model_path), "prompts": len(prompts), "max_tokens": max_tokens, "seed": seed,
            "cores": os.cpu_count(), "load": [load[0], os.getloadavg()[0]], "rows": rows}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} over HTTP (llama-cpp-python server) and in process: {result['prompts']} "
                        f"GSM8K prompts, greedy, {result['max_tokens']} tokens at most, {result['cores']} cores "
                        f"(load average {result['load'][0]:.1f} before, {result['load'][1]:.1f} after)")
    for header in ("mode", "seconds", "requests/s", "generated tokens", "generated tokens/s", "same text as local"):
        table.add_column(header, justify="right")
    for r in result["rows"]:
        same = "-" if r["same_text"] is None else f"{r['same_text']:.0%}"
        table.add_row(r["mode"], f"{r['seconds']:.1f}", f"{r['requests_per_s']:.2f}", str(r["tokens"]),
                      f"{r['tokens_per_s']:.1f}", same)
    Console(width=160).print(table)
