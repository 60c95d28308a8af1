"""`ponder eval`: run methods x budgets over a task's problems through one shared engine.

All jobs run concurrently (up to `concurrency` at once) so the engine can batch their model calls; each row
is written the moment its job finishes, which makes the run resumable. A job whose search raises (a prompt longer
than the model's context, a server error) writes an error row, logged, and the run goes on; a resumed run retries
it (`ponder.jsonl`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ponder.errors import ConfigError
from ponder.jobs import LocalPool, Pool, Work
from ponder.jsonl import ResumableJsonl, check_config, error_fields, is_error
from ponder.lm.base import LanguageModel, SamplingParams
from ponder.lm.load import check_placement, load_model, model_fingerprint
from ponder.search import (
    NEEDS_VERIFIER,
    SearchConfig,
    check_capabilities,
    get_method,
    parse_options,
    pick_policy,
    search,
    typed_options,
)
from ponder.search.base import describe, field_types, fits
from ponder.tasks import Task, get_task
from ponder.tasks.base import Problem, equation_slips
from ponder.trace import Usage
from ponder.verifiers import Verifier, check_aggregation, get_verifier, verifier_fingerprint
from ponder.verifiers.base import OracleVerifier

logger = logging.getLogger(__name__)

# how many problems run at once and how many rows a batch holds: a request's text depends only on its seed, so a
# run may resume with other values (on llama.cpp, fewer problems in flight keep more prompts' cells for reuse)
SCHEDULING = ("concurrency", "max_batch")


@dataclass
class EvalConfig:
    task: str = "game24"
    split: str = "test"
    limit: int | None = None
    offset: int = 0  # skip the split's first `offset` problems (then take `limit`)
    ids: list[str] = field(default_factory=list)  # only these problems of the split, in its order (empty: all)
    model: str = ""  # empty: the policy a method needs on the task, else the task's; a directory, .gguf file or URL
    backend: str = "auto"  # for a .gguf file: hf (auto) or llama.cpp
    template_from: str = ""  # for a server URL: a local model (.gguf or directory) whose chat template renders prompts
    device: str = "cpu"  # where the transformers backend and a learned verifier run: cpu or cuda
    style: str = ""  # the task's prompting style where it has several (gsm8k, math500: zero_shot, few_shot)
    methods: list[str] = field(default_factory=lambda: ["cot", "self_consistency", "best_of_n", "tot_bfs"])
    budgets: list[int] = field(default_factory=lambda: [16])
    verifier: str = ""  # for the methods that need one; empty: the task's default (its shipped PRM, or `judge`)
    ceiling: bool = False  # add a `best_of_n_oracle` row per budget: best-of-n judged by the exact oracle
    aggregate: str = "min"
    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.01  # min-p sampling (Nguyen et al., 2024): distinct proposals without it draw noise
    max_tokens: int = 0  # what a whole solution may take; 0: the task's default
    max_step_tokens: int = 0  # what one step of a step-level search may take; 0: what is left of max_tokens
    seed: int = 0
    concurrency: int = 64
    max_batch: int = 512
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method, its knobs (`beam`: width)
    model_fingerprint: str = ""  # filled in: resuming against a retrained checkpoint must not mix rows
    verifier_fingerprint: str = ""  # likewise for a learned verifier

    @classmethod
    def read(cls, path: Path) -> dict[str, Any]:
        """The fields a YAML file or a saved run's config.json sets, each checked against its type; an unknown
        field or a wrong type is a `ConfigError`."""
        try:
            raw = yaml.safe_load(path.read_text())  # JSON is YAML
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read the eval config {path}: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: an eval config is a mapping of EvalConfig's fields, not {type(raw).__name__}")
        types = field_types(cls)
        unknown = sorted(set(raw) - set(types))
        if unknown:
            raise ConfigError(f"{path}: unknown field {unknown[0]!r}; EvalConfig's fields: {', '.join(types)}")
        for name, value in raw.items():
            if not fits(value, types[name]):
                raise ConfigError(f"{path}: {name}={value!r} is not {describe(types[name])}")
        return raw

    def make_task(self) -> Task:
        return get_task(self.task, **({"style": self.style} if self.style else {}))

    @property
    def default_out(self) -> Path:
        """The folder a run writes to unless told: `runs/eval-TASK-SPLIT-seedS`, a data file named by its stem
        (`data:dir/qa.jsonl` -> `eval-data-qa-...`), never a path inside the name."""
        kind, _, source = self.task.partition(":")
        name = f"{kind}-{Path(source).stem}" if source else kind
        return Path("runs") / f"eval-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}-{self.split}-seed{self.seed}"

    def problems(self, task: Task) -> list[Problem]:
        """The problems the run solves: of the split's (those named in `ids`, if any), `limit` after the first
        `offset`."""
        if not self.ids:
            return task.problems(self.split, limit=None if self.limit is None else self.offset + self.limit)[
                self.offset:]
        wanted = set(self.ids)
        chosen = [p for p in task.problems(self.split) if p.id in wanted]
        if len(chosen) < len(wanted):
            missing = sorted(wanted - {p.id for p in chosen})
            raise ConfigError(f"{len(missing)} of the problem ids are not in {self.task} {self.split!r}, e.g. "
                              f"{missing[0]!r}")
        return chosen[self.offset:][:self.limit]

    def resolved(self) -> EvalConfig:
        task = self.make_task()
        task.problems(self.split, limit=0)  # a bad task or split fails first
        if self.offset < 0:
            raise ConfigError(f"offset is a number of problems to skip, >= 0; got {self.offset}")
        if self.ids:
            self.problems(task)  # an id not in the split fails here
        for m in self.methods:
            get_method(m)  # unknown names fail before any work starts
        if any(b < 1 for b in self.budgets):
            raise ConfigError(f"budgets must be positive, got {self.budgets}")
        if self.max_tokens < 0 or self.max_step_tokens < 0:
            raise ConfigError(f"max_tokens and max_step_tokens are positive (0: the default), got {self.max_tokens}, "
                              f"{self.max_step_tokens}")
        # a bad sampling value fails here, before config.json is saved
        SamplingParams(temperature=self.temperature, top_p=self.top_p, min_p=self.min_p)
        if self.concurrency < 1 or self.max_batch < 1:
            raise ConfigError(f"concurrency and max_batch must be >= 1, got {self.concurrency}, {self.max_batch}")
        stray = sorted(set(self.options) - set(self.methods))
        if stray:
            raise ConfigError(f"knobs set for {', '.join(stray)}, which this run does not use (--methods)")
        options = {m: typed_options(m, knobs) for m, knobs in self.options.items()}
        for m in self.methods:  # the knobs against every budget the method runs at
            for budget in budgets(m, self.budgets):
                parse_options(m, options.get(m, {}), budget)
        check_aggregation(self.aggregate)
        check_capabilities(task, self.methods)
        model = pick_policy(task.name, self.methods, self.model, task.default_model)
        check_placement(model, self.backend, self.device, self.template_from)
        max_tokens = self.max_tokens or task.max_tokens
        needs = any(m in NEEDS_VERIFIER for m in self.methods)
        verifier = self.verifier or (task.default_verifier if needs else "")
        return EvalConfig(**{**asdict(self), "model": model, "max_tokens": max_tokens, "verifier": verifier,
                             "options": options,
                             "model_fingerprint": model_fingerprint(model),
                             "verifier_fingerprint": verifier_fingerprint(verifier)})


CEILING = "best_of_n_oracle"


def budgets(method: str, given: list[int]) -> list[int]:
    """The budgets a method runs at: greedy CoT has no budget knob, so it runs once with budget 1."""
    return [1] if method == "cot" else given


def jobs(cfg: EvalConfig, problems: list[Problem]) -> list[tuple[str, int, Problem]]:
    """(method, budget, problem)."""
    out = []
    for method in [*cfg.methods, *([CEILING] if cfg.ceiling else [])]:
        for budget in budgets(method, cfg.budgets):
            out.extend((method, budget, p) for p in problems)
    return out


async def run_job(task: Task, problem: Problem, method: str, budget: int, lm: LanguageModel,
                  verifier: Verifier | None, cfg: EvalConfig) -> dict[str, Any]:
    search_cfg = SearchConfig(n=budget, temperature=cfg.temperature, top_p=cfg.top_p, min_p=cfg.min_p,
                              max_tokens=cfg.max_tokens, max_step_tokens=cfg.max_step_tokens or None,
                              aggregate=cfg.aggregate, seed=cfg.seed,
                              knobs=None if method == CEILING else parse_options(method, cfg.options.get(method, {})))
    start = time.perf_counter()
    if method == CEILING:  # the samples best-of-n draws, judged by the exact oracle
        trace = await search(task, problem, lm, OracleVerifier(), get_method("best_of_n"), search_cfg)
    else:
        trace = await search(task, problem, lm, verifier, get_method(method), search_cfg)
    answers = [node.extra["answer"] for node in trace.nodes if node.terminal and "answer" in node.extra]
    correct = task.grade(problem, trace.answer)
    return {
        "method": method, "budget": budget, "problem_id": problem.id, "difficulty": task.difficulty(problem),
        "answer": trace.answer,
        "correct": correct, "usage": asdict(trace.usage),
        # pass@n: some solution the search wrote is right, whichever it chose (an exact judge's ceiling)
        "any_correct": correct or any(task.grade(problem, a) for a in answers),
        "latency": round(time.perf_counter() - start, 3),
        "solution": trace.solution, "trace": {"nodes": [asdict(n) for n in trace.nodes], "extra": trace.extra},
    }


def error_row(task: Task, problem: Problem, method: str, budget: int, err: Exception) -> dict[str, Any]:
    """The row of a job whose search raised: graded wrong, with the error's message and type."""
    return {"method": method, "budget": budget, "problem_id": problem.id, "difficulty": task.difficulty(problem),
            "correct": False, "any_correct": False, **error_fields(err)}


