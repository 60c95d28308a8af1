"""Proximal Policy Optimization with a critic: Ponder's own actor-critic trainer for its policies.

- **Clipped surrogate** (Schulman et al., 2017, "Proximal Policy Optimization Algorithms"): each batch of rollouts
  is reused for `ppo_epochs` passes of `num_mini_batches` minibatches, maximising
  min(r A, clip(r, 1 - cliprange, 1 + cliprange) A) per token (r: the probability ratio to the policy that sampled;
  the paper's epsilon is `cliprange`), with the value loss clipped the same way around the old values
  (`cliprange_value`) and weighted by `vf_coef` (the paper's c1).
- **The critic** is one of two (`critic`):
  - a value head on the policy (`critic: ""`, the default): a linear map of the policy's last hidden state,
    starting from zero, so one network proposes and evaluates, the shape of AlphaZero's policy-value network. The
    head is saved with the checkpoint (`value_head.safetensors`, `ponder_verifier` kind `critic` in config.json),
    so the same directory serves as a policy and, through `--verifier DIR`, as a search verifier whose step score
    is the critic's value;
  - a separate network started from a learned verifier (`critic: game24-prm`), as InstructGPT starts its value
    function from its reward model (Ouyang et al., 2022): the value of a state is the verifier's score of its last
    step (of the prompt alone, the head's score at the prompt's last token), trained by the value loss at
    `critic_lr`. It starts as good a judge as the verifier and learns the values of the policy's own states; it is
    saved in `OUT/critic/` with the verifier's head, a search verifier through `--verifier OUT/critic`.
- **Actions are reasoning steps**: a completion is cut into its steps (each opens at the newline that ends the step
  before) and, when the policy stops by itself, a last action that ends the solution (its end-of-text token). The
  critic's value of a state is read at the last token before an action: the prompt's end, then the end of each
  step's text, which is where the verifier reads it. Advantages come from generalised advantage estimation over
  these steps (Schulman et al., 2016, "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation": `gamma`, `lam`), and every token of a step shares its step's advantage.
- **Rewards**: the task's outcome (1 when the exact grader accepts the answer the steps give, as GRPO's reward) on
  the last action; with `outcome+process`, each step also earns a PRM's score of it, Math-Shepherd's step-by-step
  PPO (Wang et al., 2024). The PRM's share of the return is `process_weight` (each step earns
  process_weight / max_steps x its score, the outcome 1 - process_weight), so returns lie in [0, 1] and the critic's
  value reads as a score.
- **KL penalty** to the frozen starting policy (Stiennon et al., 2020; Ouyang et al., 2022): each action's reward
  loses `beta` x the sum over its tokens of log pi(token) - log pi_ref(token), under the policy that sampled.

The same training puzzles and sample budget as GRPO (`train.steps` x `train.batch_size` completions; here each of a
batch's completions is for another puzzle, as PPO needs no groups). Every iteration's randomness is seeded from the
recipe's seed and the iteration, and the whole training state is saved every `train.save_every` seconds, so a killed
run resumes to the same weights.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ponder import heap
from ponder.errors import ConfigError
from ponder.lm.hf import loading_quietly, resolve_model
from ponder.tasks import Task, TaskError, get_task
from ponder.tasks.base import Problem
from ponder.train.grpo import check_learned, check_rewards, load_prm, reward_means
from ponder.train.loop import STATE_FILE, TrainConfig, hardware, learning_rate, save_checkpoint, save_state, use_bf16
from ponder.train.recipe import load_trainer_recipe, recipe_named, remake_section, rl_train_config
from ponder.verifiers.learned import (
    Encoded,
    HeadSpec,
    LearnedVerifier,
    VerifierError,
    head_logits,
    next_token_logprobs,
    pad_batch,
    save_value_head,
    step_margins,
    value_head,
)

log = logging.getLogger(__name__)


@dataclass
class PPORecipe:
    name: str
    task: str
    reward: str = "outcome"  # outcome | outcome+process
    prm: str = ""  # process reward model: a shipped verifier name or a checkpoint directory
    process_weight: float = 0.5  # the PRM's share of the return
    split: str = "train"  # the problems it trains on (game24: `synthetic` holds puzzles the policy solves less often)
    gamma: float = 1.0  # discount (GAE)
    lam: float = 0.95  # GAE's lambda
    beta: float = 0.04  # KL penalty coefficient
    cliprange: float = 0.2  # PPO's epsilon
    cliprange_value: float = 0.2
    vf_coef: float = 0.5  # PPO's c1
    ppo_epochs: int = 4
    num_mini_batches: int = 4
    critic: str = ""  # "": a value head on the policy; a learned verifier (shipped name or directory): a critic
    # started from it
    critic_lr: float = 1e-3  # the critic's learning rate (the policy's is train.lr): high for a head from zero,
    # about the policy's for a critic started from a verifier
    whiten_advantages: bool = True
    temperature: float = 1.0
    max_completion_length: int = 128
    eval_problems: int = 0  # greedy pass@1 on this many test problems every `eval_every` iterations (0: never)
    eval_every: int = 10
    # steps (iterations), batch_size (completions per iteration), lr, warmup, seed, bf16, init, save_every
    train: TrainConfig = field(default_factory=lambda: rl_train_config({}))
    kind: str = "ppo"
    source: str = ""  # the YAML file it was read from (empty: a shipped recipe, by its name)

    @classmethod
    def load(cls, name_or_path: str) -> PPORecipe:
        """A shipped recipe by name (`game24-ppo`) or a YAML file path."""
        return load_trainer_recipe(cls, name_or_path, "ppo")

    def check(self, where: str) -> None:
        """Raise TaskError for settings PPO cannot run with (before any model is loaded)."""
        check_rewards(where, self.kind, "ppo", self.task, self.reward, self.prm, self.split)
        if self.critic:
            check_learned(where, "critic", self.critic)
        if not 0.0 <= self.process_weight < 1.0:
            raise TaskError(f"recipe {where}: process_weight must lie in [0, 1), got {self.process_weight}")
        if not (0.0 < self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise TaskError(f"recipe {where}: gamma must lie in (0, 1] and lam in [0, 1]")
        if self.max_completion_length < 1:
            raise TaskError(f"recipe {where}: max_completion_length must be at least 1")
        if self.ppo_epochs < 1 or self.num_mini_batches < 1 or self.train.batch_size % self.num_mini_batches:
            raise TaskError(f"recipe {where}: ppo_epochs and num_mini_batches must be at least 1, and train.batch_size "
                            f"({self.train.batch_size}) a multiple of num_mini_batches ({self.num_mini_batches})")


# --- the objective ---------------------------------------------------------------------------------------------


def gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Generalised advantage estimation over one episode's actions: (advantages, returns). `values[t]` is the
    critic's value of the state before action t; the state after the last action is terminal (value 0)."""
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        following = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * following - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's policy loss, -min(r A, clip(r, 1 - eps, 1 + eps) A) averaged over the masked tokens, and the share of
    tokens where the clip is active."""
    ratio = torch.exp(logp - old_logp)
    plain = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    return masked_mean(torch.maximum(plain, clipped), mask), masked_mean((clipped > plain).float(), mask)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       cliprange_value: float) -> torch.Tensor:
    """0.5 x max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2), averaged over the masked states."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class HeadCritic(torch.nn.Module):
    """A value head on the policy's last hidden state, starting from zero; a state's value is read at the state's
    last token of the policy's own input."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.value_head = value_head(hidden)

    def inputs(self, episodes: list[Episode], state_at: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"at": state_at}

    def forward(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.value_head(hidden)[..., 0].float().gather(1, inputs["at"])

    def save(self, policy: PreTrainedModel, task: str, out_dir: Path) -> None:
        policy.config.ponder_verifier = asdict(HeadSpec(kind="critic", task=task))
        save_value_head(self.value_head, out_dir)


class VerifierCritic(torch.nn.Module):
    """A separate critic started from a learned verifier: a state's value is the verifier's score of its last step
    (the head's probability of a good step, times the checked tokens' probability for a checking PRM), read from the
    verifier's own layout of the prompt and the steps so far; before any step, the head's score at the prompt's end."""

    def __init__(self, verifier: LearnedVerifier, task: Task) -> None:
        super().__init__()
        if verifier.head.kind == "critic":
            raise TaskError(f"critic {verifier.name}: a PPO critic continues as a value head (give its directory as "
                            "train.init), not as a separate critic")
        self.model, self.layout, self.tokenizer, self.task = verifier.model, verifier.layout, verifier.tokenizer, task
        self.pad = verifier.pad

    def encode(self, episode: Episode) -> Encoded:
        """The episode in the verifier's layout; steps past its context are left out (their states read the last
        step that fits), so a rambling sample cannot stop the run."""
        steps = episode.steps
        while True:
            try:
                return self.layout.encode(self.task.prompt(episode.problem), steps)
            except VerifierError:
                if not steps:
                    raise
                steps = steps[:-1]

    def inputs(self, episodes: list[Episode], state_at: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded = [self.encode(e) for e in episodes]
        batch = pad_batch([e.ids for e in encoded], self.pad)
        checks = torch.zeros(batch["input_ids"].shape)
        at = torch.zeros(state_at.shape, dtype=torch.long)
        for i, (e, enc) in enumerate(zip(episodes, encoded)):
            reads = [enc.prompt_end, *enc.positions]
            for k in range(len(e.actions)):
                at[i, k] = reads[min(k, len(reads) - 1)]
            for c in enc.checks:
                checks[i, c] = 1.0
        return {**batch, "checks": checks, "at": at}

    def forward(self, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = inputs["input_ids"]
        logits = head_logits(self.model, self.layout, {"input_ids": ids, "attention_mask": inputs["attention_mask"]})
        score = torch.sigmoid(step_margins(self.layout, logits).float())
        if self.layout.head.check_after:  # times P(every checked token so far), as the verifier scores
            score = score * (next_token_logprobs(logits, ids).float() * inputs["checks"]).cumsum(1).exp()
        return score.gather(1, inputs["at"])

    def save(self, policy: PreTrainedModel, task: str, out_dir: Path) -> None:
        folder = out_dir / "critic"
        folder.mkdir(parents=True, exist_ok=True)
        self.model.to(torch.bfloat16).save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / "README.md").write_text(
            f"# critic of {out_dir.name}\n\nThe PPO critic trained beside the policy in `..` (its card says how), "
            f"started from a learned verifier; a search verifier with that verifier's head: `--verifier {folder}`.\n")


Critic = HeadCritic | VerifierCritic


class ActorCritic(torch.nn.Module):
    """A causal LM policy and its critic (a value head on it, or a network of its own)."""

    def __init__(self, policy: PreTrainedModel, critic: Critic) -> None:
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, temperature: float, critic_inputs: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """[batch, length] log-probabilities of each token given those before it (at the sampling temperature;
        0 at the first) and [batch, actions] the critic's values of the state before each action."""
        hidden = self.policy.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = self.policy.lm_head(hidden) / temperature
        return next_token_logprobs(logits, ids), self.critic(hidden, critic_inputs)


# --- rollouts --------------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One sampled completion, cut into actions (token ranges of the completion: its steps and, when the policy
    stopped by itself, the end-of-text), with each action's reward before the KL penalty."""

    problem: Problem
    prompt_ids: list[int]
    completion_ids: list[int]
    actions: list[tuple[int, int]]
    steps: list[str]
    stopped: bool
    solved: bool = False
    rewards: list[float] = field(default_factory=list)


