"""The thread that runs the models (`COMPUTE`), and `Batcher`: calls from many concurrent searches batched into
one synchronous function call on that thread.

`Batcher` is the verifier engine: while one batch is scored, the calls that arrive wait together and go next as one
batch (up to `max_items` items), so the PRM calls of every running search share forward passes and the event loop
never waits on the model. A call's items stay together and come back in order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)
STOP_SECONDS = 60.0  # how long interpreter exit waits for the job in progress (one decoding step, one batch)


@functools.cache
def _omp_pause() -> Callable[[int], int] | None:
    """libgomp's `omp_pause_resource_all`, from the copy torch loaded (None where there is none)."""
    try:
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "libgomp" in line)
        return ctypes.CDLL(path).omp_pause_resource_all
    except (OSError, StopIteration, AttributeError):
        return None


class Compute:
    """The one thread that runs the models: jobs take turns, each returning True to be run again later.

    The language-model engine runs one decoding step per turn and the verifier engine one batch, so a search's PRM
    calls are scored between decoding steps, on the same thread. One thread, because a second OpenMP thread pool
    makes libgomp stop spinning between parallel regions (it counts more threads than CPUs), and torch's many small
    parallel ops then wait on futexes: on 2 cores a model thread ran a third slower while another pool lived
    (a loop of 2-thread matmuls: 0.64 s on the main thread, 0.95 s on a worker thread while the main thread's pool
    lived, 0.69 s once it was freed), and the PRM took twice as long beside the engine's thread. The thread starts
    on demand, after freeing the calling thread's pool (`omp_pause_resource_all`, OpenMP 5.0), and ends when idle.
    A job settles its own callers' errors; one that raises anyway is logged with its traceback and dropped, and the
    thread goes on with the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: list[Callable[[], bool]] = []
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], bool]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._thread is None:
                pause = _omp_pause()
                if pause is not None:
                    pause(2)  # omp_pause_hard: free this thread's OpenMP pool
                self._thread = threading.Thread(target=self._run, name="ponder-compute", daemon=True)
                self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to run out of jobs and end; at once when none runs or others' jobs are queued."""
        with self._lock:
            thread = None if self._jobs else self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                if self._thread is not me:  # stopped
                    return
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs.pop(0)
            try:
                again = job()
            except BaseException:  # a job settles its own callers' errors; one that raises is a bug: say so, go on
                logger.exception("a job on the compute thread raised; it is dropped and the thread goes on")
                again = False
            if again:
                with self._lock:
                    if self._thread is me:  # not stopped meanwhile
                        self._jobs.append(job)

    def stop(self) -> None:
        """At interpreter exit (registered with `atexit`): drop the queued jobs and wait for the one in progress. A
        thread still inside torch's or llama.cpp's native code at exit is killed mid-call and the process aborts
        ("terminate called without an active exception", exit code 134). The owners of the dropped jobs are not
        told: this is for exit only (`join` waits for the jobs to finish)."""
        with self._lock:
            self._jobs.clear()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_SECONDS)
            if thread.is_alive():
                logger.warning("the compute thread is still in a job after %g s at exit", STOP_SECONDS)


COMPUTE = Compute()
atexit.register(COMPUTE.stop)


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
        self._lock = threading.Lock()
        self._queue: list[_Call[T, R]] = []
        self._scheduled = False

    @property
    def scheduled(self) -> bool:
        """Whether calls are waiting or being scored."""
        return self._scheduled

    async def run(self, items: list[T]) -> list[R]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        call: _Call[T, R] = _Call(items, loop.create_future(), loop)
        with self._lock:
            self._queue.append(call)
            if not self._scheduled:
                self._scheduled = True
                COMPUTE.submit(self._turn)
        return await call.future

    def _turn(self) -> bool:
        """One batch of the calls waiting; True while more wait."""
        with self._lock:
            batch: list[_Call[T, R]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_items):
                call = self._queue.pop(0)
                if not call.future.cancelled():
                    batch.append(call)
                    size += len(call.items)
        if batch:
            try:
                results = self.fn([item for call in batch for item in call.items])
            except Exception as err:  # every caller of the batch sees the error
                for call in batch:
                    resolve(call.loop, call.future, error=err)
            else:
                self.batches += 1
                self.items += size
                start = 0
                for call in batch:
                    resolve(call.loop, call.future, results[start : start + len(call.items)])
                    start += len(call.items)
        with self._lock:
            self._scheduled = bool(self._queue)
            return self._scheduled


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
