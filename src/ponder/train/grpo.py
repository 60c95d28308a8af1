"""Reinforcement learning of the policy with GRPO, through TRL's `GRPOTrainer`.

GRPO (Group Relative Policy Optimization; Shao et al., 2024, "DeepSeekMath: Pushing the Limits of Mathematical
Reasoning in Open Language Models") samples G completions per prompt, scores each, and uses the score minus the
group's mean, over the group's standard deviation, as every token's advantage: no value network, which suits a
3M-parameter policy on two CPU cores. A KL term (coefficient `beta`) keeps the policy near the starting SFT model.

Rewards:
- `outcome`: 1.0 when the task's exact grader accepts the answer the completion's steps give, else 0.0. The
  grader parses the text (it never evaluates it), so the reward cannot be gamed by text that merely looks right,
  and a binary outcome is what DeepSeekMath's outcome supervision uses.
- `outcome+process`: the outcome plus `process_weight` x a learned PRM's step scores aggregated into one number
  (`min`, `last`, `prod`, `mean`). DeepSeekMath's process supervision gives each step its own reward; TRL's
  trainer takes one score per completion, so the steps are aggregated first. The PRM gives partial credit to
  completions with good steps and a wrong end, which spreads the rewards within a group when none is solved
  (an all-zero group has no advantage and teaches nothing).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback

from ponder.errors import ConfigError, MissingExtra
from ponder.lm.hf import loading_quietly, resolve_model
from ponder.lm.load import is_url
from ponder.tasks import Task, TaskError, get_task
from ponder.tasks.base import Problem
from ponder.train.loop import TrainConfig, save_checkpoint, use_bf16
from ponder.train.recipe import load_trainer_recipe, recipe_named, rl_train_config
from ponder.verifiers import AGGREGATIONS, ASKING, aggregate, get_verifier, verifier_fingerprint
from ponder.verifiers.base import VERIFIERS
from ponder.verifiers.learned import LearnedVerifier

log = logging.getLogger(__name__)

REWARDS = ("outcome", "outcome+process")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL's names


@dataclass
class GRPORecipe:
    name: str
    task: str
    reward: str = "outcome"  # outcome | outcome+process
    prm: str = ""  # process reward model: a shipped verifier name or a checkpoint directory
    process_weight: float = 0.5
    split: str = "train"  # the problems it trains on (game24: `synthetic` holds puzzles the policy solves less often)
    aggregate: str = "min"  # how the PRM's step scores become one reward
    num_generations: int = 8  # G: completions per prompt
    beta: float = 0.04  # KL coefficient (DeepSeekMath's value)
    temperature: float = 1.0
    max_completion_length: int = 128
    loss_type: str = "grpo"  # TRL's name for DeepSeekMath's per-sequence mean (TRL's default is "dapo")
    # steps, batch_size (completions per step, a multiple of num_generations), lr, warmup, seed, bf16, init
    train: TrainConfig = field(default_factory=lambda: rl_train_config({}))
    kind: str = "grpo"
    source: str = ""  # the YAML file it was read from (empty: a shipped recipe, by its name)

    @classmethod
    def load(cls, name_or_path: str) -> GRPORecipe:
        """A shipped recipe by name (`game24-grpo`) or a YAML file path."""
        return load_trainer_recipe(cls, name_or_path, "grpo")

    def check(self, where: str) -> None:
        """Raise TaskError for settings GRPO cannot run with (before any model is loaded)."""
        check_rewards(where, self.kind, "grpo", self.task, self.reward, self.prm, self.split)
        if self.aggregate not in AGGREGATIONS:
            raise TaskError(f"recipe {where}: unknown aggregate {self.aggregate!r}; "
                            f"choose from {', '.join(AGGREGATIONS)}")
        if self.loss_type not in LOSS_TYPES:
            raise TaskError(f"recipe {where}: unknown loss_type {self.loss_type!r}; "
                            f"choose from {', '.join(LOSS_TYPES)}")
        if self.num_generations < 2:
            raise TaskError(f"recipe {where}: num_generations must be at least 2 (advantages are group-relative)")
        if self.train.batch_size % self.num_generations:
            raise TaskError(f"recipe {where}: train.batch_size ({self.train.batch_size}) counts completions and must "
                            f"be a multiple of num_generations ({self.num_generations})")


def check_rewards(where: str, kind: str, expected: str, task: str, reward: str, prm: str, split: str) -> None:
    """Raise TaskError for a recipe of another kind, an unknown task, split or reward, or a process reward without a
    PRM."""
    if kind != expected:
        raise TaskError(f"recipe {where}: kind must be {expected}, got {kind!r}")
    if split == "test":
        raise TaskError(f"recipe {where}: RL never trains on the test split it is measured on; name another split")
    get_task(task).problems(split, limit=0)  # an unknown task names the known ones, an unknown split the task's
    if reward not in REWARDS:
        raise TaskError(f"recipe {where}: unknown reward {reward!r}; choose from {', '.join(REWARDS)}")
    if reward == "outcome+process" and not prm:
        raise TaskError(f"recipe {where}: reward outcome+process needs a `prm:` (a PRM name or directory)")
    if prm:
        check_learned(where, "prm", prm)


def check_learned(where: str, knob: str, name: str) -> None:
    """Raise for a recipe knob that must name a learned verifier (a shipped PRM or a checkpoint directory) and does
    not: a built-in or model-asking verifier, a server, or an unknown name; the weights are not loaded."""
    if name in VERIFIERS or name.partition(":")[0] in ASKING or is_url(name):
        raise TaskError(f"recipe {where}: {knob} {name!r} is not a learned verifier (a PRM name or checkpoint "
                        "directory)")
    try:
        verifier_fingerprint(name)
    except ConfigError as err:
        raise TaskError(f"recipe {where}: {knob}: {err}") from err


# --- rewards --------------------------------------------------------------------------------------------------
# TRL calls each reward function as f(prompts=..., completions=..., completion_ids=..., **dataset columns, ...)
# and names it by `__name__` in its logs (`rewards/outcome/mean`).


class TaskReward:
    """A reward that reads each completion's problem from the dataset's columns (`problem_id`, `question`)."""

    def __init__(self, task: Task, problems: dict[str, Problem]) -> None:
        self.task = task
        self.problems = problems

    def problem(self, problem_id: str, question: str) -> Problem:
        if problem_id in self.problems:
            return self.problems[problem_id]
        return self.task.rebuild(problem_id, question)


class OutcomeReward(TaskReward):
    """1.0 when the task's exact grader accepts the completion's answer, else 0.0."""

    __name__ = "outcome"

    def __call__(self, prompts: list[str], completions: list[str], problem_id: list[str], question: list[str],
                 **_: Any) -> list[float]:
        rewards = []
        for completion, pid, q in zip(completions, problem_id, question):
            problem = self.problem(pid, q)
            rewards.append(1.0 if self.task.solves(problem, self.task.split_steps(completion)) else 0.0)
        return rewards


class ProcessReward(TaskReward):
    """A learned PRM's step scores for the completion, aggregated into one number in [0, 1]. The PRM reads what
    the task says the completion stands for (`Task.judged`: a stream of search, the path it ends on)."""

    __name__ = "process"

    def __init__(self, task: Task, problems: dict[str, Problem], verifier: LearnedVerifier, how: str) -> None:
        super().__init__(task, problems)
        self.verifier = verifier
        self.how = how

    def __call__(self, prompts: list[str], completions: list[str], problem_id: list[str], question: list[str],
                 **_: Any) -> list[float]:
        """A completion the PRM cannot read (longer than its context) scores 0 at every step; the rest of the batch
        is still scored."""
        judged = [(p, self.task.judged(self.problem(pid, q), self.task.split_steps(c)))
                  for p, c, pid, q in zip(prompts, completions, problem_id, question)]
        return [aggregate(s, self.how) for s in self.verifier.score_texts(judged)]


def reward_functions(recipe: GRPORecipe, task: Task, problems: dict[str, Problem]
                     ) -> tuple[list[TaskReward], list[float]]:
    """The reward functions and their weights (TRL sums weight x reward before the group normalisation)."""
    funcs: list[TaskReward] = [OutcomeReward(task, problems)]
    weights = [1.0]
    if recipe.reward == "outcome+process":
        funcs.append(ProcessReward(task, problems, load_prm(recipe.prm), recipe.aggregate))
        weights.append(recipe.process_weight)
    return funcs, weights


def load_prm(name: str) -> LearnedVerifier:
    """The process reward model a recipe names (a shipped PRM or a checkpoint directory)."""
    verifier = get_verifier(name)
    if not isinstance(verifier, LearnedVerifier):
        raise TaskError(f"prm {name!r} is not a learned verifier (a PRM checkpoint)")
    return verifier


# --- training -------------------------------------------------------------------------------------------------


def build_dataset(task: Task, split: str) -> tuple[Dataset, dict[str, Problem]]:
    """The training split as TRL's prompt dataset, and the problems by id for grading."""
    problems = task.problems(split)
    data = Dataset.from_dict({"prompt": [task.prompt(p) for p in problems],
                              "problem_id": [p.id for p in problems],
                              "question": [p.question for p in problems]})
    return data, {p.id: p for p in problems}


