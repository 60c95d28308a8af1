"""Search methods: one file each, one signature, one registry. Importing a method's module registers it with its
knobs' config (`MethodConfig`), whether it needs a verifier, and the policy it needs on a task, if any."""

import logging
from collections.abc import Mapping

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
from ponder.search.base import (
    CONFIGS,
    METHODS,
    NEEDS_VERIFIER,
    POLICIES,
    REQUIRES,
    MethodConfig,
    SearchConfig,
    SearchMethod,
)
from ponder.tasks import require
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace, Usage, ending_on_error
from ponder.verifiers import check_aggregation
from ponder.verifiers.base import MeteredVerifier, Verifier

log = logging.getLogger(__name__)


def get_method(name: str) -> SearchMethod:
    if name not in METHODS:
        raise ConfigError(f"unknown search method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_options(method: str, values: Mapping[str, object], n: int | None = None) -> MethodConfig:
    """`method`'s config with `values` set (knob -> value; text is read as the knob's type), checked against the
    budget `n` when given; a `ConfigError` names the method, the bad knob or value, and the method's knobs."""
    get_method(method)
    return CONFIGS[method].parse(values, n)


def typed_options(method: str, values: Mapping[str, object]) -> dict[str, object]:
    """The knobs `values` sets, checked, each as its knob's type (`"4"` -> 4): how a run's config saves them, so
    that the same knobs written differently are the same config."""
    knobs = parse_options(method, values)
    return {k: getattr(knobs, k) for k in values}


def check_capabilities(task: Task, methods: list[str]) -> None:
    """A `TaskError` naming what is missing when `task` lacks a capability one of `methods` asks for (rStar's
    actions, revision prompts): checked before any model loads."""
    for method in methods:
        for capability in REQUIRES.get(method, ()):
            require(task, capability, f"the {method} method")


def pick_policy(task: str, methods: list[str], model: str, default: str) -> str:
    """The model a run of `methods` on `task` uses: `model` when named, else the policy a method needs on this task
    (logged), else `default`. A `ConfigError` when the methods need different policies, or when `model` is another
    shipped model, not trained for a method that needs its own."""
    needed = {POLICIES[m][task]: m for m in methods if task in POLICIES.get(m, {})}
    if len(needed) > 1:
        raise ConfigError(f"on {task}, " + " and ".join(f"{m} needs {p}" for p, m in needed.items())
                          + ": run them separately")
    if not needed:
        return model or default
    [(policy, method)] = needed.items()
    if not model:
        log.info("%s on %s needs %s: using it (--model names another)", method, task, policy)
        return policy
    from ponder.lm.hf import ASSETS  # only here: it loads transformers, which a model about to load needs anyway

    if model != policy and (ASSETS / model).is_dir():
        raise ConfigError(f"{method} on {task} needs {policy}, a policy trained for it; {model} was not (leave "
                          f"--model out to use {policy})")
    return model


def check_search(task: Task, method: str, options: Mapping[str, object], n: int, aggregate: str) -> MethodConfig:
    """The knobs of one search of `method` on `task` (`parse_options`), with the aggregation and the task's
    capabilities checked too: everything a search can refuse, before any model loads."""
    knobs = parse_options(method, options, n)
    check_aggregation(aggregate)
    check_capabilities(task, [method])
    return knobs


async def search(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 method: SearchMethod, cfg: SearchConfig) -> Trace:
    """Run one search with its model and verifier calls metered into the trace's usage; the trace's observers
    (`ponder.trace.observing`) hear of it as it grows and once more when it ends."""
    usage = Usage()
    judge = MeteredVerifier(verifier, usage) if verifier is not None else None
    with ending_on_error():  # a search that raises leaves no tree drawn as running
        trace = await method(task, problem, Metered(lm, usage), judge, cfg)
    trace.usage.add(usage)
    trace.changed(final=True)
    return trace


__all__ = [
    "CONFIGS",
    "METHODS",
    "NEEDS_VERIFIER",
    "POLICIES",
    "REQUIRES",
    "MethodConfig",
    "SearchConfig",
    "SearchMethod",
    "check_capabilities",
    "check_search",
    "get_method",
    "parse_options",
    "pick_policy",
    "search",
    "typed_options",
]
