"""Calls from many concurrent searches batched into one synchronous function call, run in a worker thread.

The verifier engine: while the worker scores one batch, the calls that arrive wait together and go next as one
batch (up to `max_items` items), so the PRM calls of every running search share forward passes and the event loop
never waits on the model. A call's items stay together and come back in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@functools.cache
def _omp_pause() -> Callable[[int], int] | None:
    """libgomp's `omp_pause_resource_all`, from the copy torch loaded (None where there is none)."""
    try:
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "libgomp" in line)
        return ctypes.CDLL(path).omp_pause_resource_all
    except (OSError, StopIteration, AttributeError):
        return None


def start_worker(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a thread that will run the model, first freeing the calling thread's OpenMP pool.

    With two OpenMP thread pools alive, libgomp counts more threads than CPUs and stops spinning between parallel
    regions, so each of torch's many small parallel ops waits on a futex: on 2 cores a loop of 2-thread matmuls
    took 0.64 s on the main thread and 0.95 s on a worker thread while the main thread's pool lived, 0.69 s once
    it was freed (`omp_pause_resource_all`, OpenMP 5.0). The caller's pool comes back if it computes again."""
    pause = _omp_pause()
    if pause is not None:
        pause(2)  # omp_pause_hard
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


@dataclass(eq=False)
class _Call(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]
    loop: asyncio.AbstractEventLoop


class Batcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], list[R]], max_items: int = 256, name: str = "batcher") -> None:
        self.fn, self.max_items, self.name = fn, max_items, name
        self.batches = 0
        self.items = 0
        self._cond = threading.Lock()
        self._queue: list[_Call[T, R]] = []
        self._worker: threading.Thread | None = None

    async def run(self, items: list[T]) -> list[R]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        call: _Call[T, R] = _Call(items, loop.create_future(), loop)
        with self._cond:
            self._queue.append(call)
            if self._worker is None:
                self._worker = start_worker(self._serve, f"ponder-{self.name}")
        return await call.future

    def _serve(self) -> None:
        while True:
            with self._cond:
                batch: list[_Call[T, R]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_items):
                    call = self._queue.pop(0)
                    if not call.future.cancelled():
                        batch.append(call)
                        size += len(call.items)
                if not batch and not self._queue:
                    self._worker = None
                    return
            if not batch:
                continue
            try:
                results = self.fn([item for call in batch for item in call.items])
            except Exception as err:  # every caller of the batch sees the error
                for call in batch:
                    resolve(call.loop, call.future, error=err)
                continue
            self.batches += 1
            self.items += size
            start = 0
            for call in batch:
                resolve(call.loop, call.future, results[start : start + len(call.items)])
                start += len(call.items)


def resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[R], result: R | None = None,
            error: BaseException | None = None) -> None:
    """Settle a caller's future from a worker thread, on the caller's event loop (skipped if that has closed)."""

    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)
