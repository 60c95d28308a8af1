"""`ponder bench sft`: where an SFT step's time goes on this machine, and what the training options buy.

One recipe's model and batches, trained for the same steps under each setting in turn, in one process: the same
initial weights (same seed) and the same batches, so only the setting differs. Each row splits a step into
forward, backward and optimiser time, gives the tokens per second (tokens that are not padding), and the ratio
to the first row, which is how SFT trained before the options existed (bf16 autocast where the CPU has it, the
model's modules run one op at a time). Building the batches (tokenizing, bucketing by length) is timed once; it
is the same for every setting.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import torch

from ponder.tasks import get_task
from ponder.train.data import solver_examples
from ponder.train.loop import training_model, use_bf16
from ponder.train.sft import SFTRecipe, batches, start_model

SETTINGS = {
    "before (bf16 autocast where the CPU has it)": {"bf16": "auto", "compile": False},
    "fp32": {"bf16": False, "compile": False},
    "bf16 + eager attention": {"bf16": "auto", "attention": "eager"},
    "bf16 + torch.compile": {"bf16": "auto", "compile": True},
    "bf16 + eager attention + torch.compile": {"bf16": "auto", "attention": "eager", "compile": True},
}


def sft_throughput(recipe: SFTRecipe, steps: int = 20, warmup: int = 5, rounds: int = 4,
                   settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Each setting trains its own copy of the model on the same batches. After `warmup` steps each, the timed
    steps run in `rounds` interleaved rounds (setting A's share, B's, C's, then again), so that a slow spell of
    this noisy machine falls on every setting alike; a setting's rate is its median round."""
    settings = settings or SETTINGS
    task = get_task(recipe.task)
    cfg = recipe.train
    examples = solver_examples(task, recipe.splits, recipe.walk, cfg.seed, limit=recipe.problems or None,
                               draw=recipe.stream_draw())
    _, tok = start_model(cfg.init, recipe.model)
    stream = batches(examples, tok, cfg.batch_size, recipe.model.max_positions, random.Random(cfg.seed))
    start = time.perf_counter()
    data = [next(stream) for _ in range(warmup + steps)]
    data_seconds = (time.perf_counter() - start) / len(data)
    timed = data[warmup:]
    padding = 1 - sum(int(b["attention_mask"].sum()) for b in timed) / sum(b["attention_mask"].numel() for b in timed)
    runs = {name: _Run(recipe, replace(cfg, **knobs)) for name, knobs in settings.items()}
    for run in runs.values():
        run.train(data[:warmup], timed=False)
    share = -(-steps // rounds)
    for r in range(rounds):
        for run in runs.values():
            run.train(timed[r * share : (r + 1) * share], timed=True)
    rows = [{"setting": name, **run.summary()} for name, run in runs.items()]
    for row in rows:
        row["vs_before"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    return {"recipe": recipe.name, "batch_size": cfg.batch_size, "steps": steps, "rounds": rounds,
            "threads": torch.get_num_threads(), "data_ms": data_seconds * 1000, "padding": padding,
            "tokens_per_step": sum(int(b["attention_mask"].sum()) for b in timed) / steps, "rows": rows}


class _Run:
    """One setting: its model, optimiser and timings."""

    def __init__(self, recipe: SFTRecipe, cfg: Any) -> None:
        torch.manual_seed(cfg.seed)
        self.model, _ = start_model(cfg.init, recipe.model)
        self.model.train()
        self.step_model = training_model(self.model, cfg)
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        self.bf16, self.compile, self.attention = use_bf16(cfg.bf16), cfg.compile, cfg.attention
        self.warmup_s, self.loss = 0.0, float("nan")
        self.split = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.rates: list[float] = []
        self.steps = 0

    def train(self, batches: list[dict[str, torch.Tensor]], timed: bool) -> None:
        spent, tokens = 0.0, 0
        for batch in batches:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.step_model(**batch).loss
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            self.optim.step()
            self.optim.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            self.loss = loss.item()
            if not timed:
                self.warmup_s += t3 - t0
                continue
            for key, seconds in zip(self.split, (t1 - t0, t2 - t1, t3 - t2)):
                self.split[key] += seconds
            spent, tokens = spent + t3 - t0, tokens + int(batch["attention_mask"].sum())
            self.steps += 1
        if timed and batches:
            self.rates.append(tokens / spent)

    def summary(self) -> dict[str, Any]:
        rates = sorted(self.rates)
        return {"bf16": self.bf16, "compile": self.compile, "attention": self.attention, "warmup_s": self.warmup_s,
                **{f"{k}_ms": v / max(1, self.steps) * 1000 for k, v in self.split.items()},
                "tokens_per_s": rates[len(rates) // 2], "final_loss": self.loss}
