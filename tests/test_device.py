"""`--device` places the learned verifiers beside the policy: their weights and every tensor they read go to the
device asked for. CUDA is absent here, so the placement is checked on `meta`, PyTorch's device without storage
(a forward pass there computes shapes only)."""

from __future__ import annotations

import pytest

import ponder
from ponder.collect.run import CollectConfig
from ponder.errors import ConfigError
from ponder.lm.load import load_model
from ponder.verifiers import get_verifier
from ponder.verifiers.learned import LearnedVerifier


def _devices(verifier: LearnedVerifier) -> set[str]:
    return {p.device.type for p in verifier.model.parameters()}


def test_a_learned_verifier_loads_on_the_device_asked_for():
    verifier = get_verifier("game24-prm", device="meta")
    assert isinstance(verifier, LearnedVerifier)
    assert verifier.device == "meta" and _devices(verifier) == {"meta"}
    assert _devices(get_verifier("game24-prm")) == {"cpu"}  # the default stays on the host


class _Seen(Exception):
    """Raised by the hook below once it has seen the forward pass's inputs (a pass on `meta` cannot finish)."""


@pytest.mark.parametrize("cache_mb", [0, 128])
def test_a_verifier_sends_its_batch_to_its_device(cache_mb):
    verifier = LearnedVerifier("game24-prm", device="meta", prefix_cache_mb=cache_mb)
    seen: dict[str, str] = {}

    def look(module, args, kwargs):
        seen.update({k: v.device.type for k, v in kwargs.items() if hasattr(v, "device")})
        raise _Seen

    verifier.model.register_forward_pre_hook(look, with_kwargs=True)
    with pytest.raises(_Seen):
        verifier.score_texts([("Input: 4 5 6 10\n", ["10 - 4 = 6 (left: 5 6 6)"])])
    assert seen and set(seen.values()) == {"meta"}, seen


def test_shared_verifiers_are_kept_per_device():
    lm = load_model("game24-policy")
    on_meta = ponder.shared_verifier("game24-prm", lm, device="meta")
    on_cpu = ponder.shared_verifier("game24-prm", lm)
    try:
        assert ponder.shared_verifier("game24-prm", lm, device="meta") is on_meta
        assert _devices(on_meta) == {"meta"} and _devices(on_cpu) == {"cpu"}  # type: ignore[arg-type]
    finally:
        ponder.clear_cache()
        lm.close()  # type: ignore[attr-defined]


def test_a_collection_checks_its_device_before_loading_and_saves_it():
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        CollectConfig(labeller="search", device="tpu").resolved()
    assert CollectConfig(labeller="search", device="cuda").resolved().device == "cuda"
