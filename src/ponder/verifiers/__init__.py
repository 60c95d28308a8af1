"""Verifiers score solutions step by step; aggregation turns step scores into one score per solution."""

import threading

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.verifiers.aggregate import AGGREGATIONS, aggregate, check_aggregation
from ponder.verifiers.base import VERIFIERS, Verifier

JUDGES = {"judge": "process", "judge-outcome": "outcome"}
ASKING = (*JUDGES, "consistency")  # the verifiers that ask a model: the policy, or another one after a colon
_lock = threading.Lock()
_verifiers: dict[tuple[str, str], Verifier] = {}


def get_verifier(name: str, lm: LanguageModel | None = None, device: str = "cpu") -> Verifier:
    """A built-in verifier (`oracle`, `vote`, `depth`), one that asks a model (`judge` asks the policy `lm` itself
    about each step, `judge-outcome` about each solution, `consistency` has it finish each solution from a cut, rStar's
    discriminator; `KIND:MODEL` asks another model: a GGUF file, a directory or a server URL), or a learned one: a
    shipped PRM/ORM name, a checkpoint directory whose config.json declares its head (`ponder_verifier`) or a GGUF file
    `ponder export --gguf` wrote from one, or one
    behind a server: `http://HOST:PORT` (Ponder's scoring endpoint) or `http://HOST:PORT/pooling` (vLLM's pooling
    API for PRMs; `ponder.verifiers.remote`).
    `device` (`cpu`, `cuda`, `cuda:1`): where a learned verifier, or the in-process model a `KIND:MODEL` verifier asks,
    runs (a server's URL runs where the server runs)."""
    if name in VERIFIERS:
        return VERIFIERS[name]()
    from ponder.lm.load import is_url

    if is_url(name):
        from ponder.verifiers.remote import remote_verifier

        return remote_verifier(name)
    kind, _, spec = name.partition(":")
    if kind in ASKING:
        from ponder.lm.load import load_model
        from ponder.verifiers.consistency import MutualConsistency
        from ponder.verifiers.judge import JudgeVerifier

        if not spec and lm is None:
            raise ConfigError(f"the {kind} verifier asks a model: name one ({kind}:MODEL) or pass the policy")
        model = load_model(spec, device="cpu" if is_url(spec) else device) if spec else lm
        return MutualConsistency(model) if kind == "consistency" else JudgeVerifier(model, JUDGES[kind])
    from ponder.lm.hf import ModelLoadError
    from ponder.verifiers.learned import LearnedVerifier

    try:
        return LearnedVerifier(name, device=device)
    except ModelLoadError as err:
        raise _unknown(name, err) from err


def shared_verifier(name: str, lm: LanguageModel | None = None, device: str = "cpu") -> Verifier:
    """The verifier `name` names (`get_verifier`), on `device`. A learned one (a PRM or ORM) is loaded once per device
    and kept, so every caller shares its verifier engine; one that asks a model (`judge`, `consistency`) is made anew
    around `lm` each time, so its memory of questions asked belongs to one call."""
    if name.partition(":")[0] in ASKING:
        return get_verifier(name, lm, device)
    with _lock:
        if (name, device) not in _verifiers:
            _verifiers[name, device] = get_verifier(name, lm, device)
        return _verifiers[name, device]


def clear_verifiers() -> None:
    """Forget the verifiers `shared_verifier` keeps."""
    with _lock:
        _verifiers.clear()


def verifier_fingerprint(name: str) -> str:
    """The weights' hash of a learned verifier ("" for the built-in ones), so that a resumed run notices a
    retrained one; an unknown name fails here, without loading a model. Behind a URL: the hash the scoring server
    reports for its verifier ("" for vLLM's pooling API, which reports none)."""
    if not name or name in VERIFIERS or name in ASKING:
        return ""
    from ponder.lm.load import is_url

    if is_url(name):
        from ponder.verifiers.remote import remote_fingerprint

        return remote_fingerprint(name)
    from ponder.lm.hf import ModelLoadError, fingerprint
    from ponder.lm.load import model_fingerprint

    kind, _, spec = name.partition(":")
    if kind in ASKING:
        return model_fingerprint(spec)
    try:
        return fingerprint(name)
    except ModelLoadError as err:
        raise _unknown(name, err) from err


def _unknown(name: str, err: Exception) -> ConfigError:
    return ConfigError(f"unknown verifier {name!r}: not one of {', '.join(sorted(VERIFIERS))} and {err}")


__all__ = ["AGGREGATIONS", "ASKING", "Verifier", "aggregate", "check_aggregation", "clear_verifiers", "get_verifier",
           "shared_verifier", "verifier_fingerprint"]
