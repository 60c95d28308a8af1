"""`ponder collect star` and `ponder bench star`: STaR, the Self-Taught Reasoner (Zelikman et al., 2022,
arXiv:2203.14465).

The loop of the paper, on a task whose answers are known but whose rationales (step-by-step solutions) are not:

1. Generate: the current policy writes a rationale for every training problem; those that reach the right
   answer are kept.
2. Rationalize: for each problem it failed, the policy is shown the answer as a hint and writes again; a
   rationale that now reaches the answer is kept as if it had been written without the hint (the plain prompt
   is what it is trained on).
3. Fine-tune: the *original* model (not the last iteration's: the paper restarts to avoid drift) is trained on
   everything kept, for a number of steps that grows by 20% per outer loop, and becomes the next policy.

The paper's original model is a pretrained LM prompted with a few rationales. Ponder's tiny policies read
nothing they were not trained on, so the original model is trained here from a small *seed* set of solver-written
rationales (`seed_problems` training problems after the first `seed_offset`), each shown with and without the answer
hint; that teaches both the format and how to read a hint. The rationales are written by an SFT `walk`: `paths`
(every solver solution, a fixed set), `moves`, or `streams` (a search with its dead ends as one solution, drawn
afresh each time; `detour` as in `ponder.train.data.StreamDraw`). The fine-tuning data keeps the seed set, so
every iteration's policy can still rationalize (`seed_share` sets its share of the examples; by default seed
examples and kept rationales are drawn alike, so a few hundred kept rationales are a few percent of the data). The
remaining training problems give STaR only their answers.

Every iteration's policy is scored by greedy accuracy on the test split. A killed run resumes at the first
iteration without a `summary.json`; rationales are regenerated with the same seeds.

`ponder bench star` runs it with and without rationalization, side by side: both runs start from the same original
model (trained once on the seed set) and see the same problems with the same seeds; the only difference is whether
failures are retried with the answer as a hint. The loop trains and evaluates, so it lives with the experiment
drivers above `collect`, `train` and `evaluate`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ponder.errors import ConfigError
from ponder.evaluate.runner import greedy_accuracy
from ponder.jsonl import check_config, error_fields, is_error
from ponder.lm.base import LanguageModel, Metered
from ponder.lm.engine import Engine
from ponder.lm.hf import HFBackend
from ponder.search.base import SearchConfig, sample_solutions
from ponder.tasks import Backtracking, Hintable, StepOracle, Task, get_task, require
from ponder.tasks.base import Problem
from ponder.trace import Usage
from ponder.train.data import Example, StreamDraw, endless, hinted_walks, mixture, solver_pairs
from ponder.train.loop import TrainConfig
from ponder.train.sft import ModelShape, SFTRecipe, train_policy

logger = logging.getLogger(__name__)

FILTERS = ("outcome", "steps")
STAR_WALKS = ("paths", "moves", "streams")  # SFT walks whose prompts are the plain prompt (a hint can follow it)


@dataclass
class StarConfig:
    task: str = "game24"
    seed_problems: int = 150  # training problems whose solver rationales make the seed set
    seed_offset: int = 0  # training problems before the seed set (STaR learns from them and those after it)
    walk: str = "paths"  # how the seed set's solver rationales are written (STAR_WALKS)
    detour: float = 0.0  # walk `streams`: the share of states that first try a dead move
    problems: int | None = None  # training problems STaR sees answers of (None: the rest of the train split)
    iterations: int = 3
    rationalize: bool = True
    samples: int = 1  # rationales drawn per problem and try (1 with temperature 0: greedy, as in the paper)
    temperature: float = 0.0
    filter: str = "outcome"  # outcome: right answer (the paper); steps: also every step right (exact oracle)
    seed_steps: int = 1000  # training steps of the original model on the seed set
    steps: int = 300  # fine-tuning steps of the first outer loop
    step_growth: float = 1.2  # the paper's +20% training steps per outer loop
    seed_share: float | None = None  # share of fine-tuning examples from the seed set (None: drawn like the rest)
    batch_size: int = 32
    lr: float = 2e-3
    model: dict[str, int] | None = None  # ModelShape of the original model (None: the task's policy shape)
    eval_problems: int = 100  # test problems for greedy accuracy
    max_tokens: int = 0  # 0: the task's default
    seed: int = 0

    def resolved(self) -> StarConfig:
        task = get_task(self.task)
        if self.filter not in FILTERS:
            raise ConfigError(f"unknown STaR filter {self.filter!r}; choose from {', '.join(FILTERS)}")
        if self.iterations < 1 or self.samples < 1 or self.seed_problems < 1 or self.seed_offset < 0:
            raise ConfigError("iterations, samples and seed_problems must be positive, seed_offset not negative")
        if self.walk not in STAR_WALKS:
            raise ConfigError(f"STaR's seed set is written by one of {', '.join(STAR_WALKS)}, not {self.walk!r}")
        if not 0 <= self.detour <= 1 or (self.detour and self.walk != "streams"):
            raise ConfigError(f"detour is a share (0 to 1) of a `streams` walk's states; got {self.detour} "
                              f"with walk {self.walk!r}")
        if self.seed_share is not None and not 0 <= self.seed_share <= 1:
            raise ConfigError(f"seed_share must be between 0 and 1, got {self.seed_share}")
        if self.filter == "steps":
            require(task, StepOracle, "STaR's filter 'steps'")
        shape = asdict(ModelShape(**(self.model or {}))) if self.model else asdict(default_shape(self.task))
        return StarConfig(**{**asdict(self), "model": shape,
                             "max_tokens": self.max_tokens or get_task(self.task).max_tokens})

    def train_config(self) -> TrainConfig:
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, warmup=min(100, self.seed_steps // 10),
                           seed=self.seed)


def default_shape(task: str) -> ModelShape:
    """The shape of the task's shipped SFT recipe."""
    return SFTRecipe.load(f"{task}-policy").model