def cut_actions(tok: PreTrainedTokenizerBase, ids: list[int]) -> tuple[list[tuple[int, int]], list[str], bool]:
    """(token ranges of the actions, the steps' texts, whether the completion ends with end-of-text). A step opens
    at a token that starts with a newline once the step before has text; whitespace with no text after it joins the
    action that ends the solution (or the last step, when the completion was cut off)."""
    bounds: list[tuple[int, int]] = []
    start, has_text = 0, False
    for i, token in enumerate(ids):
        if token == tok.eos_token_id:
            if has_text:
                bounds.append((start, i))
                start = i
            bounds.append((start, i + 1))
            return bounds, [tok.decode(ids[a:b]).strip() for a, b in bounds[:-1]], True
        text = tok.decode([token])
        if text.startswith("\n") and has_text:
            bounds.append((start, i))
            start, has_text = i, False
        has_text = has_text or bool(text.strip())
    if start < len(ids):
        if has_text or not bounds:
            bounds.append((start, len(ids)))
        else:
            bounds[-1] = (bounds[-1][0], len(ids))
    return bounds, [tok.decode(ids[a:b]).strip() for a, b in bounds], False


@torch.no_grad()
def sample(policy: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], temperature: float,
           max_new_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids up to and including end-of-text) for each prompt; temperature 0 is greedy.
    Sampling draws from the whole distribution (no top-k or top-p), the one PPO's ratios are taken against, from
    torch's global generator."""
    side, tok.padding_side = tok.padding_side, "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = side
    device = next(policy.parameters()).device
    policy.eval()
    knobs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else \
        {"do_sample": False}
    out = policy.generate(input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device),
                          max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          **knobs).cpu()
    width = enc.input_ids.shape[1]
    pairs = []
    for row, mask, completion in zip(enc.input_ids, enc.attention_mask, out[:, width:].tolist()):
        if tok.eos_token_id in completion:
            completion = completion[: completion.index(tok.eos_token_id) + 1]
        pairs.append((row[mask.bool()].tolist(), completion))
    return pairs


