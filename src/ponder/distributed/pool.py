"""`RayPool`: a run's per-problem jobs on a Ray cluster, each worker a Ray actor with its own engine.

Each actor runs the work's setup once (loads the policy and the verifier), then many jobs at once in its event loop
so that its engine batches them, as one process does. The driver keeps up to `concurrency` jobs in flight on each
actor, hands a new one to whichever actor answers, and passes each result back (`ponder.jobs`) as it arrives: the
driver writes every row, so the run's JSONL and its resumption are the local run's. A job's result does not depend
on the actor that ran it (requests are seeded per problem), so the rows equal a local run's.

A job that raises comes back as its own exception. An actor that dies (killed, out of memory) turns the jobs it was
running into `WorkerLost` errors (error rows, retried on resuming) and the rest go to the actors left; with none
left, every job still waiting is one. The pool never waits on a worker that is gone.

`address`: `local` starts a Ray instance in this process (its workers import the driver's Ponder: they inherit
its working directory and environment) and stops it after the run; `auto` joins the cluster this machine is part of
(`ray start --head`); `HOST:PORT` or `ray://HOST:PORT` joins that one, whose workers must have the same Ponder
installed. A process that has already called `ray.init` keeps its connection, whatever the address.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ponder.errors import ConfigError, MissingExtra, PonderError
from ponder.jobs import Done, Work, WorkerLost

logger = logging.getLogger(__name__)

CONNECT_SECONDS = 5.0  # a cluster's address that takes longer to accept a connection is refused as unreachable
START_SECONDS = 600.0  # what a worker's setup (loading its models) may take; a cluster without room never starts it


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise MissingExtra("--ray", "ray", "ray") from err
    return ray


class RayPool:
    """Workers on a Ray cluster (`address`: local, auto, HOST:PORT or ray://HOST:PORT). `workers`: how many (0: one
    per CPU of the cluster, or one per GPU for `device='cuda'`); each reserves one CPU, or one GPU."""

    def __init__(self, address: str = "local", workers: int = 0, device: str = "cpu") -> None:
        self.ray = _ray()
        if workers < 0:
            raise ConfigError(f"Ray workers: a count, or 0 for one per CPU (GPU) of the cluster; got {workers}")
        if address not in ("local", "auto"):
            _reachable(address)
        self.address = address
        self.workers = workers
        self.resource = "GPU" if device.startswith("cuda") else "CPU"

    @contextmanager
    def open(self, work: Work) -> Iterator[_RayWorkers]:
        ray = self.ray
        joined = not ray.is_initialized()
        if joined:
            self._connect()
        actors: list[Any] = []
        try:
            count = self._count()
            one = {"num_gpus": 1} if self.resource == "GPU" else {"num_cpus": 1}
            actors = [ray.remote(_Actor).options(**one).remote(work) for _ in range(count)]
            starting = [a.start.remote() for a in actors]
            ready, _ = ray.wait(starting, num_returns=len(starting), timeout=START_SECONDS)
            if len(ready) < len(starting):
                raise PonderError(f"{len(starting) - len(ready)} of {count} Ray workers did not start within "
                                  f"{START_SECONDS:.0f} s: the cluster may lack the room (`ray status`)")
            for ref in starting:
                try:
                    _get(ray, ref)  # a setup's error (a model that does not load) is raised here, as in one process
                except ray.exceptions.RayActorError as err:
                    raise WorkerLost(f"a Ray worker died while loading its models: {str(err).splitlines()[0]}") from err
            logger.info("%d Ray workers started", count)
            yield _RayWorkers(ray, actors)
        finally:
            for actor in actors:
                ray.kill(actor)
            if joined:
                ray.shutdown()

    def _connect(self) -> None:
        ray = self.ray
        try:
            if self.address == "local":
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"cannot join the Ray cluster at {self.address!r}: {first}") from err

    def _count(self) -> int:
        total = int(self.ray.cluster_resources().get(self.resource, 0))
        if total < 1:
            raise ConfigError(f"the Ray cluster has no {self.resource} for a worker")
        if self.workers > total:
            raise ConfigError(f"{self.workers} Ray workers asked for, but the cluster has {total} {self.resource}s "
                              f"(each worker takes one)")
        return self.workers or total


def _reachable(address: str) -> None:
    """Refuse an address that does not accept a connection, at once (Ray itself retries it for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray takes local, auto, HOST:PORT or ray://HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {err.strerror or err}; start one with "
                          f"`ray start --head`, or use --ray local") from err


def _get(ray: Any, ref: Any) -> Any:
    """The value of `ref`; a job's own exception raised as it was raised on the worker."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause
        raise cause if isinstance(cause, Exception) else PonderError(str(err).splitlines()[0]) from err


class _Actor:
    """One Ray worker: its setup's state, and jobs run concurrently in the actor's event loop."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.state: Any = None

    async def start(self) -> None:
        self.state = self.work.setup()

    async def run(self, job: Any) -> Any:
        return await self.work.run(self.state, job)


@dataclass
class _RayWorkers:
    ray: Any
    actors: list[Any]

    def map(self, jobs: Sequence[Any], concurrency: int, done: Done) -> None:
        ray = self.ray
        waiting = deque(jobs)
        running: dict[Any, tuple[Any, Any]] = {}  # ref -> (job, actor)
        load = {actor: 0 for actor in self.actors}
        lost: str | None = None

        def feed(actor: Any) -> None:
            while waiting and load[actor] < concurrency:
                job = waiting.popleft()
                running[actor.run.remote(job)] = (job, actor)
                load[actor] += 1

        for actor in self.actors:
            feed(actor)
        started = time.perf_counter()
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            job, actor = running.pop(ref)
            try:
                result = _get(ray, ref)
            except ray.exceptions.RayActorError as err:
                lost = str(err).splitlines()[0]
                result = WorkerLost(f"the Ray worker running it died: {lost}")
                if actor in load:
                    del load[actor]
                    logger.warning("a Ray worker died (%s); %d left", lost, len(load))
            except Exception as err:
                result = err
            done(job, result)
            if actor in load:
                load[actor] -= 1
                feed(actor)
            elif not load:  # no worker left: what still waits cannot run
                while waiting:
                    done(waiting.popleft(), WorkerLost(f"every Ray worker died (the last: {lost})"))
        logger.info("%d jobs on %d Ray workers in %.1f s", len(jobs), len(self.actors), time.perf_counter() - started)