def split_problems(task: Task, cfg: StarConfig) -> tuple[list[Problem], list[Problem]]:
    """(seed set, problems STaR learns from): disjoint slices of the training split."""
    start, end = cfg.seed_offset, cfg.seed_offset + cfg.seed_problems
    train = task.problems("train", limit=None if cfg.problems is None else end + cfg.problems)
    seed, rest = train[start:end], train[:start] + train[end:]
    rest = rest if cfg.problems is None else rest[: cfg.problems]
    if not rest:
        raise ConfigError(f"{task.name}: no training problems left after the {cfg.seed_problems}-problem seed set")
    return seed, rest


class SeedSet:
    """The seed set's rationales, each with and without its answer hint: a fixed list of pairs for walk `paths`,
    else drawn afresh by the walk (`len`: the distinct examples, or two a problem for a drawn walk)."""

    def __init__(self, task: Task, problems: list[Problem], cfg: StarConfig) -> None:
        self.task, self.problems, self.cfg = task, problems, cfg
        self.pairs = solver_pairs(task, problems, hinted=True) if cfg.walk == "paths" else None

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else 2 * len(self.problems)

    def examples(self, seed: int) -> Iterator[Example]:
        if self.pairs is not None:
            return endless(self.pairs, seed)
        return hinted_walks(self.task, self.problems, self.cfg.walk, seed, StreamDraw(self.cfg.detour))


