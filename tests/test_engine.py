"""The continuous-batching engine's scheduling, on a scripted backend whose every step is recorded; then the real
tiny policy: texts that do not depend on when a request arrives, and a reused prefix that gives fresh logits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest
import torch

from ponder.errors import ConfigError
from ponder.lm.base import Backend, Completion, ContextLengthError, Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.prefix_cache import PrefixCache
from ponder.tasks import Game24


class Scripted(Backend):
    """Writes each prompt backwards, one character per step (a step takes `delay` seconds); a request of n gets n
    texts, `#i` appended. A prompt `boom` makes the step that runs it fail. Every step's running keys are kept."""

    name = "scripted"

    def __init__(self, context: int = 64, delay: float = 0.002) -> None:
        super().__init__()
        self.context, self.delay = context, delay
        self.running: dict[int, tuple[Request, str]] = {}
        self.written: dict[int, int] = {}
        self.steps: list[set[int]] = []
        self.dropped: set[int] = set()
        self._next = 0

    @property
    def keys(self) -> list[int]:
        return list(self.running)

    def cost(self, request: Request) -> int:
        return len(request.prompt) + request.n * request.params.max_tokens

    def admit(self, requests: list[Request]) -> list[int | Exception]:
        out: list[int | Exception] = []
        for r in requests:
            if len(r.prompt) >= self.context:
                out.append(ContextLengthError(f"{len(r.prompt)} tokens do not fit {self.context}"))
                continue
            self._next += 1
            self.running[self._next] = (r, r.prompt[::-1][: r.params.max_tokens])
            self.written[self._next] = 0
            out.append(self._next)
        return out

    def step(self) -> dict[int, list[Completion]]:
        time.sleep(self.delay)
        self.steps.append(set(self.running))
        if any(r.prompt == "boom" for r, _ in self.running.values()):
            raise RuntimeError("the backend exploded")
        done = {}
        for key, (r, text) in list(self.running.items()):
            self.written[key] += 1
            if self.written[key] >= len(text):
                del self.running[key]
                texts = [text] if r.n == 1 else [f"{text}#{i}" for i in range(r.n)]
                done[key] = [Completion(t, len(r.prompt), len(text), "stop") for t in texts]
        return done

    def drop(self, keys: Iterable[int]) -> None:
        for key in keys:
            if self.running.pop(key, None) is not None:
                self.dropped.add(key)


def req(prompt: str, max_tokens: int = 100, n: int = 1) -> Request:
    return Request(prompt, SamplingParams(max_tokens=max_tokens), n=n)


async def decoding(engine: Engine, backend: Scripted, request: Request, steps: int) -> asyncio.Task:
    """The request, running in the engine once the backend has taken `steps` steps."""
    task = asyncio.create_task(engine.generate([request]))
    while len(backend.steps) < steps:
        await asyncio.sleep(0.001)
    return task


def test_a_request_joins_the_running_batch_and_leaves_when_done():
    backend = Scripted()
    engine = Engine(backend)

    async def main() -> tuple[float, float]:
        order = []

        async def one(prompt: str) -> None:
            [c] = await engine.generate([req(prompt)])
            assert c.text == prompt[::-1]
            order.append(prompt)

        long = asyncio.create_task(one("x" * 40))
        while len(backend.steps) < 5:  # the long row is decoding
            await asyncio.sleep(0.001)
        await one("abc")
        assert order == ["abc"]  # the short request did not wait for the long one
        await long
        return 0, 0

    asyncio.run(main())
    joined = [i for i, keys in enumerate(backend.steps) if len(keys) == 2]
    assert joined and joined[0] >= 5 and len(joined) == 3  # it joined mid-decode, ran 3 steps, then left


