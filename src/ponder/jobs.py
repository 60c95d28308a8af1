"""Where a run's per-problem jobs run: in this process (`LocalPool`, the default) or on workers elsewhere
(`ponder.distributed.RayPool`), behind one small interface, so that the runners (`ponder eval`, `ponder collect`,
the improvement loop) do not depend on where.

A runner describes its work as a `Work`: `setup` builds what one worker holds (its engine: the policy and the
verifier, loaded once per worker) and `run` does one job with it. A pool opens its workers (`Pool.open`: every
worker's setup has run, or its error is raised), then runs the jobs (`Workers.map`) and hands each result back to
the driver, in the driver's process, the moment its job finishes, so that the driver alone writes the run's
resumable JSONL (`ponder.jsonl`) and a killed run resumes the same way wherever its jobs ran. A job that raises
comes back as its exception, a job whose worker died as a `WorkerLost`; the driver writes either as an error row.

A job's result must not depend on which worker runs it or when: searches seed every request from the run's seed,
the problem and the request's place in the search (`ponder.search.base.request_seed`). Work sent to another process
is pickled: `setup` and `run` are module-level functions or instances of module-level classes.

    pool = pool or LocalPool()
    with pool.open(Work(setup, run)) as workers:
        workers.map(todo, concurrency, done)       # done(job, result or exception), called as each job finishes
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ponder.errors import PonderError

Done = Callable[[Any, Any], None]  # (job, its result or the exception it raised), called in the driver


class WorkerLost(PonderError):
    """The worker running a job died (killed, out of memory) before it answered; a resumed run retries the job."""


@dataclass(frozen=True)
class Work:
    """What every worker does: `setup()` once (load its models), then `await run(state, job)` per job, with
    `state` what its setup returned; many jobs run at once on one worker, so that its engine batches them."""

    setup: Callable[[], Any]
    run: Callable[[Any, Any], Awaitable[Any]]


class Workers(Protocol):
    def map(self, jobs: Sequence[Any], concurrency: int, done: Done) -> None:
        """Run every job, up to `concurrency` at once on each worker; `done` gets each result as it comes."""


class Pool(Protocol):
    def open(self, work: Work) -> AbstractContextManager[Workers]:
        """Start the workers and run `work.setup` on each; raises what a setup raised."""


class LocalPool:
    """One worker: this process, its jobs concurrent in one event loop around one engine."""

    @contextmanager
    def open(self, work: Work) -> Iterator[Workers]:
        yield _Local(work, work.setup())


@dataclass
class _Local:
    work: Work
    state: Any

    def map(self, jobs: Sequence[Any], concurrency: int, done: Done) -> None:
        async def main() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(job: Any) -> None:
                async with gate:
                    try:
                        result = await self.work.run(self.state, job)
                    except Exception as err:  # this job fails alone: the others go on
                        result = err
                done(job, result)

            await asyncio.gather(*(one(job) for job in jobs))

        asyncio.run(main())
