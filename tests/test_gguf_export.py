"""`ponder export --gguf`: shipped policies and the game24 PRM as GGUF files that llama.cpp runs with the tokens,
greedy text and step scores of the Hugging Face checkpoints; a freshly trained checkpoint too; anything else is one
line and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from typer.testing import CliRunner

from ponder.bench.gguf import llama_cpp_step_scores, right_and_wrong_steps
from ponder.cli import app
from ponder.lm.base import Request, SamplingParams
from ponder.lm.gguf_export import export_gguf
from ponder.lm.hf import HFBackend, load_tokenizer
from ponder.lm.llamacpp import LlamaCppBackend
from ponder.tasks import get_task
from ponder.train.tokenizer import CHARS, char_tokenizer
from ponder.verifiers.learned import LearnedVerifier, VerifierError

PROMPTS = 20


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {name: export_gguf(name, out / f"{name}.gguf").path for name in ("game24-policy", "arith-policy",
                                                                          "game24-prm")}


def llama(path: Path, rows: int = PROMPTS) -> LlamaCppBackend:
    return LlamaCppBackend(str(path), threads=1, max_rows=rows)  # one thread: no second core to wait for


def task_texts(name: str) -> list[str]:
    """Every test prompt of the task, alone and followed by its reference solution."""
    task = get_task(name)
    texts = []
    for problem in task.problems("test"):
        prompt = task.prompt(problem)
        texts += [prompt, prompt + task.join_steps(task.reference_solution(problem) or [])]
    return texts


def test_llama_cpp_tokenises_every_test_prompt_as_the_character_tokenizer_does(exported):
    prm = llama(exported["game24-prm"], rows=1)
    hf = HFBackend("game24-prm")
    verifier = LearnedVerifier("game24-prm", batched=False)
    texts = task_texts("game24") + task_texts("arith")
    # every character, the special tokens, the step tag, and characters outside the vocabulary (one at a time: a run
    # of them is one <unk> in llama.cpp's Unigram tokenizer)
    every_char = "".join(CHARS) + "<s></s><pad><unk> ки \u00e9x\ty\rz\x0c!\u2028"
    for text in [*texts, every_char]:
        assert list(prm.encode(text)) == hf.encode(text), text
    for text in [*texts, "".join(CHARS)]:  # and back (the backend writes nothing for special and unknown tokens)
        assert prm.text(prm.encode(text)) == text
    assert hf.encode("\u00e9x\t") == [3, 92, 3] == list(prm.encode("\u00e9x\t"))  # unknown characters are <unk>
    steps = ["4 + 5 = 9 (left: 6 9 10)", "10 - 6 = 4 (left: 4 9)"]
    layout = verifier.layout.encode("Input: 4 5 6 10\n", steps)  # the PRM's own layout: steps, then " ки"
    assert list(prm.encode("Input: 4 5 6 10\n" + "".join(f"{s} ки\n" for s in steps))) == layout.ids
    assert prm.eos == {2} and not prm.model.add_bos_token()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["game24-policy", "arith-policy"])
def test_greedy_text_from_the_gguf_in_llama_cpp_is_the_checkpoints_in_transformers(exported, name):
    task = get_task(name.split("-")[0])
    requests = [Request(task.prompt(p), SamplingParams(max_tokens=160)) for p in task.problems("test", PROMPTS)]
    hf, gguf = HFBackend(name, threads=1), llama(exported[name])
    theirs, ours = hf.generate_batch(requests), gguf.generate_batch(requests)
    assert [c.text for c in ours] == [c.text for c in theirs]
    assert [c.generated_tokens for c in ours] == [c.generated_tokens for c in theirs]
    assert [gguf.encode(r.prompt + c.text) for r, c in zip(requests, ours)] == [
        tuple(hf.encode(r.prompt + c.text)) for r, c in zip(requests, theirs)]
    assert sum(c.generated_tokens for c in ours) > 20 * PROMPTS  # whole solutions, not a token or two
    # transformers reading the same file (the tokenizer it stores) gives the same text too
    assert [c.text for c in HFBackend(str(exported[name]), threads=1).generate_batch(requests)] == [
        c.text for c in theirs]


def test_prm_step_scores_through_llama_cpp_match_transformers(exported):
    """Scores of right and wrong steps (each tag's P(+) times the checked result's probability). The f32 file holds
    the bfloat16 weights exactly, so with a float32 key-value cache only the kernels' summation order differs (1e-5);
    llama.cpp's default cache stores keys and values in float16 (2e-3: 7.5e-4 measured)."""
    verifier = LearnedVerifier("game24-prm", batched=False)
    items = right_and_wrong_steps("game24", 10)
    theirs = np.array([s for row in verifier.score_texts(items) for s in row])
    exact, half = (np.array([s for row in llama_cpp_step_scores(exported["game24-prm"], verifier, items, kv_f32)
                             for s in row]) for kv_f32 in (True, False))
    assert np.abs(exact - theirs).max() < 1e-5
    assert np.abs(half - theirs).max() < 2e-3
    assert theirs.max() > 0.9 and theirs.min() < 0.1  # the scores separate: the comparison is not of constants


def test_the_exported_prm_is_a_verifier_in_transformers_too(exported):
    """The file carries the PRM's head and tokenizer: the same scores as the checkpoint's, weights and all exact."""
    items = right_and_wrong_steps("game24", 4)
    theirs = np.array([s for row in LearnedVerifier("game24-prm", batched=False).score_texts(items) for s in row])
    verifier = LearnedVerifier(str(exported["game24-prm"]), batched=False)
    assert verifier.head == LearnedVerifier("game24-prm").head
    ours = np.array([s for row in verifier.score_texts(items) for s in row])
    assert np.abs(ours - theirs).max() < 1e-6
    assert verifier.self_test()["separates_known_example"]
    with pytest.raises(VerifierError, match="declares no `ponder_verifier` head"):
        LearnedVerifier(str(exported["game24-policy"]))  # a policy's file has no head to score with


