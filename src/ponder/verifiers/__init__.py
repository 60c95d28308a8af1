"""Verifiers score solutions step by step; aggregation turns step scores into one score per solution."""

from ponder.verifiers.aggregate import AGGREGATIONS, aggregate, check_aggregation
from ponder.verifiers.base import VERIFIERS, Verifier


def get_verifier(name: str) -> Verifier:
    """A built-in verifier (`oracle`, `vote`) or a learned one: a shipped PRM/ORM name or a checkpoint directory
    whose config.json declares its head (`ponder_verifier`)."""
    if name in VERIFIERS:
        return VERIFIERS[name]()
    from ponder.lm.hf import ModelLoadError
    from ponder.verifiers.learned import LearnedVerifier

    try:
        return LearnedVerifier(name)
    except ModelLoadError as err:
        raise _unknown(name, err) from err


def verifier_fingerprint(name: str) -> str:
    """The weights' hash of a learned verifier ("" for the built-in ones), so that a resumed run notices a
    retrained one; an unknown name fails here, without loading a model."""
    if not name or name in VERIFIERS:
        return ""
    from ponder.lm.hf import ModelLoadError, fingerprint

    try:
        return fingerprint(name)
    except ModelLoadError as err:
        raise _unknown(name, err) from err


def _unknown(name: str, err: Exception) -> ValueError:
    return ValueError(f"unknown verifier {name!r}: not one of {', '.join(sorted(VERIFIERS))} and {err}")


__all__ = ["AGGREGATIONS", "Verifier", "aggregate", "check_aggregation", "get_verifier", "verifier_fingerprint"]