def iteration_seed(seed: int, step: int) -> int:
    """The seed of one iteration's draws: the run's seed and the iteration, nothing else."""
    return seed * 1_000_003 + step


def batch_problems(problems: list[Problem], size: int, seed: int) -> list[Problem]:
    """One iteration's problems: `size` different ones drawn with `seed`."""
    return random.Random(seed).sample(problems, min(size, len(problems)))


Rewarder = Callable[[list[Episode]], None]  # sets each episode's `solved` and `rewards` (one per action)


class TaskRewards:
    """The task's outcome on the last action and, with a PRM, each step's share of the PRM's score of it."""

    def __init__(self, recipe: PPORecipe, task: Task) -> None:
        self.task = task
        self.process = load_prm(recipe.prm) if recipe.reward == "outcome+process" else None
        self.step_weight = recipe.process_weight / task.max_steps if self.process else 0.0
        self.outcome_weight = 1.0 - recipe.process_weight if self.process else 1.0

    def __call__(self, episodes: list[Episode]) -> None:
        scores = (self.process.score_texts([(self.task.prompt(e.problem), e.steps) for e in episodes])
                  if self.process else [None] * len(episodes))
        for e, s in zip(episodes, scores):
            e.solved = self.task.solves(e.problem, e.steps)
            e.rewards = [0.0] * len(e.actions)
            for k, score in enumerate(s or []):
                e.rewards[k] += self.step_weight * score
            e.rewards[-1] += self.outcome_weight * float(e.solved)


