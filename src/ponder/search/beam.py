"""Step-level beam search guided by a PRM (Snell et al., 2024, "Scaling LLM Test-Time Compute Optimally can be
More Effective than Scaling Model Parameters", §5; the search-and-learn recipe): one loop of generate a step,
score, prune.

N beams are alive at every iteration: the N/M best states each propose about M next steps (the root proposes N),
the verifier scores every new state (after a greedy `lookahead` of k steps, if asked), and the N/M best unfinished
states survive. A beam that ends is completed and kept; the search stops after `depth` steps (num_iterations in
search-and-learn; the task's `max_steps`) or once N beams have completed. The answer is chosen among completed beams
only (`select`: best aggregated score by default, or a majority / verifier-weighted vote).

Knobs: `BeamConfig`, M is `width` (the budget `cfg.n` is N). Unlike search-and-learn's implementation, which runs
one problem at a time (their issue #26: 10 hours for 30 questions at N = 256), every problem's beams go through the
shared engine at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, knob, method_knobs, register
from ponder.search.steps import StepConfig, StepSearch
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.base import Verifier


@dataclass(frozen=True)
class BeamConfig(StepConfig):
    """Beam search's knobs."""

    budget: ClassVar[str] = "N, the beams alive at every step (N/width states each propose width steps); N >= width"
    width: int = knob(4, "next steps each state proposes, M (beam_width) in search-and-learn", low=1)

    def check(self, n: int) -> None:
        super().check(n)
        if n < self.width:
            self.fail(f"the budget n={n} is below width={self.width} (N >= M: N/M states each propose M steps)")


def spread(n: int, k: int) -> list[int]:
    """n proposals over k states, as evenly as possible (the first ones get one more)."""
    return [n // k + (i < n % k) for i in range(k)]


@register("beam", config=BeamConfig, needs_verifier=True)
async def beam(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
               cfg: SearchConfig) -> Trace:
    knobs = method_knobs(cfg, BeamConfig)
    search = StepSearch(task, problem, lm, verifier, cfg, knobs)
    n, m = cfg.n, knobs.width
    search.trace.extra.update({"N": n, "M": m, "lookahead": search.lookahead})
    beams: list[tuple[int, list[str]]] = [(0, [])]
    for i in range(search.limit):
        going, _ = await search.expand(beams, spread(n, len(beams)), ("beam", i))  # generate a step and score it
        if len(search.finished) >= n:
            break
        beams = [(node, steps) for _, node, steps in going[: n // m]]  # prune to the N/M best
        if not beams:
            break
    return search.answer()
