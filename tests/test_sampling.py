"""Sampling on the logits' device: greedy is the model's argmax, sampled tokens follow the truncated distribution
(top-k, top-p, min-p) measured against a reference written here with a full sort, rows with different knobs share a
batch without changing each other's tokens, and stop strings cut the text exactly where the same seed's unstopped
text holds them, whether the stop check's first test runs on the device or every row is decoded on the host."""

from __future__ import annotations

import pytest
import torch

from ponder.lm.base import Request, SamplingParams
from ponder.lm.hf import HFBackend
from ponder.lm.sampling import CANDIDATES, Knobs, find_stop, sample, stop_candidates

VOCAB = 512
DRAWS = 4000


def _logits(scale: float) -> torch.Tensor:
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(7)) * scale


def _reference(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The distribution sampling must follow, by the definitions: min-p and top-k on the tempered distribution,
    then the smallest likeliest-first set of the rest with mass >= top_p, renormalised."""
    probs = (logits.double() / p.temperature).softmax(-1)
    keep = probs >= p.min_p * probs.max()
    order = probs.argsort(descending=True)
    if p.top_k:
        keep[order[p.top_k:]] = False
    kept = torch.where(keep, probs, 0.0)
    kept = kept / kept.sum()
    ranked = kept[order]
    before = ranked.cumsum(0) - ranked
    keep[order[before >= p.top_p]] = False
    out = torch.where(keep, probs, 0.0)
    return out / out.sum()


def _draw(logits: torch.Tensor, p: SamplingParams, seed: int = 0) -> torch.Tensor:
    u = torch.rand(DRAWS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return sample(logits.expand(DRAWS, -1), Knobs.of([p] * DRAWS), u)


@pytest.mark.parametrize(("scale", "params"), [
    (3.0, SamplingParams(temperature=1.0, top_k=5)),
    (3.0, SamplingParams(temperature=0.7, top_p=0.6)),
    (3.0, SamplingParams(temperature=1.0, min_p=0.1)),
    (3.0, SamplingParams(temperature=1.3, top_k=20, top_p=0.8, min_p=0.02)),
])
def test_sampled_tokens_follow_the_truncated_distribution(scale, params):
    logits = _logits(scale)
    want = _reference(logits, params)
    got = torch.bincount(_draw(logits, params), minlength=VOCAB).double() / DRAWS
    assert set(got.nonzero().flatten().tolist()) <= set(want.nonzero().flatten().tolist())  # nothing truncated away
    assert 0.5 * (got - want).abs().sum() < 0.04  # total variation, a few standard errors at 4,000 draws


def test_a_nucleus_wider_than_the_candidates_is_found_in_the_whole_vocabulary():
    logits, params = _logits(0.2), SamplingParams(temperature=1.0, top_p=0.95)
    want = _reference(logits, params)
    assert int((want > 0).sum()) > CANDIDATES  # the case: the nucleus reaches past the top-k candidates
    drawn = set(_draw(logits, params).tolist())
    assert drawn <= set(want.nonzero().flatten().tolist()) and len(drawn) > CANDIDATES


def test_greedy_rows_take_the_argmax_and_mixed_rows_sample_as_they_would_alone():
    logits = torch.stack([_logits(3.0), _logits(1.0).flip(0), _logits(2.0).roll(3), _logits(0.5)])
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_k=3),
              SamplingParams(temperature=1.0, top_p=0.5), SamplingParams(temperature=1.0, min_p=0.05)]
    u = torch.tensor([0.3, 0.77, 0.12, 0.91], dtype=torch.float64)
    together = sample(logits, Knobs.of(params), u)
    alone = [int(sample(logits[i : i + 1], Knobs.of([p]), u[i : i + 1])) for i, p in enumerate(params)]
    assert together.tolist() == alone
    assert alone[0] == int(logits[0].argmax())
    assert alone[1] in logits[1].topk(3).indices.tolist()


def test_a_negative_top_k_is_refused():
    with pytest.raises(ValueError, match="top_k -1"):
        SamplingParams(top_k=-1)


@pytest.fixture(scope="module")
def backends() -> dict[str, HFBackend]:
    return {"device": HFBackend("game24-policy"), "host": HFBackend("game24-policy", sample_on_host=True)}


def test_greedy_decoding_on_the_device_is_the_models_own_greedy_text(backends):
    backend = backends["device"]
    prompts = ["Input: 4 5 6 10\n", "Input: 1 1 11 12\n"]
    ours = backend.generate_batch([Request(p, SamplingParams(max_tokens=16)) for p in prompts])
    for prompt, completion in zip(prompts, ours):
        ids = torch.tensor([backend.encode(prompt)])
        with torch.inference_mode():
            theirs = backend.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                            max_new_tokens=16, pad_token_id=backend.pad)
        assert completion.text == backend.tokenizer.decode(theirs[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("stop", ["(left", "\n", "= 1"])
def test_stop_strings_cut_exactly_where_the_unstopped_text_holds_them(backends, stop):
    prompt = "Input: 2 3 8 9\n"
    free = [Request(prompt, SamplingParams(temperature=1.0, max_tokens=24, seed=s)) for s in range(6)]
    stopped = [Request(r.prompt, SamplingParams(temperature=1.0, max_tokens=24, seed=r.params.seed, stop=(stop,)))
               for r in free]
    texts = [c.text for c in backends["device"].generate_batch(free)]
    outs = {path: backend.generate_batch(stopped) for path, backend in backends.items()}
    assert [c.text for c in outs["device"]] == [c.text for c in outs["host"]]
    cuts = 0
    for text, c in zip(texts, outs["device"]):
        at = find_stop(text, (stop,))
        if at is None:
            assert c.text == text and c.finish_reason == "length"
        else:
            cuts += 1
            assert c.text == text[:at] and c.finish_reason == "stop"
    assert cuts  # some seed reaches the stop string


def test_only_tokens_that_can_end_a_stop_string_are_candidates():
    texts = ["ab", " left", "\n", "", "x\ufffd", ")"]
    assert stop_candidates(texts, ["(left", "\n\n"]) == [False, True, True, True, True, False]


@pytest.mark.slow
def test_the_decode_benchmark_times_both_paths_on_the_same_texts():
    from ponder.bench.decode import decode_benchmark

    rows = decode_benchmark("smollm2", batches=(1, 3), tokens=4)
    assert [(r["path"], r["batch"]) for r in rows] == [("host", 1), ("host", 3), ("device", 1), ("device", 3)]
    assert all(r["same_texts"] and r["tokens"] == 4 * r["batch"] and r["steps"] == 4 for r in rows)
    assert all(0 < r["forward_ms"] < r["step_ms"] and r["host_ms"] > 0 for r in rows)
