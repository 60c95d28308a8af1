"""Compute-optimal routing (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters"): estimate how hard a question is from a cheap probe, then spend the budget the way that
worked best on training questions of that difficulty.

- Difficulty is the paper's *model-predicted difficulty*: the verifier's mean score over `probe_n` sampled
  solutions, placed in a bin by the table's thresholds (quantiles of the training questions' probe scores).
- The table maps each bin to a strategy (a method, its budget `n` and its knobs); `ponder bench routing` fits it
  on the training split only, for a generation budget, and writes it as JSON. The probe's tokens count in the usage,
  once: a best-of-n or self-consistency routed to takes the probe's samples as its first ones (`Remembered`).

Knob: `table`, the path of a fitted table (`RoutingTable`; `ComputeOptimalConfig`). A strategy's knobs are its
method's config, checked when the table is read.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ponder.errors import ConfigError
from ponder.lm.base import Completion, LanguageModel, Request, Wrapper
from ponder.search.base import (
    CONFIGS,
    METHODS,
    MethodConfig,
    SearchConfig,
    knob,
    method_knobs,
    register,
    sample_solutions,
)
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier

SHARE_THE_PROBE = ("best_of_n", "self_consistency")  # methods that sample whole solutions with the probe's tag


@dataclass(frozen=True)
class ComputeOptimalConfig(MethodConfig):
    """Compute-optimal routing's knobs."""

    budget: ClassVar[str] = "nothing: the routing table's strategies carry their own budgets"
    table: str = knob("", "path of a routing table fitted on the training split by `ponder bench routing` (required)")

    def check(self, n: int) -> None:
        super().check(n)
        if not self.table:
            self.fail("a routing table is required: --set compute_optimal.table=PATH (fitted by `ponder bench "
                      "routing`)")


@dataclass(frozen=True)
class Strategy:
    """A method, its budget `n` and its knobs (as `--set` gives them: knob name -> value)."""

    method: str
    n: int
    options: dict[str, Any] = field(default_factory=dict)

    def knobs(self) -> MethodConfig:
        """The strategy's knobs as its method's config, checked against its budget."""
        return CONFIGS[self.method].parse(self.options, self.n)

    @property
    def name(self) -> str:
        knobs = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.method}@{self.n}{knobs}"

    def reuses_probe(self, probe_n: int) -> bool:
        """Whether this strategy's first samples are the probe's (the same tag and seeds), so the probe costs it
        nothing more: best-of-n and self-consistency of at least `probe_n` samples."""
        return probe_n > 0 and self.method in SHARE_THE_PROBE and self.n >= probe_n


@dataclass(frozen=True)
class RoutingTable:
    task: str
    probe_n: int
    aggregate: str
    thresholds: list[float]  # ascending probe scores between bins; bin 0 is the hardest (lowest scores)
    strategies: list[Strategy]  # one per bin
    fitted: dict[str, Any] = field(default_factory=dict)  # how: split, problems, budget, seed, training accuracy

    def __post_init__(self) -> None:
        if len(self.strategies) != len(self.thresholds) + 1:
            raise ConfigError(f"a routing table needs one strategy per bin: {len(self.thresholds) + 1} bins, "
                             f"{len(self.strategies)} strategies")
        if self.thresholds != sorted(self.thresholds):
            raise ConfigError(f"routing thresholds must ascend, got {self.thresholds}")
        unknown = sorted({s.method for s in self.strategies} - set(METHODS) - {"compute_optimal"})
        if unknown or any(s.method == "compute_optimal" for s in self.strategies):
            raise ConfigError(f"a routing table names methods that cannot be routed to: {unknown or 'itself'}")
        for strategy in self.strategies:
            strategy.knobs()

    def bin(self, score: float) -> int:
        return bisect.bisect_right(self.thresholds, score)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RoutingTable:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**{**raw, "strategies": [Strategy(**s) for s in raw["strategies"]]})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"cannot read the routing table {path}: {err}") from err


class Remembered(Wrapper):
    """The probe's completions handed again to the strategy it routes to: a request is its prompt, sampling
    parameters (with the seed) and n, and the same request would give the same text, so best-of-n's first samples
    are not generated twice (nor counted twice in the usage)."""

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__(lm)
        self._done: dict[Request, list[Completion]] = {}

    async def generate_many(self, requests: list[Request]) -> list[list[Completion]]:
        new = list(dict.fromkeys(r for r in requests if r not in self._done))
        if new:
            self._done.update(zip(new, await self.lm.generate_many(new)))
        return [self._done[r] for r in requests]


async def probe(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier, cfg: SearchConfig,
                n: int) -> float:
    """The mean aggregated verifier score of n sampled solutions: high for questions the policy finds easy. They are
    best-of-n's first n samples (the same tag), so a table is fitted from best-of-n's recorded scores."""
    solutions = await sample_solutions(task, problem, lm, cfg, n=n, temperature=cfg.temperature, tag="sample")
    scores = await verifier.score(task, problem, solutions)
    return sum(aggregate(s, cfg.aggregate) for s in scores) / n


@register("compute_optimal", config=ComputeOptimalConfig, needs_verifier=True)
async def compute_optimal(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                          cfg: SearchConfig) -> Trace:
    if verifier is None:
        raise ConfigError("compute_optimal needs a verifier: it estimates difficulty from verifier scores")
    table = RoutingTable.load(method_knobs(cfg, ComputeOptimalConfig).table)
    if table.task != task.name:
        raise ConfigError(f"the routing table was fitted on {table.task}, not {task.name}")
    remembered = Remembered(lm)
    score = await probe(task, problem, remembered, verifier, replace(cfg, aggregate=table.aggregate), table.probe_n)
    strategy = table.strategies[table.bin(score)]
    routed = replace(cfg, n=strategy.n, aggregate=table.aggregate, knobs=strategy.knobs())
    trace = await METHODS[strategy.method](task, problem, remembered, verifier, routed)
    trace.method = "compute_optimal"
    trace.extra.update({"probe_score": score, "bin": table.bin(score), "routed_to": strategy.name})
    return trace
