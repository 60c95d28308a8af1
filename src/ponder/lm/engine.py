"""The batching engines: many concurrent searches share one model.

Every search is an async function; when it awaits `generate`, its requests join a queue.

- `Engine` (continuous batching, Yu et al., 2022, "Orca: A Distributed Serving System for Transformer-Based
  Generative Models"): the backend runs on the compute thread (`ponder.batcher.COMPUTE`, shared with the verifier
  engine), one decoding step per turn. Before every step the
  requests waiting join the running batch, up to `max_rows` rows and `max_tokens` cache positions; a request
  leaves the moment it finishes and its search goes on while the others decode. The event loop never waits on
  the model. A cancelled search's rows leave at the next step.
- `StaticEngine` (the whole-batch engine, kept to measure against): once every runnable search has reached its next
  model call, the whole queue runs as one batch to its end, in the event loop's thread; nothing joins it.

A request's text depends only on its own seed, whatever batch it lands in and whenever it arrives (up to the
floating-point order of a batch's sums: `ponder bench engine` counts the texts that differ).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from ponder.batcher import COMPUTE, Batcher, resolve
from ponder.errors import ConfigError, PonderError
from ponder.lm.base import Backend, Completion, NextToken, OnBackend, Request

logger = logging.getLogger(__name__)


class EngineClosedError(PonderError, RuntimeError):
    """A request to an engine that has been closed."""


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


class Engine(OnBackend):
    """Continuous batching over `backend`. A context manager: `with Engine(backend) as lm:` closes it on exit
    (`close`)."""

    def __init__(self, backend: Backend, max_rows: int = 512, max_tokens: int | None = None) -> None:
        if max_tokens is None:
            max_tokens = backend.cache_positions()
        if max_rows < 1 or max_tokens < 1:
            raise ConfigError(f"an engine needs max_rows and max_tokens >= 1, got {max_rows}, {max_tokens}")
        super().__init__(backend)
        self.max_rows, self.max_tokens = max_rows, max_tokens
        self.stats = EngineStats()
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._cancelled: set[asyncio.Future[list[Completion]]] = set()
        self._scheduled = False  # a turn is queued on the compute thread
        self._running: dict[int, _Waiting] = {}  # by backend key
        self._cost: dict[int, int] = {}  # cache positions each running request may take
        self._rows = 0
        # next-token questions (a judge's P("Yes")) of all searches, batched on the compute thread between steps
        self._questions = Batcher(self._answer, max_items=64, name="next-token")
        self._closed = False

    @property
    def active_rows(self) -> int:
        """The rows running or being admitted now (a request for n completions holds n); 0 when idle."""
        return self._rows

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self, timeout: float = 60.0) -> None:
        """Refuse new requests, wait (up to `timeout` seconds) for those in flight, free the backend's resources
        (`Backend.close`) and let the compute thread end once no other engine needs it."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while (self._scheduled or self._questions.scheduled) and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.backend.lock:
            self.backend.close()
        COMPUTE.join(max(0.0, deadline - time.monotonic()))

    async def next_token(self, prompts: list[str], words: list[str]) -> list[NextToken]:
        return await self._questions.run([(p, tuple(words)) for p in prompts])

    def _answer(self, items: list[tuple[str, tuple[str, ...]]]) -> list[NextToken]:
        out: dict[int, NextToken] = {}
        for words in dict.fromkeys(w for _, w in items):
            at = [i for i, (_, w) in enumerate(items) if w == words]
            out.update(zip(at, self.backend.next_token([items[i][0] for i in at], list(words))))
        return [out[i] for i in range(len(items))]

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        if self._closed:
            raise EngineClosedError(f"the engine of {self.name} is closed")
        loop = asyncio.get_running_loop()
        entries = [_Waiting(r, loop.create_future(), loop) for r in requests]
        with self._lock:
            self._waiting.extend(entries)
            if not self._scheduled:
                self._scheduled = True
                COMPUTE.submit(self._turn)
        try:
            return list(await asyncio.gather(*(e.future for e in entries)))
        except asyncio.CancelledError:
            with self._lock:
                self._cancelled.update(e.future for e in entries)
            raise

    def _turn(self) -> bool:
        """One turn on the compute thread: drop cancelled requests, admit waiting ones, run one decoding step,
        deliver what finished. True while there is more to do. The engine holds the backend's lock from its first
        admitted request until nothing runs.

        A fault reaches the requests it concerns, with the backend's error, and the engine goes on: an admission
        that raises fails the requests it was admitting (the backend has freed what it took); a decoding step, or a
        drop, that raises fails every running request and drops their rows."""
        running = self._running
        with self._lock:
            cancelled = [k for k, e in running.items() if e.future in self._cancelled or e.loop.is_closed()]
            self._waiting = [e for e in self._waiting if e.future not in self._cancelled]
            self._cancelled.clear()
            admit = self._take()
            if not running and not admit and not cancelled:
                self._scheduled = bool(self._waiting)
                return self._scheduled
        if not running and admit:
            self.backend.lock.acquire()
        try:
            if cancelled:
                self._drop(cancelled)
            if admit:
                self._admit(admit)
            if running:
                self._step()
        finally:
            if not running:
                self.backend.lock.release()
        return True

    def _drop(self, cancelled: list[int]) -> None:
        for key in cancelled:
            self._finish(key)
        try:
            self.backend.drop(cancelled)
        except Exception as err:
            self._fail_running(err)

    def _admit(self, admit: list[_Waiting]) -> None:
        try:
            keys = self.backend.admit([e.request for e in admit])
            if len(keys) != len(admit):
                raise RuntimeError(f"{self.backend.name} answered {len(admit)} requests with {len(keys)} keys")
        except Exception as err:
            keys = [err] * len(admit)
        for entry, key in zip(admit, keys):
            if isinstance(key, Exception):
                self._release(entry)
                _deliver(entry, error=key)
            else:
                self._running[key] = entry

    def _step(self) -> None:
        try:
            done = self.backend.step()
        except Exception as err:
            self._fail_running(err)
            return
        self.stats.batches += 1
        self.stats.rows += len(self._running)
        self.stats.peak_rows = max(self.stats.peak_rows, self._rows)
        for key, out in done.items():
            if key in self._running:  # (not a row that a failed drop left behind)
                _deliver(self._finish(key), result=out)

    def _fail_running(self, err: Exception) -> None:
        """Every running request gets `err` (the backend's error: every caller of the batch sees it); the backend
        drops their rows."""
        keys = list(self._running)
        try:
            self.backend.drop(keys)
        except Exception:
            logger.exception("%s: dropping the rows of a failed batch failed too", self.backend.name)
        for key in keys:
            _deliver(self._finish(key), error=err)

    def _take(self) -> list[_Waiting]:
        """The waiting requests that fit under the caps, in order (at least one if nothing runs)."""
        admit: list[_Waiting] = []
        tokens = sum(self._cost.values())
        while self._waiting:
            entry = self._waiting[0]
            try:
                need = self.backend.cost(entry.request)
            except Exception as err:  # a prompt the tokenizer rejects: this request fails alone
                self._waiting.pop(0)
                _deliver(entry, error=err)
                continue
            fits = self._rows + entry.request.n <= self.max_rows and tokens + need <= self.max_tokens
            if not fits and (self._running or admit):
                break
            admit.append(self._waiting.pop(0))
            self._rows += entry.request.n
            tokens += need
            self._cost[id(entry)] = need
        return admit

    def _release(self, entry: _Waiting) -> None:
        self._rows -= entry.request.n
        self._cost.pop(id(entry), None)

    def _finish(self, key: int) -> _Waiting:
        entry = self._running.pop(key)
        self._release(entry)
        return entry


def _deliver(entry: _Waiting, result: list[Completion] | None = None, error: BaseException | None = None) -> None:
    resolve(entry.loop, entry.future, result, error)


class StaticEngine(OnBackend):
    """The whole-batch engine: gather every waiting request, run them as one batch to the end, repeat."""

    def __init__(self, backend: Backend, max_rows: int = 512) -> None:
        super().__init__(backend)
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
