from __future__ import annotations

import json
import random
from itertools import islice

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ponder.collect.records import StepRecord, write_jsonl
from ponder.lm.base import Request
from ponder.lm.hf import HFBackend
from ponder.tasks import TaskError, get_task
from ponder.train.loop import TrainConfig
from ponder.train.sft import WIDTH_STEP, ModelShape, SFTRecipe, batches, move_pairs, train_sft
from ponder.train.tokenizer import char_tokenizer


def test_sft_saves_a_loadable_llama_with_its_tokenizer(tmp_path):
    recipe = SFTRecipe(name="tiny", task="game24", model=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
                       train=TrainConfig(steps=3, batch_size=4, warmup=1, bf16=False))
    summary = train_sft(recipe, tmp_path)
    assert summary["steps"] == 3 and summary["final_loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(model, LlamaForCausalLM)
    text = "Input: 4 5 6 10\n10 - 4 = 6 (left: 5 6 6)\n"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert json.loads((tmp_path / "training.json").read_text())["recipe"] == "tiny"
    out = HFBackend(str(tmp_path)).generate_batch([Request("Input: 1 2 3 4\n")])
    assert out[0].generated_tokens > 0


def test_shipped_recipes_load_and_bad_ones_fail_clearly(tmp_path):
    assert SFTRecipe.load("game24-policy").task == "game24"
    arith = get_task("arith")  # the longest test problem and its solution fit the arith policy's window
    longest = max(len(arith.prompt(p) + arith.join_steps(arith.reference_solution(p))) for p in arith.problems())
    assert SFTRecipe.load("arith-policy").model.max_positions >= longest + 2
    assert SFTRecipe.load("game24-prm-base").data.endswith("records.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: game24\nmodel: {hidden: [}\n")
    with pytest.raises(TaskError, match="malformed"):
        SFTRecipe.load(str(bad))
    with pytest.raises(TaskError, match="unknown recipe"):
        SFTRecipe.load("nope")


def test_an_untrained_model_gives_garbage_that_is_graded_wrong_not_raised(tmp_path):
    """A 3-step model writes noise that never reaches end-of-sequence: every row is graded, none raises."""
    from ponder.evaluate import EvalConfig, run_eval

    recipe = SFTRecipe(name="noise", task="arith", model=ModelShape(hidden=32, layers=1, heads=2, intermediate=64,
                                                                     max_positions=640),
                       train=TrainConfig(steps=1, batch_size=2, warmup=1, bf16=False))
    train_sft(recipe, tmp_path / "model")
    table = run_eval(EvalConfig(task="arith", limit=4, model=str(tmp_path / "model"), budgets=[3], max_tokens=50,
                                methods=["cot", "self_consistency", "best_of_n"]),
                     tmp_path / "eval", show_progress=False)
    assert [row["accuracy"] for row in table] == [0.0, 0.0, 0.0]
    assert all(row["generated_tokens"] > 0 for row in table)
    graded = json.loads((tmp_path / "eval" / "summary-by-difficulty.json").read_text())  # 4 problems: 2-5 ops
    assert [(r["method"], r["difficulty"], r["problems"]) for r in graded][:4] == [("cot", d, 1) for d in range(2, 6)]


def test_move_drill_trains_on_every_correct_move_from_the_states_of_correct_prefixes(tmp_path):
    task = get_task("game24")
    problem = task.problem("1 3 4 6", id="p")
    right, slip = "6 * 4 = 24 (left: 1 3 24)", "3 + 1 = 5 (left: 5 24)"
    assert slip in task.step_candidates(problem, [right])  # a walk's slip, as `collect states` writes them
    records = [StepRecord(problem.question, [right, slip, "24 * 5 = 120 (left: 120)"], [0, 0, 0], task="game24",
                          problem_id="p")]
    pairs = move_pairs(task, records)
    prompts = {prompt for prompt, _ in pairs}
    assert prompts == {"Input: 1 3 4 6\n", f"Input: 1 3 4 6\n{right}\n"}  # nothing from after the slip
    assert (f"Input: 1 3 4 6\n{right}\n", "3 - 1 = 2 (left: 2 24)") in pairs  # a dead end is still right arithmetic
    for prompt, move in pairs:
        prefix = prompt.splitlines()[1:]
        assert task._replay(problem, [*prefix, move]) is not None
    assert len(pairs) == len(task.moves(problem, [])) + len(task.moves(problem, [right]))
    assert task.moves(problem, [slip]) == []
    with pytest.raises(TaskError, match="task 'gsm8k' has no exact step oracle"):  # no moves to drill
        move_pairs(get_task("gsm8k"), [StepRecord("1 3 4 6", [right], [1], task="gsm8k", problem_id="a")])

    data = tmp_path / "records.jsonl"
    write_jsonl([r.to_dict() for r in records], data)
    recipe = SFTRecipe(name="drill", task="game24", data=str(data),
                       model=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
                       train=TrainConfig(steps=2, batch_size=4, warmup=1, bf16=False))
    summary = train_sft(recipe, tmp_path / "out")
    assert summary["config"]["data"] == str(data)
    assert "every correct move from the states in" in (tmp_path / "out" / "README.md").read_text()


def test_sft_killed_with_sigkill_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path, kill_then_resume):
    """The training state is saved every `save_every` seconds; the same command resumes from it and ends with the
    same weights, byte for byte, as a run that was never interrupted."""
    import subprocess
    import sys

    import torch

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("kind: sft\ntask: game24\nwalk: moves\n"
                      "model: {hidden: 32, layers: 1, heads: 2, intermediate: 64, max_positions: 192}\n"
                      "train: {steps: 150, batch_size: 8, lr: 2.0e-3, warmup: 5, seed: 3, bf16: false,"
                      " save_every: 0}\n")
    whole, killed = kill_then_resume(["train", "sft", str(recipe)], tmp_path, 150)
    assert (killed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    assert json.loads((killed / "training.json").read_text())["steps"] == 150
    card = (killed / "README.md").read_text()  # a recipe file, not a shipped one: the card names the file
    assert f"Recipe: `{recipe}`" in card and f"`ponder train sft {recipe} --out {killed}`" in card

    # a state left by another recipe or step count is refused, not silently mixed in
    torch.save({"run": {"run": {}, "steps": 1}}, killed / "train-state.pt")
    bad = subprocess.run([sys.executable, "-c", "from ponder.cli import app; app()", "train", "sft", str(recipe),
                          "--out", str(killed)], capture_output=True, text=True)
    assert bad.returncode == 2 and "holds a run of another recipe" in bad.stderr


@pytest.mark.slow
def test_a_policy_trained_by_a_tiny_recipe_writes_well_formed_steps(tmp_path):
    """A 2-layer model trained for a few hundred steps on move walks proposes steps in the task's format: two
    numbers, an operation, a result and the numbers left (right or not: the format is what is learnt first)."""
    import asyncio
    import re

    from ponder.lm.hf import Direct
    from ponder.search.base import SearchConfig, sample_steps

    recipe = SFTRecipe(name="tiny", task="game24", walk="moves",
                       model=ModelShape(hidden=64, layers=2, heads=2, intermediate=128),
                       train=TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup=10, bf16=False))
    train_sft(recipe, tmp_path)
    task = get_task("game24")
    lm = Direct(HFBackend(str(tmp_path)))
    cfg = SearchConfig(max_tokens=48)

    async def propose() -> list[str]:
        steps = []
        for problem in task.problems("test", limit=6):
            steps += await sample_steps(task, problem, lm, cfg, [], 8, 0.8, "format")
        return steps

    steps = asyncio.run(propose())
    number = r"\d+(?:/\d+)?"
    form = re.compile(rf"^{number} [-+*/] {number} = {number} \(left:( {number})+\)$")
    assert sum(bool(form.match(s)) for s in steps) / len(steps) >= 0.9, steps


