"""The HF backend and the engine, on the shipped game24 policy (a real LlamaForCausalLM)."""

from __future__ import annotations

import asyncio

import pytest

from ponder.errors import ConfigError
from ponder.lm.base import ContextLengthError, Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend, ModelLoadError
from ponder.tasks import Game24

task = Game24()


def sampled(prompt: str, seed: int, **kw) -> Request:
    return Request(prompt, SamplingParams(temperature=1.0, max_tokens=60, seed=seed, **kw))


def test_same_seed_same_text_in_any_batch(game24_backend):
    prompts = [task.prompt(p) for p in task.problems("test", limit=6)]
    requests = [sampled(p, seed=i) for i, p in enumerate(prompts)]
    together = game24_backend.generate_batch(requests)
    alone = [game24_backend.generate_batch([r])[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    other_seed = game24_backend.generate_batch([sampled(prompts[0], seed=12345)])[0]
    draws = {c.text for c in game24_backend.generate_batch([sampled(prompts[0], seed=s) for s in range(8)])}
    assert len(draws) > 1, "different seeds should give different samples"
    assert other_seed.generated_tokens > 0


def test_stop_strings_and_token_limits(game24_backend):
    prompt = task.prompt(task.problems("test", limit=1)[0])
    [one_step] = game24_backend.generate_batch([Request(prompt, SamplingParams(stop=("\n",), max_tokens=80))])
    assert "\n" not in one_step.text and one_step.text.strip()
    assert one_step.finish_reason == "stop"
    [short] = game24_backend.generate_batch([Request(prompt, SamplingParams(max_tokens=5))])
    assert short.generated_tokens == 5 and short.finish_reason == "length"
    assert short.prompt_tokens == len(prompt)  # one token per character


def test_garbage_prompt_and_overlong_prompt_never_hang(game24_backend):
    odd = Request("\x00%%%{}} ~~~ ", SamplingParams(temperature=1.0, max_tokens=40, seed=1))
    huge = Request("9" * 5000, SamplingParams(max_tokens=40))
    engine = Engine(game24_backend)

    async def main() -> list:
        return await asyncio.gather(engine.generate([odd]), engine.generate([huge]), return_exceptions=True)

    [out], error = asyncio.run(main())  # the overlong prompt fails alone, with the reason
    assert isinstance(error, ContextLengthError) and "5000 tokens" in str(error)
    assert out.generated_tokens <= 40
    p = task.problems("test", limit=1)[0]
    assert not task.grade(p, task.extract_answer(p, task.split_steps(out.text)))
    with pytest.raises(ContextLengthError):  # a static batch refuses it before it starts
        game24_backend.generate_batch([odd, huge])


def test_engine_batches_concurrent_searches(game24_backend):
    engine = Engine(game24_backend)
    problems = task.problems("test", limit=8)

    async def one(i: int) -> list[str]:
        reqs = [sampled(task.prompt(problems[i]), seed=100 * i + k) for k in range(4)]
        return [c.text for c in await engine.generate(reqs)]

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    texts = asyncio.run(main())
    assert engine.stats.peak_rows == 32  # the 8 searches decode as one batch
    direct = game24_backend.generate_batch([sampled(task.prompt(problems[3]), seed=300 + k) for k in range(4)])
    assert texts[3] == [c.text for c in direct]


def test_engine_passes_backend_errors_to_callers(game24_backend):
    engine = Engine(game24_backend)

    async def main() -> None:
        await engine.generate([Request(None)])  # type: ignore[arg-type]  # the tokenizer rejects it

    with pytest.raises((TypeError, ValueError)):
        asyncio.run(main())
    with pytest.raises(ValueError, match="bad sampling"):
        SamplingParams(max_tokens=0)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a shipped model"):
        HFBackend(str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="no GGUF file"):
        HFBackend(str(tmp_path / "missing.gguf"))


def test_a_device_is_chosen_for_the_transformers_backend_only(tmp_path):
    from ponder.lm.load import load_model

    with pytest.raises(ConfigError, match="transformers backend"):
        load_model("http://127.0.0.1:9/v1", device="cuda")
    with pytest.raises(ConfigError, match="transformers backend"):
        load_model(str(tmp_path / "model.gguf"), backend="llama.cpp", device="cuda")
    assert load_model("game24-policy", device="cpu").backend.device == "cpu"  # type: ignore[attr-defined]


def distinct(prompt: str, n: int, seed: int, temperature: float = 1.0, max_tokens: int = 60) -> Request:
    return Request(prompt, SamplingParams(temperature=temperature, max_tokens=max_tokens, stop=("\n",), seed=seed), n=n)


def test_distinct_completions_differ_and_do_not_depend_on_the_batch(game24_backend):
    prompts = [task.prompt(p) for p in task.problems("test", limit=3)]
    requests = [distinct(prompts[0], 16, seed=1), sampled(prompts[1], seed=2),
                distinct(prompts[2], 8, seed=3, temperature=0.8)]
    together = game24_backend.generate_many(requests)
    alone = [game24_backend.generate_many([r])[0] for r in requests]
    assert [[c.text for c in out] for out in together] == [[c.text for c in out] for out in alone]
    assert [len(out) for out in together] == [16, 1, 8]
    for out in (together[0], together[2]):
        assert len({c.text for c in out}) == len(out) and all(c.finish_reason == "stop" for c in out)
    # temperature 0: beam search, whose best is the greedy text
    [beams] = game24_backend.generate_many([distinct(prompts[0], 4, seed=0, temperature=0)])
    [greedy] = game24_backend.generate_batch([Request(prompts[0], SamplingParams(max_tokens=60, stop=("\n",)))])
    assert beams[0].text == greedy.text and len({c.text for c in beams}) == 4
    with pytest.raises(ValueError, match="generate_many"):
        game24_backend.generate_batch(requests[:1])


def test_distinct_draws_every_sequence_once_then_stops(game24_backend):
    vocab = len(game24_backend.tokenizer)
    [out] = game24_backend.generate_many([distinct("Input: 4 5 6 10\n", 2 * vocab, seed=5, max_tokens=1)])
    assert len(out) == vocab  # all one-token sequences, none twice, then no more


def test_distinct_draws_are_samples_without_replacement(game24_backend):
    """The first of two draws follows the model's distribution; the second follows p_j * sum_i p_i / (1 - p_i)
    over i != j, the law of a second draw without replacement. 600 draws: a frequency is within 0.07 of its
    probability but for a chance below 1e-4 per token."""
    import torch

    prompt = "Input: 4 5 6 10\n"
    ids = torch.tensor([game24_backend.encode(prompt)])
    with torch.no_grad():
        p = game24_backend.model(input_ids=ids).logits[0, -1].double().softmax(-1)
    second = p * ((p / (1 - p)).sum() - p / (1 - p))
    outs = game24_backend.generate_many([distinct(prompt, 2, seed=s, max_tokens=1) for s in range(600)])
    token = {game24_backend.tokenizer.decode([t]): t for t in range(len(p))}
    for place, law in ((0, p), (1, second)):
        counts = torch.zeros_like(p)
        for out in outs:
            counts[token[out[place].text]] += 1
        assert (counts / len(outs) - law).abs().max() < 0.07
    assert all(out[0].text != out[1].text for out in outs)


def test_min_p_keeps_exactly_the_tokens_within_its_ratio_of_the_likeliest(game24_backend):
    import torch

    prompt = "Input: 4 5 6 10\n"
    with torch.no_grad():
        p = game24_backend.model(input_ids=torch.tensor([game24_backend.encode(prompt)])).logits[0, -1].softmax(-1)
    for min_p in (0.001, 0.05):
        params = SamplingParams(temperature=1.0, min_p=min_p, max_tokens=1, seed=0)
        [out] = game24_backend.generate_many([Request(prompt, params, n=200)])  # every allowed token, once
        allowed = {game24_backend.tokenizer.decode([t]) for t in range(len(p)) if p[t] >= min_p * p.max()}
        assert {c.text for c in out} == allowed
        sampled = game24_backend.generate_batch([Request(prompt, SamplingParams(temperature=1.0, min_p=min_p,
                                                                                max_tokens=1, seed=s))
                                                 for s in range(50)])
        assert {c.text for c in sampled} <= allowed
    with pytest.raises(ValueError, match="bad sampling"):
        SamplingParams(min_p=1.0)