def test_row_and_token_caps_split_the_work():
    backend = Scripted(delay=0)
    engine = Engine(backend, max_rows=4)

    async def main(prompts: list[str], n: int = 1) -> list[list[Completion]]:
        outs = await asyncio.gather(*(engine.generate_many([req(p, n=n)]) for p in prompts))
        return [out for [out] in outs]

    prompts = [f"p{i:02d}" for i in range(10)]
    outs = asyncio.run(main(prompts))
    assert [o[0].text for o in outs] == [p[::-1] for p in prompts]
    assert max(len(s) for s in backend.steps) == 4  # the row cap
    outs = asyncio.run(main(["ab", "cd", "ef"], n=2))  # a request of n counts n rows
    assert [len(o) for o in outs] == [2, 2, 2] and max(len(s) for s in backend.steps[-4:]) <= 2

    backend = Scripted(delay=0)
    engine = Engine(backend, max_tokens=3 * (3 + 100))  # room for three 3-token prompts with 100 new tokens each
    outs = asyncio.run(main(prompts))
    assert [o[0].text for o in outs] == [p[::-1] for p in prompts]
    assert max(len(s) for s in backend.steps) == 3


def test_cancelling_a_search_frees_its_row():
    backend = Scripted()
    engine = Engine(backend)

    async def main() -> str:
        doomed = await decoding(engine, backend, req("y" * 60), 3)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        [c] = await engine.generate([req("still serving")])
        return c.text

    assert asyncio.run(main()) == "gnivres llits"
    assert len(backend.dropped) == 1
    [cancelled] = backend.dropped
    assert not any(cancelled in keys for keys in backend.steps[-5:])  # it left long before its 60 steps


def test_a_prompt_too_long_fails_alone():
    engine = Engine(Scripted(context=20))

    async def main() -> list:
        return await asyncio.gather(engine.generate([req("z" * 30)]), engine.generate([req("fits")]),
                                    return_exceptions=True)

    error, [ok] = asyncio.run(main())
    assert isinstance(error, ContextLengthError) and "30 tokens" in str(error)
    assert ok.text == "stif"


def test_a_backend_error_reaches_every_caller_of_that_batch_and_the_engine_goes_on():
    backend = Scripted()
    engine = Engine(backend)

    async def main() -> list:
        running = await decoding(engine, backend, req("a" * 40), 2)
        return await asyncio.gather(running, engine.generate([req("boom")]), return_exceptions=True)

    errors = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) and "exploded" in str(e) for e in errors)
    assert not backend.running  # the failed batch was dropped

    async def after() -> str:
        [c] = await engine.generate([req("fine")])
        return c.text

    assert asyncio.run(after()) == "enif"