class RewardProgress(TrainerCallback):
    """A progress bar with the running mean reward, in place of the Trainer's printed log dictionaries."""

    def __init__(self, name: str, total: int) -> None:
        self.bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("reward {task.fields[reward]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.job = self.bar.add_task(name, total=total, reward=float("nan"))
        self.name, self.total, self.shown = name, total, time.time()
        self.rewards: list[float] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.start()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and logs.get("reward") is not None:
            self.rewards.append(logs["reward"])
        recent = self.rewards[-20:]
        mean = sum(recent) / len(recent) if recent else float("nan")
        self.bar.update(self.job, completed=state.global_step, reward=mean)
        if not self.bar.console.is_terminal and time.time() - self.shown >= 60:  # a log file sees a line a minute
            log.info("%s: step %d/%d, reward %.3f", self.name, state.global_step, self.total, mean)
            self.shown = time.time()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.stop()


class SaveEvery(TrainerCallback):
    """Asks the Trainer to save its whole state (model, optimiser, scheduler, random generators) every `seconds`,
    the contract of `TrainConfig.save_every` that Ponder's own loop keeps (the finished policy is saved apart). Each
    checkpoint notes the training seconds up to it (`before`: those of the runs it resumes), so a resumed run
    reports the time of the whole run."""

    def __init__(self, seconds: float, before: float) -> None:
        self.seconds, self.before = seconds, before
        self.start = self.saved = time.time()

    def elapsed(self) -> float:
        return self.before + time.time() - self.start

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.time() - self.saved >= self.seconds and state.global_step < state.max_steps:
            control.should_save = True
            self.saved = time.time()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        (folder / SECONDS_FILE).write_text(json.dumps(self.elapsed()))


STATE_DIR = "train-state"  # the Trainer's checkpoints while a run is under way; removed once the policy is saved
SECONDS_FILE = "ponder-seconds.json"  # in a checkpoint: the training seconds up to it


def resume_point(state: Path, run: dict[str, Any]) -> str | None:
    """The newest whole checkpoint a killed run left in `state` (None: start afresh; a kill while saving leaves the
    one before it whole). The run that left it must be this one (`run`: the recipe and step count)."""
    marker = state / "run.json"
    if not marker.is_file():
        return None
    if json.loads(marker.read_text()) != run:
        raise ConfigError(f"{state} holds a run of another recipe or step count; delete it to start afresh")
    done = [d for d in state.glob("checkpoint-*") if (d / SECONDS_FILE).is_file()]  # written last
    return str(max(done, key=lambda d: int(d.name.split("-")[1]))) if done else None


def reward_means(history: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    """Mean of a logged value over the first and the last 10% of steps."""
    values = [row[key] for row in history if row.get(key) is not None]
    if not values:
        return None, None
    n = max(1, math.ceil(len(values) / 10))
    return round(sum(values[:n]) / n, 4), round(sum(values[-n:]) / n, 4)


def train_grpo(recipe: GRPORecipe, out_dir: Path, steps: int | None = None) -> dict[str, Any]:
    """Train the recipe's policy with GRPO and save it to `out_dir`; returns a summary (also training.json)."""
    try:
        from trl import GRPOConfig, GRPOTrainer  # slow to import: only the trainer needs it
    except ImportError as err:
        raise MissingExtra("GRPO training", "trl", "train") from err

    recipe.check(recipe.name)
    cfg = recipe.train
    n_steps = steps if steps is not None else cfg.steps
    torch.manual_seed(cfg.seed)
    task = get_task(recipe.task)
    data, problems = build_dataset(task, recipe.split)
    funcs, weights = reward_functions(recipe, task, problems)
    init = cfg.init or f"{recipe.task}-policy"
    directory, _ = resolve_model(init)
    with loading_quietly():
        tok = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    longest = max(len(tok(p, add_special_tokens=False).input_ids) for p in data["prompt"])
    limit = model.config.max_position_embeddings
    if longest + recipe.max_completion_length > limit:  # RoPE past the trained positions gives garbage
        raise TaskError(f"longest prompt ({longest} tokens) + max_completion_length ({recipe.max_completion_length}) "
                        f"exceeds the policy's {limit} positions")
    bf16 = use_bf16(cfg.bf16)
    state = out_dir / STATE_DIR
    run = json.loads(json.dumps({"run": asdict(recipe), "steps": n_steps}))
    resume = resume_point(state, run)
    state.mkdir(parents=True, exist_ok=True)
    (state / "run.json").write_text(json.dumps(run))
    clock = SaveEvery(cfg.save_every, json.loads((Path(resume) / SECONDS_FILE).read_text()) if resume else 0.0)
    args = GRPOConfig(
        output_dir=str(state), max_steps=n_steps, per_device_train_batch_size=cfg.batch_size,
        num_generations=recipe.num_generations, max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature, beta=recipe.beta, loss_type=recipe.loss_type,
        reward_weights=weights, learning_rate=cfg.lr, warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay,
        lr_scheduler_type="constant_with_warmup", seed=cfg.seed, data_seed=cfg.seed,
        # TRL turns on bf16 and gradient checkpointing by default: bf16 only where the CPU has it, and
        # recomputing activations of a 3M-parameter model only costs time.
        use_cpu=True, bf16=bf16, gradient_checkpointing=False,
        # Saving is asked for by `SaveEvery`, every `save_every` seconds; the newest checkpoint alone is kept.
        logging_steps=1, save_strategy="no", save_total_limit=1, report_to="none", disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[RewardProgress(f"grpo {recipe.name}", n_steps), clock])
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=resume)
    seconds = clock.elapsed()
    history = [row for row in trainer.state.log_history if "reward" in row]
    reward_start, reward_end = reward_means(history, "reward")
    outcome_start, outcome_end = reward_means(history, "rewards/outcome/mean")
    summary = {"recipe": recipe.name, "task": recipe.task, "init": init, "reward": recipe.reward,
               "steps": trainer.state.global_step, "seconds": round(seconds, 1),
               "seconds_per_step": round(seconds / max(1, trainer.state.global_step), 2),
               "threads": torch.get_num_threads(), "bf16_autocast": bf16,
               "reward_start": reward_start, "reward_end": reward_end,
               "outcome_start": outcome_start, "outcome_end": outcome_end,
               "parameters": sum(p.numel() for p in model.parameters()), "config": asdict(recipe),
               "log": [{k: v for k, v in row.items() if isinstance(v, int | float)} for row in history]}
    policy = trainer.model
    policy.config.use_cache = True  # the Trainer turns the KV cache off for training; generation wants it back
    save_checkpoint(policy, tok, out_dir, summary, asdict(recipe))
    shutil.rmtree(state)  # the run is complete: nothing left to resume
    write_card(out_dir, summary)
    return summary


def write_card(out_dir: Path, summary: dict[str, Any]) -> None:
    """README.md of the checkpoint: how it was made and what training cost; measured accuracy goes under
    "Measured" from `ponder bench grpo` or `ponder eval` (the card says which run)."""
    c = summary["config"]
    train = c["train"]
    reward = ("outcome (exact grader, 0/1)" if c["reward"] == "outcome" else
              f"outcome (exact grader, 0/1) + {c['process_weight']} x PRM `{c['prm']}` ({c['aggregate']} of steps)")
    card = f"""# {summary["recipe"]}

The `{summary["init"]}` policy for `{summary["task"]}` after GRPO (Shao et al., 2024) through TRL's `GRPOTrainer`
on the `{c["split"]}` split. Character-level tokenizer; weights stored in bf16, Ponder runs them in fp32.

- Reward: {reward}.
- Recipe: `{recipe_named(c)[0]}` ({summary["steps"]} steps, G = {c["num_generations"]},
  {train["batch_size"]} completions per step, beta {c["beta"]}, temperature {c["temperature"]}, lr {train["lr"]},
  seed {train["seed"]}).
- Command: `ponder train grpo {recipe_named(c)[1]} --out {out_dir}`
- Training: {summary["seconds"] / 60:.1f} minutes on {summary["threads"]} CPU threads
  ({summary["seconds_per_step"]} s/step), bf16 autocast: {summary["bf16_autocast"]};
  mean reward {summary["reward_start"]} over the first 10% of steps, {summary["reward_end"]} over the last 10%.

## Measured
"""
    (out_dir / "README.md").write_text(card)
