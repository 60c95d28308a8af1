"""GRPO through TRL: the outcome reward is the exact grader, the process reward is a PRM's aggregated step
scores in [0, 1], a short run saves a policy that Ponder loads, and bad recipes fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ponder.collect.run import CollectConfig, run_collect
from ponder.lm.base import Request, SamplingParams
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend, resolve_model
from ponder.tasks import TaskError, get_task
from ponder.train.grpo import (
    SECONDS_FILE,
    STATE_DIR,
    GRPORecipe,
    OutcomeReward,
    build_dataset,
    reward_functions,
    train_grpo,
)
from ponder.train.loop import TrainConfig
from ponder.train.verifier import VerifierRecipe, train_verifier
from ponder.verifiers.learned import HeadSpec


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On two cores shared with other jobs, two OpenMP threads wait on each other at every op (one run took
    over 14 minutes for 43 CPU seconds); one thread keeps these small runs fast. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def game24():
    task = get_task("game24")
    _, problems = build_dataset(task, "train")
    return task, problems


def columns(problem) -> dict[str, list[str]]:
    return {"problem_id": [problem.id], "question": [problem.question]}


def test_outcome_reward_is_the_exact_grader(game24):
    task, problems = game24
    problem = next(p for p in problems.values() if task.reference_solution(p))
    reward = OutcomeReward(task, problems)
    right = task.join_steps(task.reference_solution(problem)[:-1])  # steps only, as the policy writes them
    wrong = right.replace("=", "+", 1)
    prompt = [task.prompt(problem)]
    assert reward(prompt, [right], **columns(problem)) == [1.0]
    assert reward(prompt, [wrong], **columns(problem)) == [0.0]
    assert reward(prompt, ["(((*/ ))) = 24\n__import__('os')\n"], **columns(problem)) == [0.0]
    assert reward(prompt, [""], **columns(problem)) == [0.0]


def test_outcome_reward_of_a_stream_of_search_is_the_grade_of_the_path_it_ends_on(game24):
    task, problems = game24
    problem = task.rebuild("game24-stream", "4 5 6 10")
    reward = OutcomeReward(task, problems)
    dead = ["10 + 5 = 15 (left: 4 6 15)", "15 + 4 = 19 (left: 6 19)", "back (left: 4 5 6 10)"]
    right = ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]
    false_finish = ["10 - 4 = 6 (left: 5 6 6)", "6 + 5 = 11 (left: 6 11)", "11 + 6 = 24 (left: 24)"]
    lost = ["10 + 5 = 15 (left: 4 6 15)", "back (left: 1 2 3)", *right]
    completions = [task.join_steps(dead + s) for s in (right, false_finish)] + [task.join_steps(lost)]
    assert reward([task.prompt(problem)] * 3, completions, **{k: v * 3 for k, v in columns(problem).items()}) == [
        1.0, 0.0, 0.0]


def test_outcome_reward_finds_arith_problems_by_id():
    task = get_task("arith")
    data, problems = build_dataset(task, "train")
    assert data[3]["problem_id"] == "arith-train-3"
    problem = problems["arith-train-3"]
    reward = OutcomeReward(task, problems)
    right = task.join_steps(task.reference_solution(problem))
    assert reward([task.prompt(problem)], [right, "Answer: -1\n"], problem_id=[problem.id] * 2,
                  question=[problem.question] * 2) == [1.0, 0.0]


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory, game24_backend) -> Path:
    records = tmp_path_factory.mktemp("records")
    run_collect(CollectConfig(labeller="oracle", task="game24", limit=4, samples=2), records,
                lm=Engine(game24_backend), show_progress=False)
    out = tmp_path_factory.mktemp("prm")
    recipe = VerifierRecipe(name="test-prm", task="game24", head=HeadSpec(kind="step_tag", marker=" ки"),
                            labels="hard", train=TrainConfig(steps=5, batch_size=4, warmup=1, lr=1e-3, bf16=False))
    train_verifier(recipe, out, data=str(records / "records.jsonl"))
    return out


def test_process_reward_is_in_unit_range_and_weighted_after_the_outcome(game24, tiny_prm):
    task, problems = game24
    problem = next(p for p in problems.values() if task.reference_solution(p))
    right = task.join_steps(task.reference_solution(problem)[:-1])
    completions = [right, right.replace("=", "+", 1), "garbage", ""]
    prompts = [task.prompt(problem)] * len(completions)
    cols = {"problem_id": [problem.id] * len(completions), "question": [problem.question] * len(completions)}

    outcome_only, only_weights = reward_functions(GRPORecipe(name="o", task="game24"), task, problems)
    assert [f.__name__ for f in outcome_only] == ["outcome"] and only_weights == [1.0]
    recipe = GRPORecipe(name="p", task="game24", reward="outcome+process", prm=str(tiny_prm), process_weight=0.5)
    funcs, weights = reward_functions(recipe, task, problems)
    assert [f.__name__ for f in funcs] == ["outcome", "process"] and weights == [1.0, 0.5]
    assert funcs[0](prompts=prompts, completions=completions, **cols) == [1.0, 0.0, 0.0, 0.0]
    process = funcs[1](prompts=prompts, completions=completions, **cols)
    assert all(0.0 <= r <= 1.0 for r in process)
    assert process[3] == 0.0  # no steps, nothing to score

    # a stream of search is judged as the path it ends on: its dead end and back step carry no weight
    stream_problem = task.rebuild("game24-stream", "4 5 6 10")
    dead = ["10 + 5 = 15 (left: 4 6 15)", "15 + 4 = 19 (left: 6 19)", "back (left: 4 5 6 10)"]
    right = ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]
    stream, path = funcs[1]([task.prompt(stream_problem)] * 2, [task.join_steps(dead + right), task.join_steps(right)],
                            **{k: v * 2 for k, v in columns(stream_problem).items()})
    assert stream == path


@pytest.mark.slow
def test_two_grpo_steps_weigh_the_rewards_and_save_a_policy_that_loads_and_generates(tmp_path, tiny_prm):
    recipe = GRPORecipe(name="test-grpo", task="game24", num_generations=2, max_completion_length=48,
                        reward="outcome+process", prm=str(tiny_prm), process_weight=0.5,
                        train=TrainConfig(steps=2, batch_size=4, lr=1e-5, warmup=1, weight_decay=0.0, bf16=False))
    summary = train_grpo(recipe, tmp_path)
    assert summary["steps"] == 2 and summary["reward_start"] is not None
    for row in summary["log"]:  # the reward training optimised: the outcome plus half the process reward
        assert row["reward"] == pytest.approx(row["rewards/outcome/mean"] + 0.5 * row["rewards/process/mean"],
                                              abs=1e-5)
    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["config"]["kind"] == "grpo" and (tmp_path / "recipe.yaml").is_file()
    backend = HFBackend(str(tmp_path))
    assert backend.model.config.use_cache  # the Trainer switches it off; the saved policy must have it back
    out = backend.generate_batch([Request("Input: 4 5 6 10\n", SamplingParams(max_tokens=40))])
    assert out[0].generated_tokens > 0 and out[0].text.strip()


@pytest.mark.slow
def test_grpo_killed_with_sigkill_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path, kill_then_resume):
    """The Trainer's whole state is saved every `save_every` seconds; the same command resumes from the newest
    checkpoint and ends with the same weights, byte for byte, as a run that was never interrupted (sampling,
    rewards and updates all replayed), with the whole run's log; a state left by another recipe is refused."""
    import subprocess
    import sys

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("kind: grpo\ntask: game24\nnum_generations: 2\nmax_completion_length: 80\n"
                      "train: {steps: 6, batch_size: 4, lr: 1.0e-5, warmup: 1, seed: 3, bf16: false, save_every: 0}\n")

    def saved_step(out: Path) -> int | None:
        steps = [int(d.name.split("-")[1]) for d in (out / STATE_DIR).glob("checkpoint-*")
                 if (d / SECONDS_FILE).is_file()]
        return max(steps, default=None)

    whole, killed = kill_then_resume(["train", "grpo", str(recipe)], tmp_path, 6, saved_step, STATE_DIR)
    start = load_file(str(Path(resolve_model("game24-policy")[0]) / "model.safetensors"))
    trained = load_file(str(whole / "model.safetensors"))
    assert any(not torch.equal(start[k], trained[k]) for k in start)  # the updates moved the policy
    assert (killed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    logs = [json.loads((out / "training.json").read_text())["log"] for out in (whole, killed)]
    assert [row["step"] for row in logs[1]] == [1, 2, 3, 4, 5, 6]
    assert [row["reward"] for row in logs[1]] == [row["reward"] for row in logs[0]]
    card = (killed / "README.md").read_text()
    assert f"Recipe: `{recipe}`" in card and f"`ponder train grpo {recipe} --out {killed}`" in card

    (killed / STATE_DIR).mkdir()
    (killed / STATE_DIR / "run.json").write_text(json.dumps({"run": {}, "steps": 1}))
    bad = subprocess.run([sys.executable, "-c", "from ponder.cli import app; app()", "train", "grpo", str(recipe),
                          "--out", str(killed)], capture_output=True, text=True)
    assert bad.returncode == 2 and "holds a run of another recipe" in bad.stderr


@pytest.mark.parametrize("text, message", [
    ("task: game24\nkind: grpo\nreward: outcome\nbogus_knob: 1\n", "malformed"),
    ("task: game24\nkind: grpo\nreward: vibes\n", "unknown reward"),
    ("task: game24\nkind: grpo\nreward: outcome+process\n", "needs a `prm:`"),
    ("task: game24\nkind: grpo\nnum_generations: 8\ntrain: {batch_size: 12}\n", "multiple of num_generations"),
    ("task: game24\nkind: grpo\naggregate: median\n", "unknown aggregate"),
    ("task: game24\nkind: sft\n", "kind must be grpo"),
    ("task: game24\nkind: grpo\ntrain: [1, 2]\n", "malformed"),
    ("task: game24\nkind: grpo\nnum_generations: lots\n", "malformed"),
])
def test_malformed_recipes_fail_clearly(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskError, match=message):
        GRPORecipe.load(str(path))


def test_shipped_grpo_recipes_load():
    outcome, process = GRPORecipe.load("game24-grpo"), GRPORecipe.load("game24-grpo-process")
    assert outcome.reward == "outcome" and process.reward == "outcome+process" and process.prm == "game24-prm"
    assert outcome.train.steps == process.train.steps and outcome.num_generations == process.num_generations
