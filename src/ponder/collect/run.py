"""`ponder collect`: sample solutions from the policy and label their steps, into resumable JSONL.

Labellers: `oracle` (the task's exact checker), `mc` (Math-Shepherd rollouts), `omegaprm` (binary search over
an MC tree; also writes MATH-APS), `states` (oracle-labelled random walks through the task's states, no
policy), `search` (every path a step-level search explored, labelled by the oracle: the states a verifier meets
when it judges that search's proposals). Each problem runs as one concurrent job through the shared engine (or
on a pool of workers, `ponder.jobs`); its records are written by this process the moment it is labelled, keyed so
that a killed run resumes without losing or duplicating one (a problem cut off half-way runs again with the same
seeds and skips what it wrote). A problem whose labelling raises (a prompt longer than the model's context, a
server error) gets an error row in problems.jsonl, logged, and the run goes on; a resumed run retries it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ponder.collect.mc import mc_labels, oracle_labels
from ponder.collect.omegaprm import OmegaConfig, omegaprm, tree_records
from ponder.collect.records import StepRecord
from ponder.collect.states import state_walks
from ponder.errors import ConfigError
from ponder.jobs import LocalPool, Pool, Work
from ponder.jsonl import ResumableJsonl, check_config, error_fields
from ponder.lm.base import LanguageModel, SamplingParams
from ponder.lm.hf import fingerprint
from ponder.lm.load import check_placement
from ponder.search import get_method, search
from ponder.search.base import SearchConfig, sample_solutions
from ponder.tasks import StepOracle, Task, get_task, require
from ponder.tasks.base import Problem
from ponder.verifiers import Verifier, get_verifier

logger = logging.getLogger(__name__)

LABELLERS = ("oracle", "mc", "omegaprm", "states", "search")
ORACLE_LABELLERS = ("oracle", "states", "search")  # the labellers whose labels are the exact oracle's


@dataclass
class CollectConfig:
    labeller: str = "mc"
    task: str = "game24"
    split: str = "train"
    limit: int | None = 200
    model: str = ""  # empty: the task's shipped policy
    samples: int = 4  # solutions sampled per problem (oracle, mc)
    n: int = 8  # mc: rollouts per step prefix
    temperature: float = 0.8
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 0  # 0: the task's default
    seed: int = 0
    omega: dict[str, float] | None = None  # omegaprm knobs (see OmegaConfig)
    method: str = "tot_bfs"  # search: the method whose tree is labelled (its budget is `samples`)
    verifier: str = ""  # search: the verifier that guides it (default: the task's shipped PRM)
    aggregate: str = "min"  # search: how the verifier's step scores make one
    concurrency: int = 64
    max_batch: int = 512
    device: str = "cpu"  # where the policy and a learned verifier run: cpu or cuda
    model_fingerprint: str = ""

    def resolved(self) -> CollectConfig:
        if self.labeller not in LABELLERS:
            raise ConfigError(f"unknown labeller {self.labeller!r}; choose from {', '.join(LABELLERS)}")
        task = get_task(self.task)
        task.problems(self.split, limit=0)
        if self.labeller in ORACLE_LABELLERS:
            require(task, StepOracle, f"`ponder collect {self.labeller}`")
        if self.split == "test":
            raise ConfigError("labels are training data: collect from the train split (test stays held out)")
        if self.samples < 1 or self.n < 1 or self.concurrency < 1 or self.max_batch < 1:
            raise ConfigError("samples, n, concurrency and max_batch must be positive")
        # a bad sampling value fails here, before config.json is saved
        SamplingParams(temperature=self.temperature, top_p=self.top_p, min_p=self.min_p)
        omega = asdict(OmegaConfig(**(self.omega or {}))) if self.labeller == "omegaprm" else None
        model = self.model or f"{self.task}-policy"
        check_placement(model, device=self.device)
        guide = {"method": "", "verifier": "", "aggregate": ""}
        if self.labeller == "search":
            get_method(self.method)
            guide = {"method": self.method, "verifier": self.verifier or f"{self.task}-prm",
                     "aggregate": self.aggregate}
        return CollectConfig(**{**asdict(self), **guide, "model": model, "omega": omega,
                                "max_tokens": self.max_tokens or get_task(self.task).max_tokens,
                                "model_fingerprint": fingerprint(model)})

    def search_config(self) -> SearchConfig:
        return SearchConfig(n=self.samples, temperature=self.temperature, top_p=self.top_p, min_p=self.min_p,
                            max_tokens=self.max_tokens, aggregate=self.aggregate or "last", seed=self.seed)


def record_key(row: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return (row["problem_id"], tuple(row["steps"]))


async def distinct_samples(task: Task, problem: Problem, lm: LanguageModel, cfg: SearchConfig,
                           samples: int) -> list[list[str]]:
    """The policy's solutions for a problem, duplicates dropped (a repeated solution adds no information)."""
    found = await sample_solutions(task, problem, lm, cfg, samples, cfg.temperature, "collect")
    seen: dict[tuple[str, ...], list[str]] = {}
    for steps in found:
        if steps:
            seen.setdefault(tuple(steps), steps)
    return list(seen.values())


