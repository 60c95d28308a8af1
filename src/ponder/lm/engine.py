"""The batching engines: many concurrent searches share one model.

Every search is an async function; when it awaits `generate`, its requests join a queue.

- `Engine` (continuous batching, Yu et al., 2022, "Orca: A Distributed Serving System for Transformer-Based
  Generative Models"): the backend runs in a worker thread, one decoding step at a time. Before every step the
  requests waiting join the running batch, up to `max_rows` rows and `max_tokens` cache positions; a request
  leaves the moment it finishes and its search goes on while the others decode. The event loop never waits on
  the model. A cancelled search's rows leave at the next step.
- `StaticEngine` (step 1's engine, kept to measure against): once every runnable search has reached its next
  model call, the whole queue runs as one batch to its end, in the event loop's thread; nothing joins it.

A request's text depends only on its own seed, whatever batch it lands in and whenever it arrives (up to the
floating-point order of a batch's sums: `ponder bench engine` counts the texts that differ).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from ponder.batcher import resolve, start_worker
from ponder.lm.base import Backend, Completion, LanguageModel, Request


@dataclass
class EngineStats:
    batches: int = 0  # decoding steps (Engine) or whole batches (StaticEngine)
    rows: int = 0  # rows summed over them
    peak_rows: int = 0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


@dataclass(eq=False)
class _Waiting:
    request: Request
    future: asyncio.Future[list[Completion]]
    loop: asyncio.AbstractEventLoop


class Engine(LanguageModel):
    def __init__(self, backend: Backend, max_rows: int = 512, max_tokens: int = 1 << 18) -> None:
        if max_rows < 1 or max_tokens < 1:
            raise ValueError(f"an engine needs max_rows and max_tokens >= 1, got {max_rows}, {max_tokens}")
        self.backend = backend
        self.name = backend.name
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.stats = EngineStats()
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._cancelled: set[asyncio.Future[list[Completion]]] = set()
        self._worker: threading.Thread | None = None

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        entries = [_Waiting(r, loop.create_future(), loop) for r in requests]
        with self._cond:
            self._waiting.extend(entries)
            if self._worker is None or not self._worker.is_alive():
                self._worker = start_worker(self._serve, "ponder-engine")
            self._cond.notify()
        try:
            return list(await asyncio.gather(*(e.future for e in entries)))
        except asyncio.CancelledError:
            with self._cond:
                self._cancelled.update(e.future for e in entries)
            raise

    def _serve(self) -> None:
        """The worker: admit, step, deliver, until nothing runs and nothing waits (the next call starts a new
        worker). It holds the backend's lock while it has rows."""
        running: dict[int, _Waiting] = {}
        rows = tokens = 0
        cost: dict[int, int] = {}
        with self.backend.lock:
            while True:
                with self._cond:
                    cancelled = [k for k, e in running.items() if e.future in self._cancelled or e.loop.is_closed()]
                    self._waiting = [e for e in self._waiting if e.future not in self._cancelled]
                    self._cancelled.clear()
                    admit: list[_Waiting] = []
                    while self._waiting:
                        entry = self._waiting[0]
                        try:
                            need = self.backend.cost(entry.request)
                        except Exception as err:  # a prompt the tokenizer rejects: this request fails alone
                            self._waiting.pop(0)
                            _deliver(entry, error=err)
                            continue
                        fits = (rows + entry.request.n <= self.max_rows and tokens + need <= self.max_tokens)
                        if not fits and (running or admit):
                            break
                        admit.append(self._waiting.pop(0))
                        rows, tokens = rows + entry.request.n, tokens + need
                        cost[id(entry)] = need
                    if not running and not admit and not cancelled:
                        self._worker = None
                        return
                if cancelled:
                    self.backend.drop(cancelled)
                    for k in cancelled:
                        e = running.pop(k)
                        rows, tokens = rows - e.request.n, tokens - cost.pop(id(e))
                if admit:
                    for entry, key in zip(admit, self.backend.admit([e.request for e in admit])):
                        if isinstance(key, Exception):
                            rows, tokens = rows - entry.request.n, tokens - cost.pop(id(entry))
                            _deliver(entry, error=key)
                        else:
                            running[key] = entry
                if not running:
                    continue
                try:
                    live = len(running)
                    done = self.backend.step()
                except Exception as err:  # every caller of this batch sees the error; the engine goes on
                    self.backend.drop(list(running))
                    for e in running.values():
                        _deliver(e, error=err)
                    running.clear()
                    rows = tokens = 0
                    cost.clear()
                    continue
                self.stats.batches += 1
                self.stats.rows += live
                self.stats.peak_rows = max(self.stats.peak_rows, rows)
                for key, out in done.items():
                    e = running.pop(key)
                    rows, tokens = rows - e.request.n, tokens - cost.pop(id(e))
                    _deliver(e, result=out)


def _deliver(entry: _Waiting, result: list[Completion] | None = None, error: BaseException | None = None) -> None:
    resolve(entry.loop, entry.future, result, error)


class StaticEngine(LanguageModel):
    """Step 1's engine: gather every waiting request, run them as one batch to the end, repeat."""

    def __init__(self, backend: Backend, max_rows: int = 512) -> None:
        self.backend = backend
        self.name = backend.name
        self.max_rows = max_rows
        self.stats = EngineStats()
        self._pending: list[tuple[Request, asyncio.Future[list[Completion]]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        self._pending.extend(zip(requests, futures))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._serve())
        return list(await asyncio.gather(*futures))

    async def _settle(self) -> None:
        """Yield to the event loop until no search adds requests any more (all are waiting on us)."""
        quiet = 0
        seen = len(self._pending)
        while quiet < 4:
            await asyncio.sleep(0)
            quiet = quiet + 1 if len(self._pending) == seen else 0
            seen = len(self._pending)

    async def _serve(self) -> None:
        while self._pending:
            await self._settle()
            cut, rows = 0, 0  # requests up to max_rows rows (a request of n completions counts n)
            while cut < len(self._pending) and (cut == 0 or rows + self._pending[cut][0].n <= self.max_rows):
                rows += self._pending[cut][0].n
                cut += 1
            batch, self._pending = self._pending[:cut], self._pending[cut:]
            live = [(r, f) for r, f in batch if not f.done()]  # a cancelled search leaves done futures
            if not live:
                continue
            try:
                outs = self.backend.generate_many([r for r, _ in live])
            except Exception as err:  # the callers see the backend's error, not a hang
                for _, f in live:
                    f.set_exception(err)
                continue
            self.stats.batches += 1
            rows = sum(r.n for r, _ in live)
            self.stats.rows += rows
            self.stats.peak_rows = max(self.stats.peak_rows, rows)
            for (_, f), out in zip(live, outs):
                f.set_result(out)
