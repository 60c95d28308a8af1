"""The optimisation loop every Ponder trainer shares: AdamW, warm-up then cosine decay, gradient clipping,
bf16 autocast where the CPU has it, and a progress bar with the running loss."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ponder import heap
from ponder.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 700
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    bf16: str | bool = "auto"
    init: str = ""  # continue from this checkpoint (shipped name or directory) instead of a fresh model
    save_every: float = 300.0  # seconds between saves of the training state (a killed run resumes from it)
    compile: bool = False  # torch.compile the model (fuses the many small ops around the matmuls; see bench sft)
    attention: str = "sdpa"  # attention kernel while training: sdpa, or eager (faster backward on short CPU rows)


@dataclass
class LoopResult:
    losses: list[float]
    tokens: int
    seconds: float
    bf16: bool
    device: str = "cpu"

    def summary(self) -> dict[str, Any]:
        tail = self.losses[-20:]
        return {"steps": len(self.losses), "seconds": round(self.seconds, 1), "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name() if self.device == "cuda" else "cpu",
                "bf16_autocast": self.bf16, "tokens": self.tokens,
                "tokens_per_second": round(self.tokens / max(self.seconds, 1e-9)),
                "final_loss": round(sum(tail) / max(1, len(tail)), 4)}


def hardware(summary: dict[str, Any]) -> str:
    """Where a training summary's run took place, for model cards."""
    device = summary.get("device", "cpu")
    return f"{summary['threads']} CPU threads (2-core machine)" if device == "cpu" else f"one {device} GPU"


def use_bf16(setting: str | bool, device: str = "cpu") -> bool:
    """bf16 autocast helps only where the CPU has native bf16 (AVX512-BF16/AMX), and on any CUDA GPU; never
    required."""
    if setting == "auto" and device == "cuda":
        return True
    if setting == "auto":
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX") or _has_cpu_flag("avx512_bf16")
    return bool(setting)


def _has_cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


STATE_FILE = "train-state.pt"  # in the output folder while a run is under way; removed once the checkpoint is saved


def train_loop(model: torch.nn.Module, data: Iterator[dict[str, torch.Tensor]], cfg: TrainConfig, n_steps: int,
               loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor], name: str,
               state: Path | None = None, run: dict[str, Any] | None = None) -> LoopResult:
    """`n_steps` optimiser steps on batches from `data`. With `state`, the model, optimiser, losses and step are
    saved there every `cfg.save_every` seconds, and a run that finds the file resumes from it: the data stream is
    replayed up to the saved step (every stream is deterministic for its seed), so a killed and resumed run ends
    with the same weights as an uninterrupted one. `run` (the recipe) must match the saved one."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    # A CUDA GPU is used when there is one (the same recipe trains in minutes there); the model comes back
    # to the CPU at the end, so saving and evaluating never depend on it.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    bf16 = use_bf16(cfg.bf16, device)
    losses: list[float] = []
    tokens, first, before = 0, 0, 0.0
    run = {"run": run or {}, "steps": n_steps}
    if state is not None and state.is_file():
        saved = torch.load(state, map_location="cpu", weights_only=False)
        if saved["run"] != run:
            raise ConfigError(f"{state} holds a run of another recipe or step count; delete it to start afresh")
        model.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optim"])
        losses, tokens, first, before = saved["losses"], saved["tokens"], saved["step"], saved["seconds"]
        for _ in range(first):  # replay the stream to where the saved run stopped
            next(data)
    start = saved_at = shown = time.time()
    model.train()
    step_model = training_model(model, cfg)
    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with heap.returning_freed(), bar:
        job = bar.add_task(name, total=n_steps, completed=first, loss=float("nan"))
        for step in range(first, n_steps):
            batch = {key: value.to(device) for key, value in next(data).items()}
            for group in optim.param_groups:
                group["lr"] = learning_rate(cfg, step, n_steps)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(step_model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(batch["attention_mask"].sum())
            bar.update(job, advance=1, loss=sum(losses[-20:]) / len(losses[-20:]))
            if not bar.console.is_terminal and time.time() - shown >= 60:  # a log file sees a line a minute
                log.info("%s: step %d/%d, loss %.4f, %.0f s", name, step + 1, n_steps,
                         sum(losses[-20:]) / len(losses[-20:]), before + time.time() - start)
                shown = time.time()
            if state is not None and time.time() - saved_at >= cfg.save_every and step + 1 < n_steps:
                save_state(state, {"run": run, "step": step + 1, "model": model.state_dict(),
                                    "optim": optim.state_dict(), "losses": losses, "tokens": tokens,
                                    "seconds": before + time.time() - start})
                saved_at = time.time()
    if cfg.attention != "sdpa":
        model.set_attn_implementation("sdpa")  # what the saved config and inference use
    model.to("cpu").eval()
    return LoopResult(losses, tokens, before + time.time() - start, bf16, device)


def learning_rate(cfg: TrainConfig, step: int, n_steps: int) -> float:
    """The learning rate at `step` of `n_steps`: linear warm-up over `cfg.warmup` steps, then cosine decay to 10%."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, n_steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def training_model(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """The module a training step calls: the model with the recipe's attention kernel, compiled if asked. The
    compiled module shares its parameters with `model`, which is what gets saved."""
    if cfg.attention != "sdpa":
        model.set_attn_implementation(cfg.attention)
    return torch.compile(model, dynamic=True) if cfg.compile else model


def save_state(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename: a kill while saving leaves the previous state whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, out_dir: Path, summary: dict[str, Any],
                    recipe: dict[str, Any]) -> None:
    """A Hugging Face directory plus what made it: training.json (the summary) and recipe.yaml.
    Weights are stored in bf16, which halves the shipped size; Ponder upcasts to fp32 to run them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    (out_dir / STATE_FILE).unlink(missing_ok=True)  # the run is complete: nothing left to resume
