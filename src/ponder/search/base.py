"""What every search method shares: its config, its signature and the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ponder.lm.base import Completion, LanguageModel, Request, SamplingParams
from ponder.search.select import Finished
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class SearchConfig:
    n: int = 1  # the budget: samples, beams or rollouts, by method
    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 256  # what a whole solution may take, the steps a search has already written included
    max_step_tokens: int | None = None  # what one step may take (within what is left of max_tokens)
    aggregate: str = "last"  # how step scores become a solution score
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # method-specific knobs, named as in the papers


class SearchMethod(Protocol):
    def __call__(self, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig) -> Awaitable[Trace]: ...


METHODS: dict[str, SearchMethod] = {}
NEEDS_VERIFIER: set[str] = set()


def register(name: str, needs_verifier: bool = False) -> Callable[[SearchMethod], SearchMethod]:
    def wrap(fn: SearchMethod) -> SearchMethod:
        METHODS[name] = fn
        if needs_verifier:
            NEEDS_VERIFIER.add(name)
        return fn

    return wrap


def request_seed(cfg: SearchConfig, problem: Problem, *parts: object) -> int:
    """A stable per-request seed from the run seed, the problem and the call's place in the search."""
    text = "|".join(str(x) for x in (cfg.seed, problem.id, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def _params(cfg: SearchConfig, temperature: float, seed: int, max_tokens: int,
            stop: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(temperature=temperature, top_p=cfg.top_p, min_p=cfg.min_p, max_tokens=max_tokens,
                          stop=stop, seed=seed)


async def room(task: Task, lm: LanguageModel, cfg: SearchConfig, prefix: list[str]) -> int:
    """The tokens a continuation of `prefix` may take. `cfg.max_tokens` is what a whole solution may take, so the
    steps already written count against it: a step-level search's solutions stay within the budget of a sampled
    one (without this, a model whose steps never end writes `max_steps` steps of `max_tokens` each, past its
    context). Where the model cannot count tokens (a server without a tokenize endpoint), each call may take the
    whole `max_tokens`."""
    used = await lm.count_tokens(task.join_steps(prefix)) if prefix else 0
    return cfg.max_tokens - (used or 0)


async def step_room(task: Task, lm: LanguageModel, cfg: SearchConfig, prefix: list[str]) -> int:
    """The tokens the next step after `prefix` may take: what is left of the solution's budget (`room`), at most
    `cfg.max_step_tokens`."""
    left = await room(task, lm, cfg, prefix)
    return left if cfg.max_step_tokens is None else min(left, cfg.max_step_tokens)


async def sample_solutions(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, n: int,
                           temperature: float, tag: str | tuple[object, ...],
                           prefix: list[str] | None = None, hint: str | None = None,
                           attempts: list[list[str]] | None = None) -> list[list[str]]:
    """n completions from the policy, each split into steps: whole solutions, or continuations of `prefix`
    (the prefix's steps are not repeated in the result); `hint` gives the answer away in the prompt (STaR);
    `attempts` shows earlier attempts to a policy that revises them (`Task.revision_prompt`).

    Methods that share a `tag` draw the same samples for the same seed (common random numbers), so
    self-consistency and best-of-n at equal n are compared on identical solutions. A tuple tag names the
    request's place in a larger search (a rollout's solution and step)."""
    if hint:
        prompt = task.hinted_prompt(problem, hint)
    else:
        prompt = task.revision_prompt(problem, attempts) if attempts else task.prompt(problem)
    prompt += task.join_steps(prefix or [])
    limit = await room(task, lm, cfg, prefix or [])
    if limit < 1:  # the prefix has spent the solution's budget: it ends there
        return [[] for _ in range(n)]
    parts = tag if isinstance(tag, tuple) else (tag,)
    requests = [Request(prompt, _params(cfg, temperature, request_seed(cfg, problem, *parts, i), limit))
                for i in range(n)]
    return [task.split_steps(c.text) for c in await lm.generate(requests)]


async def propose_steps(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, prefix: list[str],
                        n: int, temperature: float, tag: str | tuple[object, ...],
                        distinct: bool = False, cue: str = "") -> list[Completion]:
    """n proposals for the next step after `prefix`, as completions (their text, tokens and log-probability): one
    step per request, generation stopped at the end of the step (`task.step_end`) or at `step_room` tokens.

    `distinct`: n different steps drawn without replacement (one request with n completions, in the order they
    were drawn; fewer when the model has fewer to give), instead of n independent samples, which repeat the
    steps the model is sure of and leave out the rest. `cue` opens the step for the policy (rStar's actions:
    `Q:` asks for a sub-question); the completions are what follows it."""
    prompt = task.prompt(problem) + task.join_steps(prefix) + cue
    limit = await step_room(task, lm, cfg, prefix)
    if limit < 1:  # the solution has spent its budget (`room`): the one proposal is to end it here
        return [Completion("", 0, 0, "length")]
    parts = tag if isinstance(tag, tuple) else (tag,)
    params = [_params(cfg, temperature, request_seed(cfg, problem, *parts, prompt, i), limit, stop=(task.step_end,))
              for i in range(1 if distinct else n)]
    if distinct:
        [drawn] = await lm.generate_many([Request(prompt, params[0], n=n)])
        return drawn
    return await lm.generate([Request(prompt, p) for p in params])


async def sample_steps(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig, prefix: list[str], n: int,
                       temperature: float, tag: str | tuple[object, ...], distinct: bool = False) -> list[str]:
    """The texts of `propose_steps`; an empty string is a proposal to stop (the model ended the solution)."""
    return [c.text.strip() for c in await propose_steps(task, problem, lm, cfg, prefix, n, temperature, tag, distinct)]


def record_solutions(trace: Trace, task: Task, problem: Problem, solutions: list[list[str]],
                     scores: list[float] | None = None) -> list[Finished]:
    """Add each solution to the trace as a path; returns them as finished solutions, for `select`."""
    out = []
    for i, steps in enumerate(solutions):
        answer = task.extract_answer(problem, steps)
        score = None if scores is None else scores[i]
        leaf = trace.add_path(steps, terminal=True, score=score,
                              extra={"answer": answer, "key": task.answer_key(problem, answer)})
        out.append(Finished(steps, leaf.id, score))
    return out
