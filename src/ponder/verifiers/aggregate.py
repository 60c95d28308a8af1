"""Step-score aggregation for process reward models (Lightman et al., 2023; Snell et al., 2024).

`min` and `prod` punish any bad step, `last` trusts the final step's score (the PRM has seen the whole
solution by then), `mean` is the gentle average.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ponder.errors import ConfigError

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,
    "last": lambda scores: scores[-1],
    "prod": math.prod,
    "mean": lambda scores: sum(scores) / len(scores),
}


def check_aggregation(how: str) -> None:
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """One score from a solution's step scores; an empty solution scores 0."""
    check_aggregation(how)
    return AGGREGATIONS[how](scores) if scores else 0.0