async def searched_paths(task: Task, problem: Problem, lm: LanguageModel, cfg: CollectConfig,
                         verifier: Verifier) -> list[StepRecord]:
    """Every root-to-leaf path of the tree that `cfg.method` grows on the problem, labelled by the oracle (a
    path's record labels all its prefixes, so the leaves cover every node)."""
    trace = await search(task, problem, lm, verifier, get_method(cfg.method), cfg.search_config())
    parents = {node.parent for node in trace.nodes}
    leaves = [node.id for node in trace.nodes[1:] if node.id not in parents]
    return [oracle_labels(task, problem, trace.path(leaf), i) for i, leaf in enumerate(leaves)]


@dataclass
class Labelled:
    """A problem's labels: its step records, its line in problems.jsonl (written last: it marks the problem done)
    and, for OmegaPRM, its MATH-APS record."""

    records: list[StepRecord]
    problem: dict[str, Any]
    aps: dict[str, Any] | None = None


async def label_problem(task: Task, problem: Problem, lm: LanguageModel, cfg: CollectConfig,
                        verifier: Verifier | None = None) -> Labelled:
    """Label one problem."""
    spent = 0
    aps = None
    if cfg.labeller == "search":
        assert verifier is not None
        records = await searched_paths(task, problem, lm, cfg, verifier)
    elif cfg.labeller == "states":
        records = state_walks(task, problem, cfg.samples, cfg.seed)
    elif cfg.labeller == "omegaprm":
        tree = await omegaprm(task, problem, lm, cfg.search_config(), OmegaConfig(**(cfg.omega or {})))
        aps_record, records = tree_records(task, problem, tree)
        aps = aps_record.to_dict()
        spent = tree.spent
    else:
        solutions = await distinct_samples(task, problem, lm, cfg.search_config(), cfg.samples)

        async def one(i: int, steps: list[str]) -> StepRecord:
            if cfg.labeller == "oracle":
                return oracle_labels(task, problem, steps, i)
            return await mc_labels(task, problem, lm, steps, cfg.n, cfg.search_config(), i)

        records = list(await asyncio.gather(*(one(i, s) for i, s in enumerate(solutions))))
        spent = sum(r.rollouts for r in records)
    return Labelled(records, {"problem_id": problem.id, "records": len(records), "rollouts": spent}, aps)


@dataclass
class Loaded:
    """What one worker of a collection holds: the run's config, its task, the policy and the verifier."""

    cfg: CollectConfig
    task: Task
    lm: LanguageModel
    verifier: Verifier | None