def test_prefix_cache_matches_splits_and_stays_within_budget():
    def kv(ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:  # one layer; each token's keys = its id
        t = torch.tensor(ids, dtype=torch.float32)[None, :, None].expand(2, len(ids), 3).contiguous()
        return [(t, -t)]

    cache = PrefixCache(budget_bytes=10**6)
    cache.insert([1, 2, 3, 4], kv([1, 2, 3, 4]))
    cache.insert([1, 2, 7], kv([1, 2, 7]))  # splits the edge after [1, 2]
    n, got = cache.match([1, 2, 3, 9])
    assert n == 3 and got[0][0][0, :, 0].tolist() == [1, 2, 3] and got[0][1][0, :, 0].tolist() == [-1, -2, -3]
    n, got = cache.match([1, 2, 7, 7])
    assert n == 3 and got[0][0][0, :, 0].tolist() == [1, 2, 7]
    assert cache.match([5])[0] == 0
    per_token = kv([0])[0][0].nbytes * 2
    assert cache.nbytes == 5 * per_token  # [1, 2] once, [3, 4], [7]

    small = PrefixCache(budget_bytes=8 * per_token)
    for start in range(0, 40, 4):
        ids = list(range(start, start + 4))
        small.insert(ids, kv(ids))
        small.match(list(range(0, 4)))  # keeps the first sequence recently used
        small.evict()
        assert small.nbytes <= small.budget_bytes
    assert small.match([0, 1, 2, 3])[0] == 4  # the recently used survived, the others were evicted
    assert small.match([32, 33, 34, 35])[0] == 0 and small.match([36, 37, 38, 39])[0] == 4


task = Game24()


def test_real_policy_same_text_alone_in_a_batch_and_arriving_mid_decode(game24_backend):
    prompts = [task.prompt(p) for p in task.problems("test", limit=8)]
    crowd = [Request(p, SamplingParams(temperature=1.0, max_tokens=150, seed=i)) for i, p in enumerate(prompts)]
    late = Request(prompts[3] + "5 + 1", SamplingParams(temperature=1.0, max_tokens=60, seed=77))
    engine = Engine(game24_backend)

    async def main() -> tuple[list[Completion], Completion]:
        busy = asyncio.create_task(engine.generate(crowd))
        while engine.stats.batches < 10:
            await asyncio.sleep(0.001)
        [c] = await engine.generate([late])
        return await busy, c

    together, joined = asyncio.run(main())
    alone = game24_backend.generate_batch([late])[0]
    assert joined.text == alone.text
    assert [c.text for c in together] == [game24_backend.generate_batch([r])[0].text for r in crowd]


def test_next_token_passes_stay_within_their_positions_and_keep_the_order():
    from ponder.lm.hf import HFBackend, _passes

    lengths = [[0] * n for n in (30, 5, 12, 40, 7)]
    groups = _passes(lengths, 36)
    assert sorted(i for g in groups for i in g) == list(range(5))
    assert all(len(g) * max(len(lengths[i]) for i in g) <= 36 for g in groups if len(g) > 1)
    assert groups[-1] == [3]  # longer than a pass: alone
    backend = HFBackend("game24-policy", prefix_cache_mb=0)
    prompts = [task.prompt(p) + "4 + 4 = 8 (left: " * (i % 3) for i, p in enumerate(task.problems("test", limit=6))]
    whole = backend.next_token_logits(prompts)
    backend.pass_positions = 40  # two or three prompts a pass
    assert torch.allclose(backend.next_token_logits(prompts), whole, atol=1e-4)


def test_reused_prefix_gives_the_logits_of_a_fresh_prefill():
    from ponder.lm.hf import HFBackend

    fresh, reusing = HFBackend("game24-policy", prefix_cache_mb=0), HFBackend("game24-policy", prefix_cache_mb=64)
    prompts = [task.prompt(p) for p in task.problems("test", limit=4)]
    reusing.next_token_logits(prompts)  # caches the prompts
    longer = [p + "4 + 4 = 8 (left: " for p in prompts]
    assert reusing.prefixes is not None and reusing.prefixes.nbytes > 0
    assert torch.allclose(reusing.next_token_logits(longer), fresh.next_token_logits(longer), atol=1e-4)
    other = Request(prompts[0] + "6 * 4 = 24 (left: ", SamplingParams(max_tokens=30))
    [c] = reusing.generate_batch([other])
    assert c.cached_tokens == len(prompts[0])  # only the new text was computed
    assert c.text == fresh.generate_batch([other])[0].text


def test_verifier_engine_scores_equal_unbatched_scores_and_charges_the_caller():
    from ponder.trace import Usage
    from ponder.verifiers.base import MeteredVerifier
    from ponder.verifiers.learned import LearnedVerifier

    prm = LearnedVerifier("game24-prm")
    problems = task.problems("test", limit=12)
    paths = [[["4 + 4 = 8 (left: 8 8 9)"], ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)"]]
             for _ in problems]
    usages = [Usage() for _ in problems]

    async def main() -> list[list[list[float]]]:
        return await asyncio.gather(*(MeteredVerifier(prm, u).score_prefixes(task, p, s)
                                      for p, s, u in zip(problems, paths, usages)))

    batched = asyncio.run(main())
    assert prm.engine is not None and prm.engine.batches < len(problems)  # calls shared forward passes
    for p, s, scores in zip(problems, paths, batched):
        alone = prm.score_texts([(task.prompt(p), steps) for steps in s])
        assert all(abs(x - y) < 1e-5 for a, b in zip(scores, alone) for x, y in zip(a, b))
    for p, s, u in zip(problems, paths, usages):  # each problem is charged its own tokens
        assert u.verifier_calls == 2 and u.verifier_seconds > 0
        assert u.verifier_tokens == sum(len(prm.layout.encode(task.prompt(p), steps).ids) for steps in s)


def test_usage_counts_the_prompt_tokens_the_cache_saved(game24_backend):
    from ponder.search import SearchConfig, get_method, search
    from ponder.search.tot import ToTBFSConfig
    from ponder.verifiers import get_verifier

    problem = task.problems("test", limit=1)[0]
    engine = Engine(game24_backend)
    cfg = SearchConfig(n=4, max_tokens=160, max_step_tokens=40, seed=5,
                       knobs=ToTBFSConfig(width=4, breadth=2, distinct=False))
    trace = asyncio.run(search(task, problem, engine, get_verifier("oracle"), get_method("tot_bfs"), cfg))
    u = trace.usage
    assert u.model_calls > 4 and u.verifier_calls >= len(trace.nodes) - 1
    # four samples of each state share its prompt, and a child's prompt extends its parent's text
    assert u.computed_prompt_tokens < 0.5 * u.prompt_tokens


def test_the_cache_cap_is_a_sixth_of_free_memory_and_a_request_costs_every_row(game24_backend, monkeypatch):
    import ponder.lm.hf as hf

    cfg = game24_backend.model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4  # keys and values, fp32
    for free in (6 << 30, 9 << 30):  # the memory free at load time
        monkeypatch.setattr(hf, "_available_memory", lambda free=free: free)
        backend = hf.HFBackend("game24-policy", prefix_cache_mb=0)
        assert backend.cache_positions() == free // 6 // per_position
        assert Engine(backend).max_tokens == backend.cache_positions()
    one = Request("4 5 6 10\n", SamplingParams(max_tokens=50))
    eight = Request("4 5 6 10\n", SamplingParams(max_tokens=50), n=8)
    assert game24_backend.cost(eight) == 8 * game24_backend.cost(one)  # each row holds its own prompt


def test_the_prefix_cache_gets_a_sixth_of_free_memory_by_default(monkeypatch):
    import ponder.lm.hf as hf

    monkeypatch.setattr(hf, "_available_memory", lambda: 6 << 30)
    backend = hf.HFBackend("game24-policy")
    assert backend.prefixes is not None and backend.prefixes.budget_bytes == 1 << 30
    assert backend.cache_positions() * backend._bytes_per_position() <= 1 << 30
    assert hf.HFBackend("game24-policy", prefix_cache_mb=0).prefixes is None


def test_a_memory_share_caps_what_an_engine_sizes_itself_by(monkeypatch):
    """Runs sharing a machine: PONDER_MEMORY_MB bounds the free memory an engine takes its sixths of."""
    import ponder.lm.hf as hf

    monkeypatch.setattr(hf, "_available_memory", lambda: 6 << 30)
    monkeypatch.setenv("PONDER_MEMORY_MB", "600")
    backend = hf.HFBackend("game24-policy")
    assert backend.prefixes is not None and backend.prefixes.budget_bytes == 100 << 20
    assert backend.cache_positions() * backend._bytes_per_position() <= 100 << 20
    monkeypatch.setenv("PONDER_MEMORY_MB", "60000")  # more than is free: what is free
    assert hf.HFBackend("game24-policy").prefixes.budget_bytes == 1 << 30
    monkeypatch.setenv("PONDER_MEMORY_MB", "lots")
    with pytest.raises(ConfigError, match="PONDER_MEMORY_MB='lots'"):
        hf.HFBackend("game24-policy")


def test_bench_memory_starts_from_what_the_process_holds():
    """The engine bench's peak memory starts from live memory, not from heap an earlier run freed."""
    from ponder import heap
    from ponder.bench.engine import _PeakMemory

    pieces = [torch.ones(1 << 16) for _ in range(4000)]  # 1 GB in 256 KB pieces: heap, not mmap, once freed
    held = heap.resident()
    del pieces
    with _PeakMemory() as memory:
        pass
    assert memory.start < held - (512 << 20)