def train_model(cfg: StarConfig, seed_set: SeedSet, steps: int, out: Path, name: str,
                init: str = "", kept: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Train (from `init`, or from scratch) on the seed set and the `kept` rationales for `steps` steps; save to
    `out`. With `seed_share` set, that share of the examples is drawn from the seed set and the rest from `kept`;
    else all are drawn alike (for a drawn walk: in proportion to the seed set's two examples a problem)."""
    kept = kept or []
    if not kept:
        examples = seed_set.examples(cfg.seed)
    elif seed_set.pairs is not None and cfg.seed_share is None:
        examples = endless(seed_set.pairs + kept, cfg.seed)
    else:
        share = len(seed_set) / (len(seed_set) + len(kept)) if cfg.seed_share is None else cfg.seed_share
        examples = mixture([seed_set.examples(cfg.seed), endless(kept, cfg.seed + 1)], [share, 1 - share], cfg.seed)
    return train_policy(examples, steps, out, name, cfg.train_config(), ModelShape(**(cfg.model or {})),
                        {"kind": "star", "init": init, **asdict(cfg)}, init=init,
                        summary={"examples": len(seed_set) + len(kept)})


async def rationales(task: Task, problems: list[Problem], lm: LanguageModel, cfg: StarConfig, iteration: int,
                     ) -> list[dict[str, Any]]:
    """One generate (+ rationalize) pass: a row per problem with the kept rationale, if any, and how it was found."""
    search = SearchConfig(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    gate = asyncio.Semaphore(128)

    def keep(problem: Problem, found: list[list[str]]) -> list[str] | None:
        for steps in found:
            if task.solves(problem, steps) and (cfg.filter == "outcome" or all_steps_right(task, problem, steps)):
                return steps
        return None

    with Progress(TextColumn(f"[bold]star iteration {iteration}: rationales"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[kept]} kept"), TimeElapsedColumn()) as bar:
        job = bar.add_task("rationales", total=len(problems), kept=0)
        kept = 0

        async def one(problem: Problem) -> dict[str, Any]:
            nonlocal kept
            row: dict[str, Any] = {"problem_id": problem.id, "question": problem.question, "steps": None,
                                   "source": None}
            async with gate:
                try:
                    found = await sample_solutions(task, problem, lm, search, cfg.samples, cfg.temperature,
                                                   ("star", iteration))
                    steps, source = keep(problem, found), "generated"
                    if steps is None and cfg.rationalize:
                        hint = require(task, Hintable, "STaR's rationalization").answer_hint(problem)
                        found = await sample_solutions(task, problem, lm, search, cfg.samples, cfg.temperature,
                                                       ("star-hint", iteration), hint=hint)
                        steps, source = keep(problem, found), "rationalized"
                except Exception as err:  # this problem keeps no rationale; the loop goes on
                    logger.warning("star iteration %d, problem %s: %s: %s", iteration, problem.id,
                                   type(err).__name__, err)
                    row.update(error_fields(err))
                    steps = None
            kept += steps is not None
            bar.update(job, advance=1, kept=kept)
            if steps is not None:
                row.update(steps=steps, source=source, steps_right=all_steps_right(task, problem, steps))
            return row

        return list(await asyncio.gather(*(one(p) for p in problems)))


def all_steps_right(task: Task, problem: Problem, steps: list[str]) -> bool | None:
    """Every step right by the exact oracle (a stream's: the path it ends on; its dead ends are wrong by design)."""
    if not isinstance(task, StepOracle):
        return None
    path = task.judged(problem, steps) if isinstance(task, Backtracking) else steps
    return all(x > 0 for x in task.step_labels(problem, path))


def run_star(cfg: StarConfig, out: Path, base: Path | None = None) -> dict[str, Any]:
    """Run (or resume) STaR into `out`: base/ (the original model), iter-N/ (model, rationales.jsonl,
    summary.json) and summary.json with a row per iteration. `base` reuses an original model trained with the
    same settings (the benchmark shares one between its runs with and without rationalization)."""
    cfg = cfg.resolved()
    check_config(out, cfg)
    task = get_task(cfg.task)
    seed_set, problems = split_problems(task, cfg)
    seeds = SeedSet(task, seed_set, cfg)
    base_dir = base or out / "base"
    if not (base_dir / "training.json").exists():
        if base is not None:
            raise ConfigError(f"{base} holds no trained original model")
        train_model(cfg, seeds, cfg.seed_steps, base_dir, f"star {cfg.task}: original model")
    check_base(base_dir, cfg)
    base_row = {"steps": 0, "examples": len(seeds), "seconds": 0.0}
    rows = [cached_row(out / "iter-0" / "summary.json", partial(iteration_row, cfg, 0, base_dir, out, base_row, []))]
    for n in range(1, cfg.iterations + 1):
        rows.append(cached_row(out / f"iter-{n}" / "summary.json",
                               partial(outer_loop, task, problems, seeds, cfg, n, base_dir, out)))
    summary = {"config": asdict(cfg), "out": str(out), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def cached_row(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The row saved at `path`, made (and saved) first if the run has not got that far."""
    if not path.exists():
        row = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row, indent=2) + "\n")
    return json.loads(path.read_text())


def outer_loop(task: Task, problems: list[Problem], seed_set: SeedSet, cfg: StarConfig, n: int,
               base_dir: Path, out: Path) -> dict[str, Any]:
    """Loop n: rationales from the last loop's policy (the original model's for the first), then the original
    model fine-tuned on what was kept."""
    start = time.time()
    folder = out / f"iter-{n}"
    current = base_dir if n == 1 else out / f"iter-{n - 1}" / "model"
    lm = Engine(HFBackend(str(current)), max_rows=512)
    usage = Usage()  # the generate and rationalize passes, metered as every search method is
    try:
        found = asyncio.run(rationales(task, problems, Metered(lm, usage), cfg, n))
    finally:
        lm.close()
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "rationales.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in found)
    kept = [(task.prompt(p), task.join_steps(r["steps"])) for p, r in zip(problems, found, strict=True)
            if r["steps"] is not None]
    steps = round(cfg.steps * cfg.step_growth ** (n - 1))
    shutil.rmtree(folder / "model", ignore_errors=True)
    trained = train_model(cfg, seed_set, steps, folder / "model", f"star {cfg.task}: iteration {n}",
                          init=str(base_dir), kept=kept)
    trained.update(seconds=round(time.time() - start, 1), generated_tokens=usage.generated_tokens)
    return iteration_row(cfg, n, folder / "model", out, trained, found)


BASE_KNOBS = ("task", "seed_problems", "seed_offset", "walk", "detour", "seed_steps", "batch_size", "lr", "model",
              "seed")


def check_base(base: Path, cfg: StarConfig) -> None:
    """An original model shared between runs must come from the same seed set and training."""
    made = yaml.safe_load((base / "recipe.yaml").read_text())
    made = {k: made.get(k, getattr(StarConfig, k, None)) for k in BASE_KNOBS}  # knobs newer than the model: defaults
    differ = {k: (made[k], getattr(cfg, k)) for k in BASE_KNOBS if made[k] != getattr(cfg, k)}
    if differ:
        raise ConfigError(f"the original model in {base} was trained with other settings {differ} (then, now)")


def iteration_row(cfg: StarConfig, n: int, model: Path, out: Path, trained: dict[str, Any],
                  found: list[dict[str, Any]]) -> dict[str, Any]:
    """What one outer loop kept, what it trained on, and the greedy test accuracy of its policy."""
    kept = [r for r in found if r["steps"] is not None]
    accuracy = greedy_accuracy(cfg.task, str(model), cfg.eval_problems, cfg.seed, out / "eval" / f"iter-{n}",
                               cfg.max_tokens)
    return {
        "iteration": n,
        "generated": sum(r["source"] == "generated" for r in kept),
        "rationalized": sum(r["source"] == "rationalized" for r in kept),
        "coverage": round(len(kept) / len(found), 4) if found else None,
        "errors": sum(map(is_error, found)),  # problems whose sampling raised: none kept
        "wrong_step_kept": sum(r.get("steps_right") is False for r in kept),
        "examples": trained["examples"], "train_steps": trained["steps"], "seconds": trained["seconds"],
        "generated_tokens": trained.get("generated_tokens", 0),  # the iteration's rationales (and hinted retries)
        "test_accuracy": accuracy,
    }


def star_benchmark(cfg: StarConfig, out: Path, base: Path | None = None) -> dict[str, Any]:
    """Rows {iteration, train_steps, kept and test accuracy with / without rationalization}. `base`: an original
    model trained earlier with the same seed-set settings (by default one is trained under `out`)."""
    with_hint = run_star(replace(cfg, rationalize=True), out / "rationalize", base=base)
    without = run_star(replace(cfg, rationalize=False), out / "no-rationalize",
                       base=base or out / "rationalize" / "base")
    rows = []
    for a, b in zip(with_hint["rows"], without["rows"], strict=True):
        rows.append({"iteration": a["iteration"], "train_steps": a["train_steps"],
                     "kept": f"{a['generated']}+{a['rationalized']}", "coverage": a["coverage"],
                     "wrong_step_kept": a["wrong_step_kept"], "accuracy": a["test_accuracy"],
                     "kept_plain": b["generated"], "coverage_plain": b["coverage"],
                     "accuracy_plain": b["test_accuracy"], "seconds": a["seconds"] + b["seconds"],
                     "tokens": a.get("generated_tokens"), "tokens_plain": b.get("generated_tokens")})
    return {"config": with_hint["config"], "out": str(out), "rows": rows}
