"""The batching engine: many concurrent searches share one model.

Every search is an async function. When it awaits `generate`, its requests join a queue; once every
runnable search has reached its next model call, the engine sends the whole queue to the backend as one
batch (up to `max_batch` rows). With 64 problems x 8 samples in flight that is one 512-row forward pass per
token instead of 512 separate ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ponder.lm.base import Backend, Completion, LanguageModel, Request


@dataclass
class EngineStats:
    batches: int = 0
    rows: int = 0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Engine(LanguageModel):
    def __init__(self, backend: Backend, max_batch: int = 512) -> None:
        self.backend = backend
        self.name = backend.name
        self.max_batch = max_batch
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
            cut, rows = 0, 0  # requests up to max_batch rows (a request of n completions counts n)
            while cut < len(self._pending) and (cut == 0 or rows + self._pending[cut][0].n <= self.max_batch):
                rows += self._pending[cut][0].n
                cut += 1
            batch, self._pending = self._pending[:cut], self._pending[cut:]
            live = [(r, f) for r, f in batch if not f.done()]  # a cancelled search leaves done futures
            if not live:
                continue
            # The backend runs in this thread on purpose: every search is waiting for it anyway, and a
            # batch cut at a fixed point of the event loop makes runs reproducible.
            try:
                outs = self.backend.generate_many([r for r, _ in live])
            except Exception as err:  # the callers see the backend's error, not a hang
                for _, f in live:
                    f.set_exception(err)
                continue
            self.stats.batches += 1
            self.stats.rows += sum(r.n for r, _ in live)
            for (_, f), out in zip(live, outs):
                f.set_result(out)
