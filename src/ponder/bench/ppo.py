"""`ponder bench ppo`: PPO with a critic against GRPO and an outcome-only baseline, from one starting policy, at equal
samples, over several seeds.

- `ppo`: the recipe `{task}-ppo` or the one named (`ponder.train.ppo`: a critic, the outcome plus a PRM's step
  rewards).
- `grpo`: the recipe `{task}-grpo` (DeepSeekMath's GRPO through TRL, the outcome reward).
- `rft`: outcome only, rejection-sampling fine-tuning (Yuan et al., 2023, "Scaling Relationship on Learning
  Mathematical Reasoning with Large Language Models"): the starting policy samples as many completions, for the same
  puzzles in the same order as PPO's iterations, at the same temperature; those the task's answer check accepts are
  kept and the policy is fine-tuned on them (`ponder.train.sft.fit`).

Every method draws `steps` x `batch_size` completions (the PPO recipe's batch; the GRPO recipe's, which must match).
Each trained policy is measured by greedy pass@1 on the first `problems` test problems; the table gives each seed and
the mean and spread (sample standard deviation). The PPO checkpoint's critic is also measured as a search verifier:
the task's default search (ToT-BFS on game24) at `budget`, with the PPO policy proposing and its own critic judging,
against the same search judged by the task's shipped PRM. Training curves (reward, KL, value loss, greedy pass@1 by
samples drawn) go to `curves.png`; the configuration and all rows to `bench.json`, beside the models.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ponder.errors import ConfigError
from ponder.evaluate.runner import EvalConfig, greedy_accuracy, run_eval
from ponder.jsonl import check_config
from ponder.tasks import TaskError, get_task
from ponder.train.data import endless
from ponder.train.grpo import GRPORecipe, train_grpo
from ponder.train.loop import TrainConfig, save_checkpoint
from ponder.train.ppo import PPORecipe, batch_problems, iteration_seed, load_policy, sample, train_ppo
from ponder.train.sft import fit

METHODS = ("ppo", "grpo", "rft")


@dataclass
class PPOBenchConfig:
    task: str = "game24"
    steps: int = 0  # iterations of every method (0: the PPO recipe's); each draws the recipe's batch of completions
    seeds: int = 3
    problems: int = 100  # test problems for greedy pass@1 and the search
    budget: int = 4  # the search's budget for the critic-as-verifier rows
    split: str = ""  # the problems every method trains on ("": the PPO recipe's, which the GRPO recipe's must match)
    ppo: str = ""  # the PPO recipe, a shipped name or a YAML file ("": `{task}-ppo`)
    rft_epochs: int = 2  # passes of rejection-sampling fine-tuning over the kept completions
    rft_lr: float = 5e-5


def rejection_sampling_finetune(recipe: PPORecipe, steps: int, epochs: int, lr: float, out_dir: Path
                                ) -> dict[str, Any]:
    """Sample `steps` batches of completions from the recipe's starting policy (PPO's puzzles and seeds), keep those
    the task's answer check accepts and fine-tune the policy on them; saved to `out_dir`."""
    cfg = recipe.train
    task = get_task(recipe.task)
    init = cfg.init or f"{recipe.task}-policy"
    policy, tok = load_policy(init)
    train_problems = task.problems(recipe.split)
    kept: list[tuple[str, str]] = []
    for step in range(steps):
        seed = iteration_seed(cfg.seed, step)
        problems = batch_problems(train_problems, cfg.batch_size, seed)
        torch.manual_seed(seed)
        prompts = [task.prompt(p) for p in problems]
        for problem, prompt, (_, ids) in zip(problems, prompts, sample(policy, tok, prompts, recipe.temperature,
                                                                        recipe.max_completion_length)):
            text = tok.decode(ids, skip_special_tokens=True)
            if task.solves(problem, task.split_steps(text)):
                kept.append((prompt, text))
    if not kept:
        raise TaskError(f"rejection sampling kept none of {steps * cfg.batch_size} completions: nothing to train on")
    train = TrainConfig(steps=max(1, math.ceil(epochs * len(kept) / cfg.batch_size)), batch_size=cfg.batch_size,
                        lr=lr, warmup=0, weight_decay=0.0, seed=cfg.seed, bf16=cfg.bf16, init=init)
    result = fit(policy, tok, endless(kept, cfg.seed), train, train.steps, policy.config.max_position_embeddings,
                 f"rft {recipe.task}")
    summary = {"method": "rejection-sampling fine-tuning", "task": recipe.task, "init": init,
               "samples": steps * cfg.batch_size, "kept": len(kept), **result.summary(), "config": asdict(train)}
    save_checkpoint(policy, tok, out_dir, summary, asdict(train))
    return summary


