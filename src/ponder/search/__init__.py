"""Search methods: one file each, one signature, one registry. Importing a method's module registers it."""

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel, Metered
from ponder.search import (  # noqa: F401  (registration)
    beam,
    best_of_n,
    compute_optimal,
    cot,
    dvts,
    mcts,
    revisions,
    rstar,
    self_consistency,
    tot,
)
from ponder.search.base import METHODS, NEEDS_VERIFIER, SearchConfig, SearchMethod
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace, Usage
from ponder.verifiers.base import MeteredVerifier, Verifier


def get_method(name: str) -> SearchMethod:
    if name not in METHODS:
        raise ConfigError(f"unknown search method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


async def search(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 method: SearchMethod, cfg: SearchConfig) -> Trace:
    """Run one search with its model and verifier calls metered into the trace's usage."""
    usage = Usage()
    judge = MeteredVerifier(verifier, usage) if verifier is not None else None
    trace = await method(task, problem, Metered(lm, usage), judge, cfg)
    trace.usage.add(usage)
    return trace


__all__ = ["METHODS", "NEEDS_VERIFIER", "SearchConfig", "SearchMethod", "get_method", "search"]
