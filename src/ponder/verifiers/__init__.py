"""Verifiers score solutions step by step; aggregation turns step scores into one score per solution."""

from ponder.verifiers.aggregate import AGGREGATIONS, aggregate
from ponder.verifiers.base import Verifier, get_verifier

__all__ = ["AGGREGATIONS", "Verifier", "aggregate", "get_verifier"]