def _trained(train: Callable[..., dict[str, Any]], *args: Any, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
    """The summary of a model already trained in `out_dir` (a rerun of the benchmark skips it), else train it."""
    done = out_dir / "training.json"
    return json.loads(done.read_text()) if done.is_file() else train(*args, out_dir=out_dir, **kwargs)


def ppo_benchmark(cfg: PPOBenchConfig, out: Path) -> dict[str, Any]:
    """Train and measure every method for each seed under `out`; returns the configuration, the rows per seed and
    per method (mean and spread), the critic-as-verifier rows and the curves' path."""
    if cfg.seeds < 1 or cfg.problems < 1 or cfg.budget < 1 or cfg.steps < 0:
        raise ConfigError(f"bench ppo needs at least one seed, problem and unit of budget, and steps >= 0; got seeds "
                          f"{cfg.seeds}, problems {cfg.problems}, budget {cfg.budget}, steps {cfg.steps}")
    base = PPORecipe.load(cfg.ppo or f"{cfg.task}-ppo")
    if base.task != cfg.task:
        raise ConfigError(f"PPO recipe {base.name} is for {base.task}, not {cfg.task}")
    grpo_base = GRPORecipe.load(f"{cfg.task}-grpo")
    if cfg.split:
        base, grpo_base = replace(base, split=cfg.split), replace(grpo_base, split=cfg.split)
        base.check(base.name)
    if grpo_base.split != base.split:
        raise TaskError(f"{grpo_base.name} trains on {grpo_base.split!r} and {base.name} on {base.split!r}: the "
                        "problems would differ")
    steps = cfg.steps or base.train.steps
    if grpo_base.train.batch_size != base.train.batch_size:
        raise TaskError(f"{grpo_base.name} draws {grpo_base.train.batch_size} completions a step and {base.name} "
                        f"{base.train.batch_size}: the samples would differ")
    start = base.train.init or f"{cfg.task}-policy"
    # a rerun skips the models trained already, so it must train them the same way (more seeds, other measures: fine)
    check_config(out, replace(cfg, steps=steps), free=("seeds", "problems", "budget"), save=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "steps": steps, "start": start}, indent=2) + "\n")
    task = get_task(cfg.task)
    start_pass = greedy_accuracy(cfg.task, start, cfg.problems, 0, out / "eval-start")
    runs: list[dict[str, Any]] = []
    for seed in range(cfg.seeds):
        ppo_recipe = replace(base, train=replace(base.train, seed=seed))
        grpo_recipe = replace(grpo_base, train=replace(grpo_base.train, seed=seed))
        folder = out / f"seed{seed}"
        trained = {
            "ppo": _trained(train_ppo, ppo_recipe, out_dir=folder / "ppo", steps=steps),
            "grpo": _trained(train_grpo, grpo_recipe, out_dir=folder / "grpo", steps=steps),
            "rft": _trained(rejection_sampling_finetune, ppo_recipe, steps, cfg.rft_epochs, cfg.rft_lr,
                            out_dir=folder / "rft"),
        }
        row: dict[str, Any] = {"seed": seed, "samples": steps * base.train.batch_size,
                               "rft_kept": trained["rft"]["kept"],
                               "ppo_final_eval": trained["ppo"].get("greedy_pass@1_end"),
                               "log": {m: trained[m].get("log") for m in trained}}
        for method in METHODS:
            row[method] = greedy_accuracy(cfg.task, str(folder / method), cfg.problems, seed,
                                          folder / f"eval-{method}")
        critic = folder / "ppo" / "critic"  # a critic of its own, else the value head on the policy
        for name, verifier in (("critic", str(critic if critic.is_dir() else folder / "ppo")),
                               ("prm", task.default_verifier)):
            search = EvalConfig(task=cfg.task, split="test", limit=cfg.problems, model=str(folder / "ppo"),
                                methods=[task.default_method], budgets=[cfg.budget], verifier=verifier, seed=seed)
            table = run_eval(search, folder / f"search-{name}", show_progress=False)
            row[f"search_{name}"] = table[0]["accuracy"]
            row[f"search_{name}_tokens"] = table[0].get("generated_tokens")
        runs.append(row)
    summary = [{"method": "start", "mean": start_pass, "spread": 0.0, "per_seed": [start_pass]}]
    for key in (*METHODS, "search_critic", "search_prm"):
        values = [r[key] for r in runs]
        summary.append({"method": key, "mean": statistics.mean(values),
                        "spread": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values})
    plot_curves(runs, base.train.batch_size, start_pass, out / "curves.png")
    result = {"config": {**asdict(cfg), "steps": steps, "start": start}, "start_pass@1": start_pass, "runs": runs,
              "summary": summary, "curves": str(out / "curves.png"), "method": task.default_method}
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def plot_curves(runs: list[dict[str, Any]], batch: int, start_pass: float, path: Path) -> None:
    """Reward, KL to the reference, the critic's value loss and greedy pass@1 against samples drawn, one thin line
    per seed; GRPO's and rejection sampling's final pass@1 as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    colours = {"ppo": "tab:blue", "grpo": "tab:orange", "rft": "tab:green"}
    for r in runs:
        ppo_log, grpo_log = r["log"]["ppo"] or [], r["log"]["grpo"] or []
        x = [row["step"] * batch for row in ppo_log]
        axes[0, 0].plot(x, [row["solved"] for row in ppo_log], color=colours["ppo"], lw=1, marker=".",
                        label="PPO" if r["seed"] == 0 else None)
        axes[0, 1].plot(x, [row["kl"] for row in ppo_log], color=colours["ppo"], lw=1, marker=".")
        axes[1, 0].plot(x, [row["value_loss"] for row in ppo_log], color=colours["ppo"], lw=1, marker=".")
        gx = [row["step"] * batch for row in grpo_log]
        axes[0, 0].plot(gx, [row.get("rewards/outcome/mean") for row in grpo_log], color=colours["grpo"], lw=1,
                        label="GRPO" if r["seed"] == 0 else None)
        axes[0, 1].plot(gx, [row.get("kl") for row in grpo_log], color=colours["grpo"], lw=1)
        evals = [((row["step"] - 1) * batch, row["greedy_pass@1"]) for row in ppo_log if "greedy_pass@1" in row]
        if evals and r.get("ppo_final_eval") is not None:
            evals.append((r["samples"], r["ppo_final_eval"]))
        if evals:
            axes[1, 1].plot(*zip(*evals), color=colours["ppo"], lw=1, marker=".",
                            label="PPO (recipe's eval problems)" if r["seed"] == 0 else None)
        for method in ("ppo", "grpo", "rft"):
            axes[1, 1].scatter([r["samples"]], [r[method]], color=colours[method], marker="x",
                               label=f"{method} (bench problems)" if r["seed"] == 0 else None)
    axes[1, 1].axhline(start_pass, color="grey", ls="--", lw=1, label="start")
    for ax, title in zip(axes.flat, ("training reward: share solved", "KL to the reference (per completion, PPO; "
                                     "per token, GRPO)", "PPO value loss", "greedy pass@1 (test)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("samples drawn")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[1, 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