def summarize(rows: list[dict[str, Any]], by_difficulty: bool = False) -> list[dict[str, Any]]:
    """One row per method and budget (and per difficulty, for tasks that grade theirs).

    `accuracy` and `pass` are over all the group's problems, a problem whose search raised (an error row) counted
    wrong; `errors` counts those. Compute (wall seconds, the `Usage` fields) is the mean over the problems that
    finished: an error row records none."""
    groups: dict[tuple[str, int, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"], r.get("difficulty") if by_difficulty else None), []).append(r)
    table = []
    for (method, budget, difficulty), rs in groups.items():
        n = len(rs)
        ran = [r for r in rs if not is_error(r)]
        m = max(1, len(ran))
        slips = [equation_slips(r.get("solution") or "") for r in ran]
        equations = sum(written for _, written in slips)
        table.append({
            "method": method, "budget": budget, **({"difficulty": difficulty} if by_difficulty else {}),
            "problems": n, "errors": n - len(ran),
            "accuracy": sum(r["correct"] for r in rs) / n,
            "pass": sum(r.get("any_correct", r["correct"]) for r in rs) / n,
            "wall_seconds": sum(r.get("latency", 0.0) for r in ran) / m,  # while sharing the engine with the others
            # share of the problems that ran whose token budget could not be counted (and so was not held)
            "budget_uncounted": sum(r["usage"].get("uncounted_budgets", 0) > 0 for r in ran) / m,
            # share of the problems that ran where the verifier's scores carried no information (`search.guard`)
            "uninformative": sum("verifier_uninformative" in r.get("trace", {}).get("extra", {}) for r in ran) / m,
            # share of the equations the chosen solutions write (`a op b = c`, the last of a line) that are false
            "slips": sum(false for false, _ in slips) / equations if equations else None,
            # per problem; records written before a field existed count 0 for it
            **{f.name: sum(r["usage"].get(f.name, 0) for r in ran) / m for f in fields(Usage)},
        })
    return table


@dataclass
class Loaded:
    """What one worker of an eval holds: the run's config, its task (prompting through the policy's chat template),
    the policy and the verifier."""

    cfg: EvalConfig
    task: Task
    lm: LanguageModel
    verifier: Verifier | None


@dataclass
class Setup:
    """Loads a worker's models (`cfg.model` and `cfg.verifier`), or takes the ones given (this process only)."""

    cfg: EvalConfig
    lm: LanguageModel | None = None
    verifier: Verifier | None = None

    def __call__(self) -> Loaded:
        cfg = self.cfg
        lm = self.lm or load_model(cfg.model, max_rows=cfg.max_batch, backend=cfg.backend,
                                   template_from=cfg.template_from, device=cfg.device)
        task = cfg.make_task()
        task.template = lm.chat_prompt
        verifier = self.verifier or (get_verifier(cfg.verifier, lm, cfg.device) if cfg.verifier else None)
        return Loaded(cfg, task, lm, verifier)


async def solve_job(loaded: Loaded, job: tuple[str, int, Problem]) -> dict[str, Any]:
    """One (method, budget, problem) job's row, on a worker's models."""
    method, budget, problem = job
    return await run_job(loaded.task, problem, method, budget, loaded.lm, loaded.verifier, loaded.cfg)


def run_eval(cfg: EvalConfig, out: Path, lm: LanguageModel | None = None, show_progress: bool = True,
             verifier: Verifier | None = None, pool: Pool | None = None) -> list[dict[str, Any]]:
    """Run (or resume) an evaluation into `out`; returns the summary table, also saved as summary.json (and, for
    a task whose problems have a difficulty, the same by difficulty as summary-by-difficulty.json). `lm` and
    `verifier`: objects to use in place of loading `cfg.model` and `cfg.verifier`. `pool`: where the jobs run
    (`ponder.jobs`; default this process), each of its workers loading the models; the rows are the same. A
    problem whose search raised is an error row (`summarize` says how they count); the run ends by logging how
    many there are."""
    cfg = cfg.resolved()
    check_config(out, cfg, free=SCHEDULING, save=False)
    if pool is not None and (lm is not None or verifier is not None):
        raise ConfigError("a model or verifier passed as an object stays in this process: name it in the config to "
                          "run on a pool of workers")
    task = cfg.make_task()
    problems = cfg.problems(task)
    results = ResumableJsonl(out / "results.jsonl")
    todo = [j for j in jobs(cfg, problems) if (j[0], j[1], j[2].id) not in results.done]
    with (pool or LocalPool()).open(Work(Setup(cfg, lm, verifier), solve_job)) as workers:
        check_config(out, cfg, free=SCHEDULING)  # saved once the models have loaded
        right = sum(r["correct"] for r in results.rows if not is_error(r))
        with Progress(TextColumn("[bold]eval {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("acc {task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      disable=not show_progress) as bar:
            bar_job = bar.add_task(cfg.task, total=len(results.done) + len(todo), completed=len(results.done),
                                   acc="-")
            finished = len(results.done)

            def done(job: tuple[str, int, Problem], row: dict[str, Any] | Exception) -> None:
                nonlocal right, finished
                method, budget, problem = job
                if isinstance(row, Exception):  # this problem fails alone: an error row, retried on resuming
                    logger.warning("eval %s@%d, problem %s: %s: %s", method, budget, problem.id,
                                   type(row).__name__, row)
                    row = error_row(task, problem, method, budget, row)
                results.append(row)
                right += row["correct"]
                finished += 1
                bar.update(bar_job, advance=1, acc=f"{right / finished:.2f}")

            workers.map(todo, cfg.concurrency, done)
    rows = results.rows
    errors = sum(map(is_error, rows))
    if errors:
        logger.warning("%d errors in %d rows of %s: rerun with the same folder to retry them", errors, len(rows),
                       out / "results.jsonl")
    order = {(m, b): i for i, (m, b, _) in enumerate(jobs(cfg, [Problem("", "")]))}
    table = sorted(summarize(rows), key=lambda r: order.get((r["method"], r["budget"]), 1 << 30))
    (out / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    if any(r.get("difficulty") is not None for r in rows):
        graded = sorted(summarize(rows, by_difficulty=True), key=lambda r: (
            order.get((r["method"], r["budget"]), 1 << 30), _difficulty_key(r["difficulty"])))
        (out / "summary-by-difficulty.json").write_text(json.dumps(graded, indent=2) + "\n")
    return table


def _difficulty_key(difficulty: Any) -> tuple[bool, float, str]:
    """Numbers in numeric order (9 before 10), then names (MATH's levels) in text order."""
    number = isinstance(difficulty, int | float)
    return not number, float(difficulty) if number else 0.0, str(difficulty)


def greedy_accuracy(task: str, model: str, problems: int, seed: int, out: Path, max_tokens: int = 0) -> float:
    """Share of the first `problems` test problems that greedy CoT solves, writing up to `max_tokens` (0: the task's
    default) (a fresh run: a retrained model in the same folder must not resume old rows)."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = EvalConfig(task=task, split="test", limit=problems, model=model, methods=["cot"], seed=seed,
                     max_tokens=max_tokens)
    table = run_eval(cfg, out, show_progress=False)
    return next(row["accuracy"] for row in table if row["method"] == "cot")
