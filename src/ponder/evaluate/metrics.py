"""Verifier metrics against exact labels: step-level AUROC and first-wrong-step accuracy."""

from __future__ import annotations

from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random good step outscores a random bad one (ties count
    half). Mann-Whitney U from average ranks; NaN when one class is missing."""
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def first_wrong(values: Sequence[float], threshold: float = 0.5) -> int | None:
    """Index of the first step whose value is below `threshold`; None when every step passes."""
    return next((i for i, v in enumerate(values) if v < threshold), None)
