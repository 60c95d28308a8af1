"""`ponder bench proposals`: proposal recall@K of several policies and samplers side by side
(`ponder.evaluate.proposals` measures it)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ponder.errors import ConfigError
from ponder.evaluate.proposals import SAMPLERS, ProposalConfig, measure, summarize
from ponder.tasks.base import Task


def proposals_benchmark(models: list[str], task: Task, problems: int, cfg: ProposalConfig,
                        samplers: tuple[str, ...] = ("independent",), max_batch: int = 512) -> dict[str, Any]:
    """Every model under every sampler on the same states' seeds (the solver states are the same for all), side
    by side; a result per model and sampler."""
    from ponder.lm.engine import Engine
    from ponder.lm.hf import HFBackend

    unknown = set(samplers) - set(SAMPLERS)
    if unknown or not samplers:
        raise ConfigError(f"unknown sampler(s) {', '.join(sorted(unknown)) or '(none)'}; known: {', '.join(SAMPLERS)}")
    chosen = task.problems("test", limit=problems)
    result: dict[str, Any] = {"task": task.name, "problems": len(chosen), "config": cfg.__dict__, "models": {}}
    for name in models:
        lm = Engine(HFBackend(name), max_rows=max_batch)
        for sampler in samplers:
            run = replace(cfg, distinct=sampler == "distinct")
            records, usage = asyncio.run(measure(task, chosen, lm, run))
            result["models"][f"{name} ({sampler})"] = {"rows": summarize(records, run, usage),
                                                        "seconds": round(usage.seconds, 1)}
    return result