def test_without_llama_cpp_python_the_benchmark_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    for name in ("ponder.bench.gguf", "ponder.lm.llamacpp"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    result = CliRunner().invoke(app, ["bench", "gguf"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: `ponder bench gguf` needs llama-cpp-python: pip install "
                                     "'ponder[llamacpp]'")


@pytest.mark.slow
def test_a_trained_checkpoint_exports_and_loads(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("kind: sft\ntask: game24\nmodel: {hidden: 64, layers: 2, heads: 2, intermediate: 128, "
                      "max_positions: 96}\ntrain: {steps: 2, batch_size: 4, warmup: 1, bf16: false}\n")
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "sft", str(recipe), "--out", str(tmp_path / "sft"), "--steps", "2"])
    assert trained.exit_code == 0, trained.output
    for outtype in ("f32", "q8_0"):
        result = runner.invoke(app, ["export", str(tmp_path / "sft"), "--gguf", "-o", str(tmp_path / f"{outtype}.gguf"),
                                     "--outtype", outtype])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "q8_0.gguf").stat().st_size < (tmp_path / "f32.gguf").stat().st_size / 2
    prompts = ["Input: 1 2 3 4\n", "Input: 4 5 6 10\n5 * 4 = 20 (left: 6 10 20)\n"]
    theirs = HFBackend(str(tmp_path / "sft")).next_token_logits(prompts)
    ours = llama(tmp_path / "f32.gguf", rows=1).next_token_logits(prompts)
    assert (ours - theirs).abs().max() < 1e-3  # its shape (head_dim 32, 2 layers) runs with its logits


def test_grouped_query_attention_and_a_separate_output_matrix_export_too(tmp_path):
    """Q/K reordering with fewer key-value heads than query heads (K by its own head count), an untied LM head,
    head_dim 16; the file goes into a directory given as -o."""
    torch.manual_seed(0)  # weights at 5x the usual scale: leaving out the reordering, or reordering K by the query
    # heads, moves these logits by about 2; llama.cpp's float16 key-value cache by about 2e-3
    LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 initializer_range=0.1, tie_word_embeddings=False)).save_pretrained(tmp_path / "gqa")
    char_tokenizer().save_pretrained(tmp_path / "gqa")
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "gqa"), "--gguf", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    prompts = ["Input: 1 2 3 4\n", "Question: Ann has 3 apples.\n"]
    theirs = HFBackend(str(tmp_path / "gqa")).next_token_logits(prompts)
    ours = llama(tmp_path / "out" / "gqa-f32.gguf", rows=1).next_token_logits(prompts)
    assert (ours - theirs).abs().max() < 2e-2 and (theirs[0] - theirs[1]).abs().max() > 1


def not_a_character_tokenizer(path: Path) -> Path:
    """A Llama causal LM whose tokenizer has tokens of several characters."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "ab": 3, "c": 4}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    LlamaForCausalLM(LlamaConfig(vocab_size=5, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["game24-orm", "--gguf"], "game24-orm is a LlamaForSequenceClassification (llama); GGUF export takes a Llama "
                               "causal LM"),
    (["{tmp}/bpe", "--gguf"], "bpe's tokenizer is not Ponder's character tokenizer"),
    (["{tmp}/model.gguf", "--gguf"], "is a GGUF file already"),
    (["game24-policy"], "choose the format to export: --gguf"),
    (["game24-policy", "--gguf", "--outtype", "q4_0"], "unknown outtype 'q4_0'; choose from f32, f16, bf16, q8_0"),
    (["no-such-model", "--gguf"], "model 'no-such-model' is not a shipped model"),
], ids=["orm", "tokenizer", "gguf", "no-format", "outtype", "missing"])
def test_what_cannot_be_exported_is_one_line_and_exit_code_2(tmp_path, args, message):
    not_a_character_tokenizer(tmp_path / "bpe")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    result = CliRunner().invoke(app, ["export", *(a.format(tmp=tmp_path) for a in args), "-o",
                                      str(tmp_path / "out.gguf")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out.gguf").exists()


def test_outtypes_shrink_the_file_and_keep_its_vocabulary(tmp_path):
    sizes = {t: export_gguf("game24-policy", tmp_path / f"{t}.gguf", t).bytes for t in ("f32", "bf16", "f16", "q8_0")}
    assert sizes["q8_0"] < sizes["f16"] == sizes["bf16"] < sizes["f32"]
    stored = load_tokenizer(tmp_path, "q8_0.gguf")  # the tokenizer the file carries for transformers
    text = "Input: 4 5 6 10\n10 - 4 = 6 (left: 5 6 6)\n"
    assert stored(text).input_ids == HFBackend("game24-policy").encode(text)


@pytest.mark.slow
def test_the_benchmark_counts_equal_texts_and_score_differences_per_outtype():
    result = CliRunner().invoke(app, ["bench", "gguf", "arith-policy", "--prm", "arith-prm", "--task", "arith",
                                      "--prompts", "4", "--outtypes", "f32,q8_0"])
    assert result.exit_code == 0, result.output
    assert "arith-policy" in result.stdout and "q8_0" in result.stdout and "f32 cache" in result.stdout
    f32 = next(line for line in result.stdout.splitlines() if "arith-policy" in line and "f32" in line)
    assert f32.replace("│", " ").split()[-2:] == ["4", "4"], f32  # the exact export: every greedy text the same