@dataclass
class Batch:
    """A batch of rollouts as tensors: tokens, what the update trains on, and what it compares against."""

    ids: torch.Tensor  # [B, L] prompt + completion, right-padded
    mask: torch.Tensor  # [B, L] attention
    tokens: torch.Tensor  # [B, L] 1 at completion tokens (the policy's actions)
    old_logp: torch.Tensor  # [B, L] under the policy that sampled
    advantages: torch.Tensor  # [B, L] each token's step's advantage
    critic: dict[str, torch.Tensor]  # the critic's inputs: where it reads each action's state value [B, A], and
    # its own tokens when it is a network of its own
    states: torch.Tensor  # [B, A] 1 where an action exists
    old_values: torch.Tensor  # [B, A]
    returns: torch.Tensor  # [B, A]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The batch with `fn` applied to every tensor, the critic's inputs included."""
        return Batch(**{k: {n: fn(t) for n, t in v.items()} if isinstance(v, dict) else fn(v)
                        for k, v in vars(self).items()})


# --- the trainer -----------------------------------------------------------------------------------------------


class PPO:
    """The actor-critic, its frozen reference and its optimiser; `iteration` samples, scores and updates once."""

    def __init__(self, recipe: PPORecipe, policy: PreTrainedModel, tok: PreTrainedTokenizerBase, task: Task,
                 rewards: Rewarder | None = None) -> None:
        self.recipe, self.tok, self.task = recipe, tok, task
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bf16 = use_bf16(recipe.train.bf16, self.device)
        critic = (VerifierCritic(load_prm(recipe.critic), task) if recipe.critic else
                  HeadCritic(policy.config.hidden_size))
        self.model = ActorCritic(policy, critic).to(self.device)
        self.reference = copy.deepcopy(policy).to(self.device).eval().requires_grad_(False)
        self.rewards = rewards or TaskRewards(recipe, task)
        self.optim = torch.optim.AdamW(
            [{"params": list(policy.parameters()), "lr": recipe.train.lr, "base_lr": recipe.train.lr},
             {"params": list(self.model.critic.parameters()), "lr": recipe.critic_lr,
              "base_lr": recipe.critic_lr}], betas=(0.9, 0.95), weight_decay=recipe.train.weight_decay)
        self.train_problems = task.problems(recipe.split)

    def rollouts(self, problems: list[Problem]) -> list[Episode]:
        r = self.recipe
        pairs = sample(self.model.policy, self.tok, [self.task.prompt(p) for p in problems], r.temperature,
                       r.max_completion_length)
        episodes = []
        for problem, (prompt_ids, completion) in zip(problems, pairs):
            actions, steps, stopped = cut_actions(self.tok, completion)
            episodes.append(Episode(problem, prompt_ids, completion, actions, steps, stopped))
        self.rewards(episodes)
        return episodes

    @torch.no_grad()
    def batch(self, episodes: list[Episode]) -> tuple[Batch, dict[str, float]]:
        """The update's tensors: old log-probabilities and values, the KL-penalised rewards, GAE's advantages and
        returns; and the batch's statistics (reward, KL to the reference, solved share)."""
        r = self.recipe
        rows = [e.prompt_ids + e.completion_ids for e in episodes]
        width, n_actions = max(map(len, rows)), max(len(e.actions) for e in episodes)
        ids = torch.full((len(rows), width), self.tok.pad_token_id)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        tokens = torch.zeros((len(rows), width))
        state_at = torch.zeros((len(rows), n_actions), dtype=torch.long)
        states = torch.zeros((len(rows), n_actions))
        for i, (e, row) in enumerate(zip(episodes, rows)):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            tokens[i, len(e.prompt_ids) : len(row)] = 1
            for k, (a, _) in enumerate(e.actions):
                state_at[i, k] = len(e.prompt_ids) + a - 1
                states[i, k] = 1
        self.model.eval()
        ids, mask = ids.to(self.device), mask.to(self.device)
        critic = self.model.critic.inputs(episodes, state_at)
        old_logp, values = (t.float().cpu() for t in self.model(ids, mask, r.temperature,
                                                                  {k: v.to(self.device) for k, v in critic.items()}))
        ref_logp = self.reference_logp(ids, mask)
        old_values = values * states
        kl = (old_logp - ref_logp) * tokens
        advantages = torch.zeros((len(rows), width))
        returns = torch.zeros((len(rows), n_actions))
        for i, e in enumerate(episodes):
            start = len(e.prompt_ids)
            shaped = [reward - r.beta * float(kl[i, start + a : start + b].sum())
                      for reward, (a, b) in zip(e.rewards, e.actions)]
            adv, ret = gae(shaped, old_values[i, : len(e.actions)].tolist(), r.gamma, r.lam)
            for (a, b), value in zip(e.actions, adv):
                advantages[i, start + a : start + b] = value
            returns[i, : len(ret)] = torch.tensor(ret)
        if r.whiten_advantages:
            mean, std = advantages[tokens.bool()].mean(), advantages[tokens.bool()].std()
            advantages = (advantages - mean) / (std + 1e-8) * tokens
        stats = {"reward": sum(sum(e.rewards) for e in episodes) / len(episodes),
                 "solved": sum(e.solved for e in episodes) / len(episodes),
                 "stopped": sum(e.stopped for e in episodes) / len(episodes),  # the rest ran out of tokens
                 "kl": float(kl.sum() / len(episodes)),
                 "length": float(tokens.sum() / len(episodes))}
        return Batch(ids.cpu(), mask.cpu(), tokens, old_logp, advantages, critic, states, old_values, returns), stats

    def reference_logp(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.reference(input_ids=ids, attention_mask=mask).logits / self.recipe.temperature
        return next_token_logprobs(logits, ids).float().cpu()

    def update(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        """`ppo_epochs` passes over the batch in `num_mini_batches` shuffled minibatches; the mean losses."""
        r = self.recipe
        self.model.train()
        size = batch.ids.shape[0] // r.num_mini_batches
        seen: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": []}
        with heap.returning_freed():  # activations of every batch's width
            for _ in range(r.ppo_epochs):
                order = torch.randperm(batch.ids.shape[0], generator=generator)
                for start in range(0, size * r.num_mini_batches, size):
                    index = order[start : start + size]
                    mb = batch.map(lambda t, index=index: t[index].to(self.device))
                    with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
                        logp, values = self.model(mb.ids, mb.mask, r.temperature, mb.critic)
                    pg, clipfrac = clipped_surrogate(logp.float(), mb.old_logp, mb.advantages, mb.tokens, r.cliprange)
                    vf = clipped_value_loss(values, mb.old_values, mb.returns, mb.states, r.cliprange_value)
                    (pg + r.vf_coef * vf).backward()
                    pg, vf, clipfrac = pg.detach(), vf.detach(), clipfrac.detach()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                    self.optim.step()
                    self.optim.zero_grad(set_to_none=True)
                    for key, value in (("policy_loss", pg), ("value_loss", vf), ("clipfrac", clipfrac)):
                        seen[key].append(value.item())
        return {k: sum(v) / len(v) for k, v in seen.items()}

    def iteration(self, step: int, n_steps: int) -> dict[str, float]:
        """Sample a batch for `train.batch_size` training problems, score it and update on it; every draw is seeded
        from the recipe's seed and `step`, so a resumed run repeats an uninterrupted one."""
        cfg = self.recipe.train
        seed = iteration_seed(cfg.seed, step)
        problems = batch_problems(self.train_problems, cfg.batch_size, seed)
        torch.manual_seed(seed)
        batch, stats = self.batch(self.rollouts(problems))
        for group in self.optim.param_groups:
            group["lr"] = group["base_lr"] * learning_rate(cfg, step, n_steps) / cfg.lr
        return {"step": step + 1, **stats, **self.update(batch, torch.Generator().manual_seed(seed))}

    def greedy_pass(self, problems: list[Problem]) -> float:
        """The share of `problems` that the policy's greedy completion solves."""
        pairs = sample(self.model.policy, self.tok, [self.task.prompt(p) for p in problems], 0.0,
                       self.recipe.max_completion_length)
        return sum(self.task.solves(p, self.task.split_steps(self.tok.decode(c, skip_special_tokens=True)))
                   for p, (_, c) in zip(problems, pairs)) / len(problems)


def load_policy(init: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    directory, _ = resolve_model(init)
    with loading_quietly():
        return (AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32),
                AutoTokenizer.from_pretrained(directory))


def train_ppo(recipe: PPORecipe, out_dir: Path, steps: int | None = None,
              rewards: Rewarder | None = None) -> dict[str, Any]:
    """Train the recipe's policy and critic with PPO and save both to `out_dir`; returns a summary (also
    training.json, beside recipe.yaml). A run killed part-way resumes from `out_dir`'s saved state; `rewards`
    replaces the task's rewards (a test's own)."""
    recipe.check(recipe.name)
    cfg = recipe.train
    n_steps = steps if steps is not None else cfg.steps
    task = get_task(recipe.task)
    init = cfg.init or f"{recipe.task}-policy"
    torch.manual_seed(cfg.seed)
    policy, tok = load_policy(init)
    limit = policy.config.max_position_embeddings
    longest = max(len(tok(task.prompt(p), add_special_tokens=False).input_ids) for p in task.problems(recipe.split))
    if longest + recipe.max_completion_length > limit:  # RoPE past the trained positions gives garbage
        raise TaskError(f"longest prompt ({longest} tokens) + max_completion_length ({recipe.max_completion_length}) "
                        f"exceeds the policy's {limit} positions")
    ppo = PPO(recipe, policy, tok, task, rewards)
    evaluated = task.problems("test", limit=recipe.eval_problems) if recipe.eval_problems else []
    state = out_dir / STATE_FILE
    run = {"run": asdict(recipe), "steps": n_steps}
    history: list[dict[str, float]] = []
    first, before = 0, 0.0
    if state.is_file():
        saved = torch.load(state, map_location="cpu", weights_only=False)
        if saved["run"] != run:
            raise ConfigError(f"{state} holds a run of another recipe or step count; delete it to start afresh")
        ppo.model.load_state_dict(saved["model"])
        ppo.optim.load_state_dict(saved["optim"])
        history, first, before = saved["history"], saved["step"], saved["seconds"]
        log.info("resuming %s at iteration %d of %d", recipe.name, first, n_steps)
    start = saved_at = shown = time.time()
    with Progress(TextColumn(f"[bold]ppo {recipe.name}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("reward {task.fields[reward]:.3f} solved {task.fields[solved]:.2f} "
                             "KL {task.fields[kl]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        job = bar.add_task("ppo", total=n_steps, completed=first, reward=float("nan"), solved=float("nan"),
                           kl=float("nan"))
        for step in range(first, n_steps):
            # greedy pass@1 of the policy as this iteration finds it (after step x batch_size samples)
            greedy = ppo.greedy_pass(evaluated) if evaluated and step % recipe.eval_every == 0 else None
            row = ppo.iteration(step, n_steps)
            if greedy is not None:
                row["greedy_pass@1"] = greedy
            history.append(row)
            bar.update(job, advance=1, reward=row["reward"], solved=row["solved"], kl=row["kl"])
            if not bar.console.is_terminal and time.time() - shown >= 60:  # a log file sees a line a minute
                log.info("ppo %s: iteration %d/%d, reward %.3f, solved %.2f, KL %.3f, value loss %.4f", recipe.name,
                         step + 1, n_steps, row["reward"], row["solved"], row["kl"], row["value_loss"])
                shown = time.time()
            if time.time() - saved_at >= cfg.save_every and step + 1 < n_steps:
                save_state(state, {"run": run, "step": step + 1, "model": ppo.model.state_dict(),
                                   "optim": ppo.optim.state_dict(), "history": history,
                                   "seconds": before + time.time() - start})
                saved_at = time.time()
    final_pass = ppo.greedy_pass(evaluated) if evaluated else None
    seconds = before + time.time() - start
    summary = {"recipe": recipe.name, "task": recipe.task, "init": init, "reward": recipe.reward, "steps": n_steps,
               "samples": n_steps * cfg.batch_size, "seconds": round(seconds, 1),
               "seconds_per_step": round(seconds / max(1, n_steps), 2), "threads": torch.get_num_threads(),
               "device": torch.cuda.get_device_name() if ppo.device == "cuda" else "cpu", "bf16_autocast": ppo.bf16,
               "parameters": sum(p.numel() for p in policy.parameters())}
    for key in ("reward", "solved", "kl", "value_loss"):
        summary[f"{key}_start"], summary[f"{key}_end"] = reward_means(history, key)
    if final_pass is not None:
        summary["greedy_pass@1_start"] = next(row["greedy_pass@1"] for row in history if "greedy_pass@1" in row)
        summary["greedy_pass@1_end"] = final_pass
    summary |= {"config": asdict(recipe), "log": history}
    ppo.model.to("cpu")
    ppo.model.critic.save(policy, recipe.task, out_dir)
    save_checkpoint(policy, tok, out_dir, summary, asdict(recipe))
    write_card(out_dir, summary)
    return summary


def write_card(out_dir: Path, summary: dict[str, Any]) -> None:
    """README.md of the checkpoint: how it was made and what training cost."""
    c = summary["config"]
    train = c["train"]
    reward = ("outcome (exact grader, 0/1)" if c["reward"] == "outcome" else
              f"outcome (exact grader) x {1 - c['process_weight']:.2f} + each step's score by the PRM `{c['prm']}` "
              f"x {c['process_weight']:.2f} / max_steps")
    critic = (f"a critic of its own started from the verifier `{c['critic']}`, advantages over reasoning steps, a "
              f"KL penalty to the starting policy. The critic is in `{out_dir / 'critic'}`, a search verifier with "
              f"that verifier's head (`--verifier {out_dir / 'critic'}`)" if c["critic"] else
              "a value head on the policy, advantages over reasoning steps, a KL penalty to the starting policy. The "
              f"same directory is a policy and, through `--verifier {out_dir}`, a search verifier whose step score "
              "is the critic's value (`value_head.safetensors`)")
    card = f"""# {summary["recipe"]}

The `{summary["init"]}` policy for `{summary["task"]}` after PPO with a critic (Schulman et al., 2017; GAE,
Schulman et al., 2016) on the `{c["split"]}` split: {critic}. Character-level tokenizer; weights stored in bf16.

- Reward: {reward}; KL penalty beta {c["beta"]}.
- Recipe: `{recipe_named(c)[0]}` ({summary["steps"]} iterations x {train["batch_size"]} completions =
  {summary["samples"]} samples; gamma {c["gamma"]}, lam {c["lam"]}, cliprange {c["cliprange"]}, cliprange_value
  {c["cliprange_value"]}, vf_coef {c["vf_coef"]}, {c["ppo_epochs"]} epochs x {c["num_mini_batches"]} minibatches,
  lr {train["lr"]}, critic lr {c["critic_lr"]}, temperature {c["temperature"]}, seed {train["seed"]}).
- Training: {summary["seconds"] / 60:.1f} minutes on {hardware(summary)} ({summary["seconds_per_step"]} s/iteration);
  reward {summary["reward_start"]} -> {summary["reward_end"]}, solved {summary["solved_start"]} ->
  {summary["solved_end"]}, KL {summary["kl_start"]} -> {summary["kl_end"]} (means of the first and last 10% of
  iterations).

{remake_section([], f"ponder train ppo {recipe_named(c)[1]} --out {out_dir}")}## Measured
"""
    (out_dir / "README.md").write_text(card)