@dataclass
class Setup:
    """Loads a worker's policy (`cfg.model`) and, for the `search` labeller, its verifier; or takes the policy
    given (this process only)."""

    cfg: CollectConfig
    lm: LanguageModel | None = None

    def __call__(self) -> Loaded:
        lm = self.lm
        if lm is None:
            from ponder.lm.engine import Engine
            from ponder.lm.hf import HFBackend

            lm = Engine(HFBackend(self.cfg.model, device=self.cfg.device), max_rows=self.cfg.max_batch)
        verifier = get_verifier(self.cfg.verifier, device=self.cfg.device) if self.cfg.labeller == "search" else None
        return Loaded(self.cfg, get_task(self.cfg.task), lm, verifier)


async def label_job(loaded: Loaded, problem: Problem) -> Labelled:
    """One problem's labels, on a worker's models."""
    return await label_problem(loaded.task, problem, loaded.lm, loaded.cfg, loaded.verifier)


def run_collect(cfg: CollectConfig, out_dir: Path, lm: LanguageModel | None = None,
                show_progress: bool = True, pool: Pool | None = None) -> dict[str, Any]:
    """Run (or resume) a collection into `out_dir`; returns a summary (also saved as summary.json). `lm`: a policy
    to use in place of loading `cfg.model`. `pool`: where the problems are labelled (`ponder.jobs`; default this
    process), each of its workers loading the models; the records are the same."""
    cfg = cfg.resolved()
    check_config(out_dir, cfg, save=False)
    if pool is not None and lm is not None:
        raise ConfigError("a model passed as an object stays in this process: name it in the config to run on a "
                          "pool of workers")
    files = {"records": ResumableJsonl(out_dir / "records.jsonl", key=record_key, what="step record"),
             "problems": ResumableJsonl(out_dir / "problems.jsonl", key=lambda r: r["problem_id"], what="problem row")}
    if cfg.labeller == "omegaprm":
        files["math-aps"] = ResumableJsonl(out_dir / "math-aps.jsonl", key=lambda r: r["question_id"],
                                           what="MATH-APS record")
    records = files["records"]
    problems = get_task(cfg.task).problems(cfg.split, limit=cfg.limit)
    todo = [p for p in problems if p.id not in files["problems"].done]
    with (pool or LocalPool()).open(Work(Setup(cfg, lm), label_job)) as workers:
        check_config(out_dir, cfg)  # saved once the model and the verifier have loaded
        with Progress(TextColumn(f"[bold]collect {cfg.labeller} {cfg.task}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[records]} records"), TimeElapsedColumn(), TimeRemainingColumn(),
                      disable=not show_progress) as bar:
            job = bar.add_task("collect", total=len(problems), completed=len(problems) - len(todo),
                               records=len(records.rows))

            def done(problem: Problem, labelled: Labelled | Exception) -> None:
                if isinstance(labelled, Exception):  # this problem fails alone: an error row, retried on resuming
                    logger.warning("collect %s, problem %s: %s: %s", cfg.labeller, problem.id,
                                   type(labelled).__name__, labelled)
                    files["problems"].append({"problem_id": problem.id, **error_fields(labelled)})
                else:
                    if labelled.aps is not None:
                        files["math-aps"].append(labelled.aps)
                    for record in labelled.records:
                        records.append(record.to_dict())
                    files["problems"].append(labelled.problem)
                bar.update(job, advance=1, records=len(records.rows))

            workers.map(todo, cfg.concurrency, done)
    summary = summarize_records(records.rows)
    summary["problems"] = len(problems)
    summary["errors"] = len(files["problems"].errors)
    summary["rollouts"] = sum(r.get("rollouts", 0) for r in files["problems"].rows)
    if summary["errors"]:
        logger.warning("%d errors in %d problems of %s: rerun with the same folder to retry them", summary["errors"],
                       len(problems), out_dir / "problems.jsonl")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize_records(rows: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [x for r in rows for x in r["labels"] if x is not None]
    return {
        "records": len(rows), "labelled_steps": len(steps),
        "good_share": round(sum(x > 0 for x in steps) / max(1, len(steps)), 4),
        "solved_share": round(sum(bool(r["outcome"]) for r in rows) / max(1, len(rows)), 4),
    }