@pytest.mark.slow
def test_sft_bench_times_every_setting_on_the_same_batches():
    from ponder.bench.sft import sft_throughput

    recipe = SFTRecipe(name="tiny", task="game24", model=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
                       train=TrainConfig(steps=4, batch_size=4, warmup=1, bf16=False))
    result = sft_throughput(recipe, steps=4, warmup=1, rounds=2, settings={
        "before": {"bf16": False}, "eager + compile": {"attention": "eager", "compile": True}})
    first, second = result["rows"]
    assert first["vs_before"] == 1.0 and second["compile"] and second["attention"] == "eager"
    assert all(row["tokens_per_s"] > 0 and row["forward_ms"] > 0 for row in result["rows"])
    # same weights, same batches: the settings differ only in floating-point order
    assert second["final_loss"] == pytest.approx(first["final_loss"], rel=1e-3)


def test_batches_come_in_few_widths_and_pad_outside_the_loss():
    tok = char_tokenizer()
    examples = iter([("Input: 1 2 3 4\n", "x" * random.Random(k).randrange(1, 200)) for k in range(10_000)])
    drawn = list(islice(batches(examples, tok, 8, 256, random.Random(0)), 40))
    widths = {b["input_ids"].shape[1] for b in drawn}
    assert widths <= {*range(WIDTH_STEP, 256, WIDTH_STEP), 256} and len(widths) > 1
    for b in drawn:
        pad = b["attention_mask"] == 0
        assert pad.any() and (b["labels"][pad] == -100).all() and (b["input_ids"][pad] == tok.pad_token_id).all()
        assert (b["labels"][~pad] != -100).sum() > 0
