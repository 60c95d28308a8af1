"""What every search method shares: its config, its knobs' config, its signature and the registry."""

from __future__ import annotations

import functools
import hashlib
import logging
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar

from ponder.errors import ConfigError
from ponder.lm.base import Completion, LanguageModel, Request, SamplingParams
from ponder.search.select import Finished
from ponder.tasks import Hintable, Revisable, require
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier

logger = logging.getLogger(__name__)
_UNCOUNTED: set[str] = set()  # the models already warned about: they cannot count tokens


def knob(default: Any, doc: str, *, low: float | None = None, high: float | None = None,
         choices: tuple[str, ...] = ()) -> Any:
    """A method's knob: a dataclass field with its default, a one-line description (naming the paper's symbol) and
    its valid values: `low` <= value <= `high`, or one of `choices`."""
    return field(default=default, metadata={"doc": doc, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class Knob:
    """One knob as `ponder methods` lists it."""

    name: str
    type: str
    default: str  # as the command line writes it
    allowed: str
    doc: str


@dataclass(frozen=True)
class MethodConfig:
    """A method's knobs: each method subclasses this as a frozen dataclass whose fields are `knob`s. Types and
    ranges are checked when it is made; `check` adds what depends on the budget `n` or on several knobs."""

    method: ClassVar[str] = ""  # set by `register`
    budget: ClassVar[str] = ""  # what the budget `n` counts for the method

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _kind(type(self), f)
            if not fits(value, kind):
                self.fail(f"{f.name}={value!r} is not {describe(kind)}")
            low, high, choices = f.metadata["low"], f.metadata["high"], f.metadata["choices"]
            if value is not None and ((low is not None and value < low) or (high is not None and value > high)
                                      or (choices and value not in choices)):
                self.fail(f"{f.name}={value!r} is out of range: {_allowed(f)}")

    def check(self, n: int) -> None:
        """Raise a `ConfigError` if the knobs do not fit the budget `n` or each other."""
        if n < 1:
            self.fail(f"the budget n must be at least 1, got {n}")

    @classmethod
    def fail(cls, message: str) -> typing.NoReturn:
        names = ", ".join(f.name for f in fields(cls)) or "none"
        raise ConfigError(f"{cls.method}: {message}; {cls.method}'s knobs: {names} (`ponder methods` lists them)")

    @classmethod
    def parse(cls: type[C], values: Mapping[str, object], n: int | None = None) -> C:
        """The config with `values` set (text from the command line is read as the knob's type), checked against
        the budget `n` when it is given."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            cls.fail(f"unknown knob {unknown[0]!r}")
        cfg = cls(**{k: _read(v, _kind(cls, known[k])) for k, v in values.items()})
        if n is not None:
            cfg.check(n)
        return cfg

    @classmethod
    def knobs(cls) -> list[Knob]:
        return [Knob(f.name, describe(_kind(cls, f)), _written(f.default), _allowed(f), f.metadata["doc"])
                for f in fields(cls)]


C = TypeVar("C", bound=MethodConfig)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field types, resolved from their annotations."""
    return typing.get_type_hints(cls)


def _kind(cls: type, f: Field[Any]) -> Any:
    return field_types(cls)[f.name]


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `T` or `T | None`."""
    if isinstance(kind, types.UnionType):
        [inner] = [a for a in typing.get_args(kind) if a is not type(None)]
        return inner, True
    return kind, False


def describe(kind: Any) -> str:
    """A type as an error message or a listing names it: `int`, `int or none`, `a list of str`, `a mapping`."""
    inner, optional = _optional(kind)
    origin = typing.get_origin(inner)
    if origin is list:
        name = f"a list of {describe(typing.get_args(inner)[0])}"
    else:
        name = "a mapping" if origin is dict else inner.__name__
    return f"{name}{' or none' if optional else ''}"


def fits(value: object, kind: Any) -> bool:
    """Whether `value` is of type `kind`: a scalar (an int is a float, a bool is not a number), `T | None`, or a
    list or dict of such."""
    inner, optional = _optional(kind)
    if value is None:
        return optional
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if inner is Any:
        return True
    if inner is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if inner is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, inner)


def _read(value: object, kind: Any) -> object:
    """A knob's value as its type: text from the command line converted, anything else as given (then checked)."""
    if not isinstance(value, str):
        return float(value) if _optional(kind)[0] is float and fits(value, kind) else value
    inner, optional = _optional(kind)
    text = value.strip()
    if optional and text.lower() == "none":
        return None
    if inner is bool:
        return {"true": True, "false": False}.get(text.lower(), value)
    if inner in (int, float):
        try:
            return inner(text)
        except ValueError:
            return value
    return value


def _written(value: object) -> str:
    """A value as `--set` writes it."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _allowed(f: Field[Any]) -> str:
    low, high, choices = f.metadata["low"], f.metadata["high"], f.metadata["choices"]
    if choices:
        return "one of " + ", ".join(choices)
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return "true or false" if isinstance(f.default, bool) else "any"


@dataclass(frozen=True)
class SearchConfig:
    n: int = 1  # the budget: samples, beams or rollouts, by method (each method's config says which)
    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 256  # what a whole solution may take, the steps a search has already written included
    max_step_tokens: int | None = None  # what one step may take (within what is left of max_tokens)
    aggregate: str = "last"  # how step scores become a solution score
    seed: int = 0
    knobs: MethodConfig | None = None  # the method's own knobs (its `MethodConfig`); None: its defaults


class SearchMethod(Protocol):
    def __call__(self, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig) -> Awaitable[Trace]: ...


METHODS: dict[str, SearchMethod] = {}
NEEDS_VERIFIER: set[str] = set()
CONFIGS: dict[str, type[MethodConfig]] = {}  # each method's knobs
POLICIES: dict[str, dict[str, str]] = {}  # per method, per task: the policy it needs there (one trained for it)
REQUIRES: dict[str, tuple[type[Task], ...]] = {}  # per method, the task capabilities it asks for


def register(name: str, config: type[MethodConfig], needs_verifier: bool = False,
             policies: Mapping[str, str] | None = None,
             requires: tuple[type[Task], ...] = ()) -> Callable[[SearchMethod], SearchMethod]:
    """Register a search method under `name` with its knobs' config; `policies`: task -> the shipped policy the
    method needs on that task (one trained for its prompts); `requires`: the task capabilities it asks for (a run
    on a task without one fails before any model loads)."""
    def wrap(fn: SearchMethod) -> SearchMethod:
        METHODS[name] = fn
        CONFIGS[name] = config
        config.method = name
        if needs_verifier:
            NEEDS_VERIFIER.add(name)
        if policies:
            POLICIES[name] = dict(policies)
        REQUIRES[name] = requires
        return fn

    return wrap


def method_knobs(cfg: SearchConfig, kind: type[C]) -> C:
    """The search's knobs as the method's config (its defaults when none were given), checked against the budget."""
    knobs = kind() if cfg.knobs is None else cfg.knobs
    if not isinstance(knobs, kind):
        raise ConfigError(f"{kind.method} takes {kind.__name__}, not {type(knobs).__name__}")
    knobs.check(cfg.n)
    return knobs


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
    context). Where the model cannot count tokens (no tokenizer; a server without a tokenize endpoint), each call
    may take the whole `max_tokens`: that is said once per model (a warning), and the problem's usage counts each
    such call (`uncounted_budgets`, by the metered model)."""
    if not prefix:
        return cfg.max_tokens
    used = await lm.count_tokens(task.join_steps(prefix))
    if used is None:
        if lm.name not in _UNCOUNTED:
            _UNCOUNTED.add(lm.name)
            logger.warning("%s cannot count tokens (no tokenizer, or a server without a tokenize endpoint): a "
                           "step-level search's budget of %d tokens a solution is not held, each step may take all "
                           "of it; the rows say how often (uncounted_budgets)", lm.name, cfg.max_tokens)
        return cfg.max_tokens
    return cfg.max_tokens - used


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
    `attempts` shows earlier attempts to a policy that revises them (`Revisable.revision_prompt`).

    Methods that share a `tag` draw the same samples for the same seed (common random numbers), so
    self-consistency and best-of-n at equal n are compared on identical solutions. A tuple tag names the
    request's place in a larger search (a rollout's solution and step)."""
    if hint:
        prompt = require(task, Hintable, "STaR's rationalization").hinted_prompt(problem, hint)
    elif attempts:
        prompt = require(task, Revisable, "the revisions method").revision_prompt(problem, attempts)
    else:
        prompt = task.prompt(problem)
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
