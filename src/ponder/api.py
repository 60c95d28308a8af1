"""The short Python API: one synchronous call solves a problem or evaluates methods, with the task's defaults.

    import ponder
    trace = ponder.solve("4 5 6 10")          # game24: Tree of Thoughts, the shipped policy, judged by the shipped PRM
    print(trace.answer, trace.correct)

    rows = ponder.evaluate(task="arith", methods=["cot"], limit=5, out="runs/arith-cot")

Models and learned verifiers named by a string are loaded once per process and kept (`clear_cache` frees them):
a second `solve` with the same model starts at once. Objects passed in (a `Task`, a `LanguageModel`, a
`Verifier`) are used as they are.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.evaluate import EvalConfig, run_eval
from ponder.jobs import Pool
from ponder.lm.base import LanguageModel
from ponder.lm.load import clear_models, shared_model
from ponder.search import (
    NEEDS_VERIFIER,
    SearchConfig,
    check_search,
    get_method,
    pick_policy,
    search,
)
from ponder.tasks import Task, get_task
from ponder.trace import Trace
from ponder.verifiers import Verifier, clear_verifiers, shared_verifier

# `solve`'s search defaults, those of `ponder solve`: on game24 Tree of Thoughts over 32 distinct proposals a state
# solves 93% of the test split (docs/BENCHMARKS.md); a low min-p keeps proposals that are unlikely but right
BUDGET = 32
MIN_P = 0.001


def clear_cache() -> None:
    """Forget the models and verifiers kept by `shared_model` and `shared_verifier`, closing the engines among
    them."""
    clear_verifiers()
    clear_models()


def solve(question: str, task: str | Task = "game24", *, model: str | LanguageModel | None = None,
          method: str | None = None, budget: int = BUDGET, verifier: str | Verifier | None = None,
          aggregate: str = "min", temperature: float = 0.8, min_p: float = MIN_P, max_tokens: int | None = None,
          seed: int = 0, style: str | None = None, backend: str = "auto", device: str = "cpu",
          **options: Any) -> Trace:
    """Solve one problem and return its `Trace`: the chosen `answer` and `solution`, the searched tree, the compute
    it took (`usage`) and `correct`, the task's grade of the answer (None where the problem has no reference).

    `question`: what `ponder solve` reads (a game24 puzzle `"4 5 6 10"`, an arith or gsm8k test-problem index,
    or a question of your own). `task`: a registered name (`game24`, `arith`, `gsm8k`, `math500`) or a `Task`.
    `model`, `method`, `verifier` default to the task's (`Task.default_model`, `default_method`,
    `default_verifier`; a method that needs its own policy on the task gets it); a verifier is used only by the
    methods that need one. `budget`: the method's `n` (samples, proposals per state, rollouts). `options`: the
    method's knobs (`width=4`; `ponder methods` lists them), checked before any model loads."""
    t = get_task(task, **({"style": style} if style else {})) if isinstance(task, str) else task
    problem = t.from_text(question)
    method = method or t.default_method
    run = get_method(method)
    knobs = check_search(t, method, options, budget, aggregate)
    lm = model if isinstance(model, LanguageModel) else shared_model(
        pick_policy(t.name, [method], model or "", t.default_model), backend, device)
    t.template = lm.chat_prompt
    judge: Verifier | None = None
    if method in NEEDS_VERIFIER:
        judge = verifier if isinstance(verifier, Verifier) else shared_verifier(verifier or t.default_verifier, lm,
                                                                                device)
    cfg = SearchConfig(n=budget, temperature=temperature, min_p=min_p, max_tokens=max_tokens or t.max_tokens,
                       aggregate=aggregate, seed=seed, knobs=knobs)
    trace = asyncio.run(search(t, problem, lm, judge, run, cfg))
    trace.correct = t.grade(problem, trace.answer) if t.gradable(problem) else None
    return trace


def evaluate(out: str | Path | None = None, *, model: LanguageModel | None = None, show_progress: bool = False,
             pool: Pool | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Evaluate methods x budgets on a task's problems (`ponder eval`) and return the summary rows: per method and
    budget, the problems, `accuracy`, `pass` (some solution right) and the compute per problem (`Usage`'s fields).

    `settings` are `EvalConfig`'s fields (`task`, `split`, `limit`, `methods`, `budgets`, `model` as a name,
    `verifier`, `seed`, ...). Rows are written to `out` (default `runs/eval-TASK-SPLIT-seedSEED`, as `ponder eval`):
    the same call resumes there. `model`: a loaded model to use instead of loading the one `settings` name. `pool`:
    where the problems run (`ponder.distributed.RayPool("auto")`: a Ray cluster's workers, each loading the models
    `settings` name)."""
    known = {f.name for f in fields(EvalConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"evaluate() got unknown settings {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    cfg = EvalConfig(**settings)
    if out is None:
        out = cfg.default_out
    if model is None and pool is None:
        model = shared_model(cfg.resolved().model, cfg.backend, cfg.device, cfg.max_batch, cfg.template_from)
    return run_eval(cfg, Path(out), lm=model, show_progress=show_progress, pool=pool)
