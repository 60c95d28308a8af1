"""Detecting a verifier that knows nothing about a problem, and falling back to the policy's own ranking.

A search that ranks or prunes by a verifier is only as good as the verifier's scores on the problem at hand. On a
problem outside what the verifier was trained on (game24 with a number above 24, when every training split stops
at 24) a PRM can score every step near 0: ranking by those scores is ranking by noise, and the search does worse
than greedy decoding. The guard watches every score the verifier gives on one problem and calls it uninformative
when

- the best score it has given is below `guard_floor`: a verifier that knows a solvable problem rates at least one
  candidate as likely to succeed (a PRM's score estimates the chance a state leads to a right answer, so "every
  candidate fails" on a problem that has solutions is the verifier not knowing); or
- it has scored at least two states and they all lie within `guard_spread` of each other: scores that do not
  differ cannot rank.

Both are running extremes (the best score and the range only grow), so the verdict, once reached, holds for the
rest of the search, and is in practice reached at the first decision (the root's proposals). From then on the
search ranks by the policy: step-level searches by the path's probability under the policy (the product of its
steps' probabilities, as beam search over the policy alone does), MCTS by its priors alone (Q taken as 0), and the
final answer by majority vote over the
finished solutions (self-consistency, Wang et al., 2023), which on average does at least as well as greedy decoding
because the greedy answer is the policy's most likely one and a vote of samples concentrates on it. The trace says
so (`extra["verifier_uninformative"]`, the reason), a warning is logged once per method and verifier, and the
eval summary counts the problems (`uninformative`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from ponder.search.base import MethodConfig, knob
from ponder.trace import Trace

logger = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()  # (method, verifier) already warned about
FALLBACK_SELECT = "majority"  # how the answer is chosen among finished solutions once the verifier is uninformative


@dataclass(frozen=True)
class GuardConfig(MethodConfig):
    """The knobs of the guard against an uninformative verifier (every method that ranks by a verifier has them)."""

    budget: ClassVar[str] = ""
    guard: bool = knob(True, "fall back to the policy's ranking where the verifier's scores on a problem carry no "
                             "information (false: trust the verifier always)")
    guard_floor: float = knob(0.05, "uninformative when no state on the problem scores this or more", low=0.0,
                              high=1.0)
    guard_spread: float = knob(1e-3, "uninformative when the problem's scores (two or more) all lie within this of "
                                     "each other", low=0.0)


class Guard:
    """One problem's watch over its verifier's scores (`GuardConfig` says when they are uninformative)."""

    def __init__(self, knobs: GuardConfig, trace: Trace, verifier: str,
                 fallback: str = "ranking by the policy instead (path probability, then a majority vote)") -> None:
        self.knobs, self.trace, self.verifier, self.fallback = knobs, trace, verifier, fallback
        self.best = float("-inf")
        self.worst = float("inf")
        self.seen = 0
        self.reason: str | None = None

    @property
    def fired(self) -> bool:
        return self.reason is not None

    def observe(self, scores: list[float]) -> bool:
        """Take the scores of newly judged states; returns whether the verifier is (now) uninformative."""
        if not scores or self.fired or not self.knobs.guard:
            return self.fired
        self.best, self.worst = max(self.best, *scores), min(self.worst, *scores)
        self.seen += len(scores)
        k = self.knobs
        if self.best < k.guard_floor:
            self.flag(f"every score is below guard_floor={k.guard_floor} (best {self.best:.3g} of {self.seen})")
        elif self.seen >= 2 and self.best - self.worst < k.guard_spread:
            self.flag(f"all {self.seen} scores lie within guard_spread={k.guard_spread} "
                      f"({self.worst:.3g} to {self.best:.3g})")
        return self.fired

    def flag(self, reason: str) -> None:
        self.reason = reason
        self.trace.extra["verifier_uninformative"] = reason
        key = (self.trace.method, self.verifier)
        if key not in _WARNED:
            _WARNED.add(key)
            logger.warning("%s: the verifier %s knows nothing about problem %s (%s): %s; rows say so in "
                           "verifier_uninformative, the summary counts them (uninformative); said once per method "
                           "and verifier", self.trace.method, self.verifier, self.trace.problem_id, reason,
                           self.fallback)

    def select(self, how: str) -> str:
        """How the answer is chosen: the method's `how`, or the majority vote once the verifier is uninformative."""
        return FALLBACK_SELECT if self.fired else how
