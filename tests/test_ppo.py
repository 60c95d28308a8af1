"""PPO with a critic: GAE and the clipped objectives against hand computations, steps cut into actions, KL 0 before
the first update, the reward rising to a known optimum, the value loss falling, resuming after SIGKILL to the same
weights, and the critic loading as a search verifier."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from ponder.bench.ppo import PPOBenchConfig, ppo_benchmark, rejection_sampling_finetune
from ponder.errors import ConfigError
from ponder.evaluate.runner import EvalConfig, run_eval
from ponder.tasks import TaskError, get_task
from ponder.train.loop import STATE_FILE
from ponder.train.ppo import (
    PPO,
    Episode,
    PPORecipe,
    clipped_surrogate,
    clipped_value_loss,
    cut_actions,
    gae,
    load_policy,
    train_ppo,
)
from ponder.train.sft import ModelShape, new_model
from ponder.train.tokenizer import char_tokenizer
from ponder.verifiers import get_verifier
from ponder.verifiers.learned import LearnedVerifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: small runs on two shared cores are faster so, and a resumed run must sum in the same order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    """A freshly initialised one-layer policy with the character tokenizer, saved as a checkpoint."""
    tok = char_tokenizer()
    torch.manual_seed(0)
    model = new_model(ModelShape(hidden=32, layers=1, heads=2, intermediate=64, max_positions=64), tok)
    out = tmp_path_factory.mktemp("tiny-policy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def share_of_sevens(episodes: list[Episode]) -> None:
    """A task whose optimum is known: the reward is the share of the completion's characters that are `7` (1 for a
    policy that writes only sevens), given at the last action."""
    tok = char_tokenizer()
    for e in episodes:
        text = tok.decode(e.completion_ids, skip_special_tokens=True)
        e.rewards = [0.0] * len(e.actions)
        e.rewards[-1] = text.count("7") / max(1, len(text))
        e.solved = text == "7" * len(text) and bool(text)


def tiny_recipe(policy: Path, **knobs) -> PPORecipe:
    train = {"steps": 40, "batch_size": 16, "lr": 1e-2, "warmup": 0, "weight_decay": 0.0, "seed": 0,
             "bf16": False, "init": str(policy), "save_every": 300.0, **knobs.pop("train", {})}
    recipe = PPORecipe(name="tiny", task="game24", beta=0.0, max_completion_length=4, critic_lr=1e-2,
                       num_mini_batches=2, ppo_epochs=2, **knobs)
    return replace(recipe, train=replace(recipe.train, **train))


def test_gae_on_a_toy_episode_matches_a_hand_computation():
    adv, ret = gae([0.0, 0.5, 1.0], [0.2, 0.4, 0.6], gamma=0.9, lam=0.8)
    # delta_2 = 1 - 0.6 = 0.4; delta_1 = 0.5 + 0.9 x 0.6 - 0.4 = 0.64; delta_0 = 0.9 x 0.4 - 0.2 = 0.16
    # A_2 = 0.4; A_1 = 0.64 + 0.72 x 0.4 = 0.928; A_0 = 0.16 + 0.72 x 0.928 = 0.82816
    assert adv == pytest.approx([0.82816, 0.928, 0.4])
    assert ret == pytest.approx([1.02816, 1.328, 1.0])
    # gamma = lambda = 1: the Monte Carlo return less the value
    adv, ret = gae([0.0, 0.5, 1.0], [0.2, 0.4, 0.6], gamma=1.0, lam=1.0)
    assert adv == pytest.approx([1.3, 1.1, 0.4]) and ret == pytest.approx([1.5, 1.5, 1.0])


def test_clipped_objectives_match_a_hand_computation():
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5, 9.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last token is padding
    loss, clipfrac = clipped_surrogate(ratios.log(), torch.zeros_like(ratios), adv, mask, cliprange=0.2)
    # per token -min(rA, clip(r, 0.8, 1.2)A): -1.2, -0.5, 0.8, 1.5; the clip decides the first and the third
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5) / 4)
    assert float(clipfrac) == pytest.approx(0.5)
    values, old = torch.tensor([[1.0, 0.0, 0.9]]), torch.tensor([[0.5, 0.5, 0.5]])
    returns, states = torch.tensor([[0.0, 1.0, 1.0]]), torch.ones((1, 3))
    # 0.5 x max((V - R)^2, (V_old + clip(V - V_old, -0.2, 0.2) - R)^2): max(1, 0.49), max(1, 0.09), max(0.01, 0.09)
    assert float(clipped_value_loss(values, old, returns, states, 0.2)) == pytest.approx(0.5 * (1 + 1 + 0.09) / 3)


def test_a_completion_is_cut_into_its_steps_and_the_end():
    tok = char_tokenizer()
    ids = [*tok("4 + 8 = 12 (left: 1 12)\n12 * 2 = 24\n", add_special_tokens=False).input_ids, tok.eos_token_id]
    actions, steps, stopped = cut_actions(tok, ids)
    assert steps == ["4 + 8 = 12 (left: 1 12)", "12 * 2 = 24"] and stopped
    assert [tok.decode(ids[a:b]) for a, b in actions[:2]] == ["4 + 8 = 12 (left: 1 12)", "\n12 * 2 = 24"]
    assert actions[-1] == (actions[1][1], len(ids))  # the trailing newline joins the end-of-text
    cut_off = tok("4 + 8 = 12\n\n12 *", add_special_tokens=False).input_ids
    actions, steps, stopped = cut_actions(tok, cut_off)
    assert steps == ["4 + 8 = 12", "12 *"] and not stopped and actions[-1][1] == len(cut_off)


def test_ppo_raises_the_reward_to_a_known_optimum_with_kl_zero_before_the_first_update(tiny_policy, tmp_path):
    summary = train_ppo(tiny_recipe(tiny_policy), tmp_path / "out", rewards=share_of_sevens)
    log = summary["log"]
    assert log[0]["kl"] == 0.0  # the policy is the reference until it is first updated
    assert 0.0 <= log[0]["stopped"] <= 1.0
    assert any(row["kl"] != 0.0 for row in log[1:])
    first, last = (sum(row["reward"] for row in rows) / len(rows) for rows in (log[:3], log[-3:]))
    assert first < 0.1 and last > 0.9, (first, last)  # from about 1/100 to the optimum, 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert "ponder train ppo tiny" in card and (tmp_path / "out" / "training.json").is_file()


def test_the_value_loss_falls_on_a_batch_of_rollouts(tiny_policy):
    recipe = tiny_recipe(tiny_policy)
    policy, tok = load_policy(str(tiny_policy))
    ppo = PPO(recipe, policy, tok, get_task("game24"), rewards=share_of_sevens)
    torch.manual_seed(0)
    episodes = ppo.rollouts(get_task("game24").problems("train", limit=16))
    for e in episodes:  # a return the critic can read from the prompt: whether the puzzle's first number is even
        e.rewards[-1] = float(int(e.problem.question.split()[0]) % 2 == 0)
    assert 0 < sum(e.rewards[-1] for e in episodes) < 16
    losses = []
    for i in range(12):  # as across iterations: the old values are the critic's latest
        batch, _ = ppo.batch(episodes)
        losses.append(ppo.update(batch, torch.Generator().manual_seed(i))["value_loss"])
    assert max(losses[-3:]) < 0.5 * losses[0], losses


def run_ppo(recipe: Path, out: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from ponder.train.ppo import PPORecipe, train_ppo
        from tests.test_ppo import share_of_sevens
        torch.set_num_threads(1)
        train_ppo(PPORecipe.load({str(recipe)!r}), Path({str(out)!r}), rewards=share_of_sevens)
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def test_a_run_killed_part_way_resumes_to_the_same_weights(tiny_policy, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(textwrap.dedent(f"""
        kind: ppo
        task: game24
        beta: 0.05
        max_completion_length: 4
        critic_lr: 1.0e-2
        num_mini_batches: 2
        ppo_epochs: 2
        train: {{steps: 8, batch_size: 16, lr: 3.0e-3, warmup: 0, seed: 1, bf16: false, init: {tiny_policy},
                save_every: 0}}
    """))
    killed = tmp_path / "killed"
    proc = run_ppo(recipe, killed)
    while proc.poll() is None:
        state = killed / STATE_FILE
        if state.is_file() and torch.load(state, weights_only=False)["step"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(killed / STATE_FILE, weights_only=False)["step"]
    assert 2 <= saved < 8
    resumed = train_ppo(PPORecipe.load(str(recipe)), killed, rewards=share_of_sevens)
    whole = train_ppo(PPORecipe.load(str(recipe)), tmp_path / "whole", rewards=share_of_sevens)
    drop = ("seconds",)
    assert [{k: v for k, v in row.items() if k not in drop} for row in resumed["log"]] == whole["log"]
    for name in ("model.safetensors", "value_head.safetensors"):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (killed / STATE_FILE).exists()


def test_the_critic_loads_as_a_verifier_and_scores_each_step_by_its_value(tiny_policy, tmp_path):
    out = tmp_path / "ppo"
    train_ppo(tiny_recipe(tiny_policy, train={"steps": 3}), out, rewards=share_of_sevens)
    verifier = get_verifier(str(out))
    assert isinstance(verifier, LearnedVerifier) and verifier.head.kind == "critic"
    assert json.loads((out / "config.json").read_text())["ponder_verifier"]["kind"] == "critic"
    task = get_task("game24")
    problem = task.problems("test", limit=1)[0]
    steps = ["7 * 7 = 49", "77 - 7 = 70"]
    scores = verifier.score_texts([(task.prompt(problem), steps)])[0]
    # by hand: the saved policy and head, the value read at the last character of each step
    policy, tok = load_policy(str(out))
    text = task.prompt(problem) + steps[0]
    ends = [len(text) - 1, len(text) + 1 + len(steps[1]) - 1]
    ids = torch.tensor([tok(text + "\n" + steps[1] + "\n", add_special_tokens=False).input_ids])
    with torch.no_grad():
        values = verifier.model.value_head(policy.base_model(input_ids=ids).last_hidden_state)[0, :, 0]
    assert scores == pytest.approx(values[ends].clamp(0, 1).tolist(), abs=1e-5)
    assert any(0.0 < s < 1.0 for s in scores)  # a trained value, not a clamped constant
    assert verifier.self_test()["kind"] == "critic"
    # one network proposes and evaluates: the directory is the policy and the verifier of a step-level search
    search = EvalConfig(task="game24", split="test", limit=2, model=str(out), methods=["tot_bfs"], budgets=[2],
                        verifier=str(out), max_tokens=24, seed=0)
    row = run_eval(search, tmp_path / "eval", show_progress=False)[0]
    assert row["errors"] == 0 and row["verifier_calls"] > 0


def test_a_critic_started_from_a_prm_values_each_state_as_the_prm_scores_it_and_is_saved_as_one(tmp_path):
    task = get_task("game24")
    recipe = PPORecipe(name="prm-critic", task="game24", critic="game24-prm", critic_lr=1e-4,
                       max_completion_length=48, num_mini_batches=2, ppo_epochs=1)
    recipe = replace(recipe, train=replace(recipe.train, steps=2, batch_size=8, lr=1e-5, warmup=0, seed=0,
                                           bf16=False, init="game24-policy"))
    policy, tok = load_policy("game24-policy")
    ppo = PPO(recipe, policy, tok, task)
    torch.manual_seed(0)
    episodes = ppo.rollouts(task.problems("train", limit=8))
    batch, _ = ppo.batch(episodes)
    prm = get_verifier("game24-prm")
    for i, e in enumerate(episodes):
        n = len(e.actions)
        scores = prm.score_texts([(task.prompt(e.problem), e.steps)])[0]
        # the state before action k >= 1 ends with step k: the PRM's score of that step
        assert batch.old_values[i, 1:n].tolist() == pytest.approx(scores[: n - 1], abs=1e-4)
        assert 0.0 < batch.old_values[i, 0] < 1.0 and not batch.old_values[i, n:].any()
    assert any(0.1 < s < 0.9 for row in batch.old_values.tolist() for s in row)  # it judges, not a constant
    out = tmp_path / "ppo"
    train_ppo(recipe, out)
    critic = get_verifier(str(out / "critic"))
    assert isinstance(critic, LearnedVerifier) and critic.head == prm.head
    assert "ponder_verifier" not in json.loads((out / "config.json").read_text())  # the policy is only a policy
    assert f"--verifier {out / 'critic'}" in (out / "README.md").read_text()
    problem = task.problems("test", limit=1)[0]
    steps = ["4 + 9 = 13 (left: 10 10 13)"]
    before, after = (v.score_texts([(task.prompt(problem), steps)])[0][0] for v in (prm, critic))
    assert before != after and abs(before - after) < 0.2  # trained a little, from the PRM


def test_shipped_ppo_recipe_loads_and_bad_recipes_fail_clearly(tmp_path):
    recipe = PPORecipe.load("game24-ppo")
    assert recipe.reward == "outcome+process" and recipe.train.init == "game24-policy"
    for text, message in [("kind: grpo\ntask: game24\n", "kind must be ppo"),
                          ("kind: ppo\ntask: game24\nlam: 2\n", "lam"),
                          ("kind: ppo\ntask: game24\nreward: outcome+process\n", "needs a `prm:`"),
                          ("kind: ppo\ntask: game24\nmax_completion_length: 0\n", "at least 1"),
                          ("kind: ppo\ntask: game24\nclip: 0.2\n", "malformed"),
                          ("kind: ppo\ntask: game24\nsplit: test\n", "never trains on the test split"),
                          ("kind: ppo\ntask: game24\nsplit: dreams\n", "synthetic"),
                          # a critic or PRM must name a learned verifier, found before any model loads
                          ("kind: ppo\ntask: game24\ncritic: nosuch-prm\n", "critic: unknown verifier 'nosuch-prm'"),
                          ("kind: ppo\ntask: game24\ncritic: oracle\n", "critic 'oracle' is not a learned"),
                          ("kind: ppo\ntask: game24\nreward: outcome+process\nprm: nosuch\n", "prm: unknown")]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(TaskError, match=message):
            PPORecipe.load(str(path))


def test_rejection_sampling_keeps_only_what_the_answer_check_accepts_and_trains_on_it(tmp_path):
    recipe = PPORecipe.load("game24-ppo")
    recipe = replace(recipe, train=replace(recipe.train, batch_size=8))
    summary = rejection_sampling_finetune(recipe, steps=1, epochs=2, lr=5e-5, out_dir=tmp_path / "rft")
    assert summary["samples"] == 8 and 0 < summary["kept"] <= 8  # the policy solves most training puzzles
    assert summary["steps"] == -(-2 * summary["kept"] // 8)
    policy, _ = load_policy(str(tmp_path / "rft"))
    assert policy.config.vocab_size > 0 and (tmp_path / "rft" / "recipe.yaml").is_file()


@pytest.mark.parametrize("knob", [{"seeds": 0}, {"problems": 0}, {"budget": 0}, {"steps": -1}])
def test_the_benchmark_refuses_settings_it_cannot_measure_before_training(knob, tmp_path):
    with pytest.raises(ConfigError, match="bench ppo needs"):
        ppo_benchmark(PPOBenchConfig(**knob), tmp_path / "bench")
    assert not (tmp_path / "bench").exists()


def test_the_benchmark_trains_on_the_split_named_and_refuses_to_reuse_models_trained_otherwise(tmp_path):
    recipe = PPORecipe.load("game24-ppo")
    recipe = replace(recipe, split="synthetic", train=replace(recipe.train, batch_size=8))
    summary = rejection_sampling_finetune(recipe, steps=1, epochs=1, lr=5e-5, out_dir=tmp_path / "rft")
    assert summary["samples"] == 8  # drawn from the synthetic puzzles (`batch_problems` over recipe.split)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "config.json").write_text(json.dumps({**asdict(PPOBenchConfig()), "steps": 20}))
    with pytest.raises(ConfigError, match="split"):
        ppo_benchmark(PPOBenchConfig(split="synthetic"), tmp_path / "bench")
    with pytest.raises(ConfigError, match="'ppo'"):  # another PPO recipe makes other models
        ppo_benchmark(PPOBenchConfig(steps=20, ppo="game24-ppo-prm-critic"), tmp_path / "bench")
    (tmp_path / "arith-ppo.yaml").write_text("kind: ppo\ntask: arith\n")
    with pytest.raises(ConfigError, match="is for arith, not game24"):
        ppo_benchmark(PPOBenchConfig(ppo=str(tmp_path / "arith-ppo.yaml")), tmp_path / "b2")
    assert not (tmp_path / "b2").exists()


def test_a_saved_state_of_another_recipe_is_refused_not_resumed(tiny_policy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"run": {"run": {}, "steps": 1}, "step": 1}, out / STATE_FILE)
    with pytest.raises(ConfigError, match="another recipe or step count"):
        train_ppo(tiny_recipe(tiny_policy, train={"steps": 2}), out, rewards=share_of_sevens)
