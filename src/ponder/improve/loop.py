"""The generator-verifier loop (`ponder improve RECIPE`): search makes the data, the policy and the verifier learn from
it, round after round, as AlphaZero's policy and value networks improve each other (Silver et al., 2017; for language
models TS-LLM, Feng et al., 2024, and rStar-Math's self-evolution, Guan et al., 2025).

Round r (r >= 1), each phase in `OUT/round-r/`:
1. `search`: the recipe's method with round r-1's policy and verifier over the training problems (an eval run on the
   train split, `search/results.jsonl`, every tree kept in its row).
2. `keep`: the finished solutions the task's *outcome* check accepts (`kept.jsonl`, the policy's data) and every
   tree path (as a verifier judges it: a stream of search's, the path it ends on) with the value targets the search
   estimated (`records.jsonl`, the verifier's data; `ponder.improve.trees`).
   The exact step oracle is never asked here: real tasks have none; it only measures.
3. `policy`: round r-1's policy fine-tuned on the kept solutions (or the search's visit distribution, or each search
   written as one stream with its dead ends and back steps: `distil.target`), each batch mixed with replay of
   earlier data (earlier rounds' kept solutions and the data that made the start policy) so the policy keeps its
   spread of good proposals (expert iteration on its own choices alone loses proposal recall).
4. `verifier`: round r-1's verifier fine-tuned on the round's value targets (soft labels).
5. `measure`: on the held-out split: greedy (and the share of its written equations that are false), pass@N and
   best-of-N by the round's verifier, the step searches' top-1 at each budget, the verifier's step AUROC against the
   exact oracle on the round's own policy's samples, proposal recall@K; with the round's generated tokens and CPU
   minutes, one row per round (round 0: the start).

Every phase writes a marker (`PHASE.json`, with its CPU seconds) when it is done; a run killed at any moment (SIGKILL
included) resumes at the first phase without one: the search from its resumable rows, training from its saved state.
Each round's policy and verifier are Hugging Face directories with a card naming the command that made them.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from ponder.collect.mc import exact_labels
from ponder.collect.records import write_jsonl
from ponder.errors import ConfigError, PonderError
from ponder.evaluate.metrics import auroc
from ponder.evaluate.proposals import ProposalConfig, measure, summarize
from ponder.evaluate.runner import EvalConfig, run_eval
from ponder.improve.recipe import ImproveRecipe
from ponder.improve.trees import Tree
from ponder.jobs import Pool
from ponder.jsonl import ResumableJsonl, check_config, is_error
from ponder.lm.base import LanguageModel
from ponder.lm.engine import Engine
from ponder.lm.hf import resolve_model
from ponder.lm.load import load_model
from ponder.tasks import Backtracking, StepOracle, Task, get_task, require
from ponder.tasks.base import Problem, equation_slips
from ponder.train.data import Example, StreamDraw, endless, mixture, solver_examples, walks
from ponder.train.sft import ModelShape, SFTRecipe, train_policy
from ponder.train.verifier import VerifierRecipe, train_verifier
from ponder.verifiers import Verifier, get_verifier
from ponder.verifiers.learned import HeadSpec

logger = logging.getLogger(__name__)

# free to change on resuming: how many rounds to run (a finished run goes on with more)
FREE = ("rounds",)
# a verifier grown from the policy when the loop starts without one: Math-Shepherd's step-tag convention
NEW_HEAD = {"kind": "step_tag", "marker": " ки", "good_token": "+", "bad_token": "-"}


class Phase:
    """One phase of one round: done when its marker file exists; the marker holds what it measured."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.marker = folder / f"{name}.json"

    @property
    def result(self) -> dict[str, Any] | None:
        return json.loads(self.marker.read_text()) if self.marker.exists() else None

    def finish(self, result: dict[str, Any], cpu_start: float) -> dict[str, Any]:
        """Write the marker (whole or not at all), with the phase's CPU seconds."""
        result = {**result, "cpu_seconds": round(time.process_time() - cpu_start, 1)}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(self.marker)
        return result


class Loop:
    """A run of a recipe in `out` (see the module doc). `command`: what the cards say made the checkpoints. `pool`:
    where each round's search runs (`ponder.jobs`; default this process), each worker loading the round's policy and
    verifier from the run folder (a cluster's workers must see it); the searched trees are the same."""

    def __init__(self, recipe: ImproveRecipe, out: Path, command: str, pool: Pool | None = None) -> None:
        self.recipe, self.out, self.command, self.pool = recipe, out, command, pool
        self.task = get_task(recipe.task)
        check_config(out, recipe, free=FREE)

    def folder(self, n: int) -> Path:
        return self.out / f"round-{n}"

    def policy(self, n: int) -> str:
        return self.recipe.policy if n == 0 and not self.recipe.start.seed_problems else str(self.folder(n) / "policy")

    def verifier(self, n: int) -> str:
        """Round n's verifier ("" : none yet); the start's in every round when the recipe trains none (a task
        without a step oracle has no self-test example for a learned one)."""
        retrained = n > 0 and self.recipe.value.train.steps > 0
        return str(self.folder(n) / "verifier") if retrained else self.recipe.verifier

    def run(self) -> list[dict[str, Any]]:
        """Every round not done yet; returns one row per round (round 0 measures the start), also written to
        `rounds.jsonl`, with `rounds.png` plotting accuracy per round."""
        if self.recipe.start.seed_problems:
            self.start_phase()
        rows = [self.measure_round(0)]
        for n in range(1, self.recipe.rounds + 1):
            logger.info("round %d of %d", n, self.recipe.rounds)
            self.search_phase(n)
            self.keep_phase(n)
            self.policy_phase(n)
            self.verifier_phase(n)
            rows.append(self.measure_round(n))
        write_jsonl(rows, self.out / "rounds.jsonl")
        plot_rounds(rows, self.out / "rounds.png", f"ponder improve {self.recipe.name}")
        return rows

    # --- 0. a weak start ---------------------------------------------------------------------------------------------

    def start_phase(self) -> dict[str, Any]:
        """The start policy, trained from scratch on the solver's solutions of the seed problems."""
        phase = Phase(self.folder(0), "policy")
        if phase.result is not None:
            return phase.result
        cpu = time.process_time()
        s = self.recipe.start
        shape = ModelShape(**s.model) if s.model else SFTRecipe.load(f"{self.recipe.task}-policy").model
        name = f"improve {self.recipe.name}: start policy"
        summary = train_policy(self.seed_examples(s.train.seed), s.train.steps, self.folder(0) / "policy", name,
                               s.train, shape, {"kind": "improve-start", **self.recipe.to_dict()},
                               summary={"seed_problems": len(self.seed_set()), "walk": s.walk}, resumable=True)
        self.card(self.folder(0) / "policy", 0, "policy", summary)
        return phase.finish(summary, cpu)

    def seed_set(self) -> list[Problem]:
        """A weak start's seed problems: the training problems after the first round's `search.problems`."""
        searched, seeds = self.recipe.search.problems, self.recipe.start.seed_problems
        return self.task.problems("train", limit=searched + seeds)[searched:] if seeds else []

    def seed_examples(self, seed: int) -> Iterator[Example] | None:
        """A weak start's supervised data, endless: the solver's solutions of its seed problems, drawn by the start's
        walk; None without a weak start."""
        s, seeds = self.recipe.start, self.seed_set()
        return walks(self.task, seeds, s.walk, seed, draw=StreamDraw(s.detour)) if seeds else None

    # --- 1. search -----------------------------------------------------------------------------------------------

    def search_config(self, n: int) -> EvalConfig:
        s = self.recipe.search
        guided = bool(self.verifier(n - 1))
        where = (dict(limit=s.problems, offset=self.recipe.offset(n)) if s.select == "first" else
                 dict(ids=json.loads((self.folder(n) / "searched.json").read_text())["ids"]))
        return EvalConfig(task=self.recipe.task, split=self.recipe.split(n), **where, model=self.policy(n - 1),
                          methods=[s.method if guided else s.unguided], budgets=[s.n], verifier=self.verifier(n - 1),
                          options={s.method: s.options} if s.options and guided else {}, temperature=s.temperature,
                          min_p=s.min_p, max_tokens=s.max_tokens, seed=self.recipe.seed + n)

    def searched(self, n: int) -> list[Problem]:
        """The problems round n searches: the recipe's (`select: first`), or those its screen chose (`unsolved`)."""
        return self.search_config(n).problems(self.task)

    def screen(self, n: int, lm: LanguageModel) -> dict[str, Any]:
        """`select: unsolved`: round n-1's policy answers the split's problems greedily (not the weak start's seed
        set, nor with `fresh` one an earlier round searched); `problems` of those it gets wrong, drawn with the
        round's seed, are round n's (`searched.json`). Returns what the screen found and spent."""
        s, split, path = self.recipe.search, self.recipe.split(n), self.folder(n) / "searched.json"
        if path.exists():
            return {k: v for k, v in json.loads(path.read_text()).items() if k != "ids"}
        taken = {p.id for p in self.seed_set()} if split == "train" else set()
        if s.fresh:
            taken |= {p.id for k in range(1, n) if self.recipe.split(k) == split for p in self.searched(k)}
        candidates = [p for p in self.task.problems(split) if p.id not in taken]
        cfg = EvalConfig(task=self.recipe.task, split=split, ids=[p.id for p in candidates], model=self.policy(n - 1),
                         methods=["cot"], budgets=[1], max_tokens=s.max_tokens, seed=self.recipe.seed + n)
        row = run_eval(cfg, self.folder(n) / "screen", lm=lm)[0]
        graded = {r["problem_id"]: r["correct"] for r in ResumableJsonl(self.folder(n) / "screen" /
                                                                          "results.jsonl").rows if not is_error(r)}
        wrong = [p.id for p in candidates if graded.get(p.id) is False]
        if not wrong:
            raise PonderError(f"round {n}: the policy answers all {len(candidates)} screened {split!r} problems right: "
                              "nothing unsolved to search")
        drawn = set(random.Random(f"{self.recipe.seed}|{n}|unsolved").sample(wrong, min(s.problems, len(wrong))))
        found = {"screened": len(candidates), "unsolved": len(wrong),
                 "screen_tokens": round(row["generated_tokens"] * (row["problems"] - row["errors"]))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")  # whole or not at all: a run killed here screens again on resuming
        tmp.write_text(json.dumps({**found, "ids": [i for i in wrong if i in drawn]}) + "\n")
        tmp.replace(path)
        return found

    def search_phase(self, n: int) -> dict[str, Any]:
        phase = Phase(self.folder(n), "search")
        if phase.result is not None:
            return phase.result
        cpu = time.process_time()
        if self.recipe.search.select == "first":
            self.recipe.searched(n)  # too few problems left fails before the model loads
        lm = load_model(self.policy(n - 1))
        try:
            screened = self.screen(n, lm) if self.recipe.search.select == "unsolved" else {}
            cfg = self.search_config(n)
            row = run_eval(cfg, self.folder(n) / "search", lm=None if self.pool else lm, pool=self.pool)[0]
            task = copy.copy(self.task)  # the loop's own task stays free of the model (the solver pickles it)
            task.template = lm.chat_prompt  # the prompts as the policy read them (a chat model's, templated)
            prompts = {p.id: task.prompt(p) for p in cfg.problems(self.task)}
            (self.folder(n) / "prompts.json").write_text(json.dumps(prompts) + "\n")
        finally:
            close(lm)
        tokens = round(row["generated_tokens"] * (row["problems"] - row["errors"])) + screened.get("screen_tokens", 0)
        return phase.finish({"problems": row["problems"], "errors": row["errors"], "solved": row["pass"],
                             "top1": row["accuracy"], "generated_tokens": tokens, **screened}, cpu)

    # --- 2. keep -------------------------------------------------------------------------------------------------

    def trees(self, n: int) -> Iterator[tuple[Problem, Tree]]:
        """The round's searched trees in the split's order (not the order the searches finished in), graded by the
        outcome check only; a problem whose search failed has none."""
        rows = {r["problem_id"]: r for r in ResumableJsonl(self.folder(n) / "search" / "results.jsonl").rows}
        for problem in self.searched(n):
            row = rows.get(problem.id)
            if row is not None and not is_error(row):
                yield problem, Tree.from_row(self.task, problem, row["trace"]["nodes"], row["trace"].get("extra"))

    def keep_phase(self, n: int) -> dict[str, Any]:
        phase = Phase(self.folder(n), "keep")
        if phase.result is not None:
            return phase.result
        cpu = time.process_time()
        d = self.recipe.distil
        prompts = json.loads((self.folder(n) / "prompts.json").read_text())
        kept, records, slipped = [], [], 0
        for problem, tree in self.trees(n):
            judged = tree.judged(self.task, problem)  # a stream's steps: the path it ends on
            records += [r.to_dict() for r in judged.records(self.task, problem, self.recipe.value.targets)]
            if d.target == "visits":
                pairs = tree.visit_pairs(self.task, prompts[problem.id], d.visit_copies)
            elif d.target == "stream":
                stream = tree.stream(require(self.task, Backtracking, "distil.target stream"), problem)
                pairs = [(prompts[problem.id], self.task.join_steps(stream))] if stream else []
            else:
                right = [self.task.join_steps(s) for s in tree.right_solutions()]
                true = [text for text in right if not d.calculator or equation_slips(text)[0] == 0]
                slipped += len(right) - len(true)
                pairs = [(prompts[problem.id], text) for text in true[: d.per_problem]]
            kept += [{"problem_id": problem.id, "prompt": p, "completion": c} for p, c in pairs]
        write_jsonl(kept, self.folder(n) / "kept.jsonl")
        write_jsonl(records, self.folder(n) / "records.jsonl")
        return phase.finish({"kept": len(kept), "kept_problems": len({k["problem_id"] for k in kept}),
                             "records": len(records), **({"slipped": slipped} if d.calculator else {})}, cpu)

    def kept_pairs(self, n: int) -> list[tuple[str, str]]:
        lines = (self.folder(n) / "kept.jsonl").read_text().splitlines()
        return [(r["prompt"], r["completion"]) for r in map(json.loads, lines)]

    # --- 3. policy -----------------------------------------------------------------------------------------------

    def examples(self, n: int) -> Iterator[tuple[str, str]]:
        """The round's kept pairs, each batch mixed with `replay` of earlier data: earlier rounds' kept pairs, a weak
        start's seed set and the data of the SFT recipe that made the start policy, in equal parts."""
        d, seed = self.recipe.distil, self.recipe.seed + n
        current = self.kept_pairs(n)
        if not current:
            raise PonderError(f"round {n} kept no solution of {self.recipe.search.problems} training problems: "
                              "nothing to distil (search with a larger budget, or from a stronger start)")
        earlier = [p for k in range(1, n) for p in self.kept_pairs(k)]
        replay: list[Iterator[Example]] = [endless(earlier, seed + 1)] if earlier else []
        if seeded := self.seed_examples(seed + 2):
            replay.append(seeded)
        if d.replay_from:
            start = SFTRecipe.load(d.replay_from)
            if start.data:
                raise ConfigError(f"distil.replay_from {d.replay_from}: a recipe trained on a data file cannot be "
                                  "replayed; name one trained on the task's solver walks")
            replay.append(solver_examples(self.task, start.splits, start.walk, seed,
                                          limit=d.replay_problems or start.problems or None, draw=start.stream_draw()))
        if not replay or d.replay == 0:
            return endless(current, seed)
        weights = [1 - d.replay] + [d.replay / len(replay)] * len(replay)
        return mixture([endless(current, seed), *replay], weights, seed)

    def policy_phase(self, n: int) -> dict[str, Any]:
        phase = Phase(self.folder(n), "policy")
        if phase.result is not None:
            return phase.result
        cpu = time.process_time()
        cfg = self.recipe.distil.train
        out = self.folder(n) / "policy"
        shape = ModelShape(max_positions=self.recipe.distil.max_positions)
        summary = train_policy(self.examples(n), cfg.steps, out, f"improve {self.recipe.name}: round {n} policy",
                               replace(cfg, seed=cfg.seed + n), shape,
                               {"kind": "improve-policy", "round": n, **self.recipe.to_dict()}, init=self.policy(n - 1),
                               summary={"init": self.policy(n - 1), "kept": len(self.kept_pairs(n))}, resumable=True)
        self.card(out, n, "policy", summary)
        return phase.finish(summary, cpu)

    # --- 4. verifier ---------------------------------------------------------------------------------------------

    def verifier_phase(self, n: int) -> dict[str, Any]:
        phase = Phase(self.folder(n), "verifier")
        if phase.result is not None or not self.recipe.value.train.steps:
            return phase.result or {}
        cpu = time.process_time()
        start = self.verifier(n - 1)
        head = start_head(start) if start else HeadSpec(**(self.recipe.value.head or NEW_HEAD))
        cfg = self.recipe.value.train
        recipe = VerifierRecipe(name=f"{self.recipe.name}-round{n}-verifier", task=self.recipe.task, head=head,
                                data=str(self.folder(n) / "records.jsonl"), labels="soft",
                                train=replace(cfg, init=start or self.policy(n), seed=cfg.seed + n))
        out = self.folder(n) / "verifier"
        summary = train_verifier(recipe, out)
        self.card(out, n, "verifier", summary)
        return phase.finish({k: summary[k] for k in ("records", "cut_to_fit", "examples", "labelled_steps", "steps",
                                                      "seconds", "final_loss")}, cpu)

    # --- 5. measure ----------------------------------------------------------------------------------------------

    def measure_round(self, n: int) -> dict[str, Any]:
        phase = Phase(self.folder(n), "measure")
        if phase.result is None:
            cpu = time.process_time()
            phase.finish(measure_policy(self.task, self.recipe, self.policy(n), self.verifier(n),
                                        self.folder(n) / "measure"), cpu)
        return self.row(n, phase.result or {})

    def row(self, n: int, measured: dict[str, Any]) -> dict[str, Any]:
        """The round's table row: what making it cost (round 0 cost nothing here) and what it measures."""
        made = [Phase(self.folder(n), p).result or {} for p in ("search", "keep", "policy", "verifier")]
        measured = {k: v for k, v in measured.items() if k != "cpu_seconds"}
        return {"round": n, "policy": self.policy(n), "verifier": self.verifier(n),
                "kept": made[1].get("kept", 0), "train_solved": made[0].get("solved"),
                "generated_tokens": made[0].get("generated_tokens", 0),
                "cpu_minutes": round(sum(m.get("cpu_seconds", 0.0) for m in made) / 60, 2), **measured}

    def card(self, out: Path, n: int, what: str, summary: dict[str, Any]) -> None:
        """README.md of a round's checkpoint: what it is and the command that made it."""
        made = {"choices": "the kept solutions", "visits": "the search's visit distribution", "stream":
                "the searches written as one solution each (back steps at dead ends)"}[self.recipe.distil.target]
        if n == 0:
            data = (f"trained from scratch on the task's solver's solutions of {self.recipe.start.seed_problems} "
                    f"training problems, walk `{self.recipe.start.walk}` (the loop's weak start)")
        elif what == "policy":
            data = (f"fine-tuned from `{self.policy(n - 1)}` on {made} of round {n}'s search "
                    f"(`{self.folder(n) / 'kept.jsonl'}`), mixed with {self.recipe.distil.replay:.0%} replay")
        else:
            data = (f"fine-tuned from `{self.verifier(n - 1) or self.policy(n)}` on the value targets "
                    f"({self.recipe.value.targets}) of round {n}'s search trees (`{self.folder(n) / 'records.jsonl'}`)")
        s = self.recipe.search
        which = (f"from number {self.recipe.offset(n) + 1}" if s.select == "first" else
                 "that the previous round's policy answered wrong")
        searched = (f" The search was {s.method if self.verifier(n - 1) else s.unguided} at budget {s.n} on "
                    f"{len(self.searched(n))} `{self.recipe.split(n)}` problems ({which}); the exact step oracle made "
                    "none of its data." if n else "")
        (out / "README.md").write_text(
            f"# {self.recipe.name}, round {n} {what}\n\nThe {self.recipe.task} {what} of round {n} of the "
            f"generator-verifier loop (`ponder.improve`), {data}.{searched}\n\n"
            f"- Training: {summary['steps']} steps, {summary['seconds'] / 60:.1f} minutes, final loss "
            f"{summary['final_loss']}.\n- Measured: `{self.out / 'rounds.jsonl'}`, row {n}.\n\n"
            f"## Made by\n\n`{self.command}` (the recipe and seed in `{self.out / 'config.json'}`)\n")


def close(lm: LanguageModel) -> None:
    """Stop an engine's worker thread (a model over HTTP has none)."""
    if isinstance(lm, Engine):
        lm.close()


def start_head(verifier: str) -> HeadSpec:
    """The head the start verifier declares (what its retrained rounds keep)."""
    directory, _ = resolve_model(verifier)
    head = json.loads((Path(directory) / "config.json").read_text()).get("ponder_verifier")
    if not head:
        raise ConfigError(f"{verifier} declares no verifier head (`ponder_verifier` in config.json): the loop "
                          "retrains a learned PRM")
    return HeadSpec(**{k: v for k, v in head.items() if k not in ("task", "self_test")})


def measure_policy(task: Task, recipe: ImproveRecipe, policy: str, verifier: str, out: Path) -> dict[str, Any]:
    """A round's measurements on the held-out split (see the module doc)."""
    m = recipe.measure
    lm = load_model(policy)
    judge = get_verifier(verifier) if verifier else None
    sampler = "best_of_n" if judge else "self_consistency"  # without a verifier: its samples give pass@N alone
    try:
        base = dict(task=recipe.task, split=m.split, limit=m.problems, model=policy, verifier=verifier,
                    max_tokens=m.max_tokens, seed=recipe.seed)
        table = run_eval(EvalConfig(**base, methods=["cot", sampler], budgets=[m.samples]), out / "sampled", lm=lm,
                         verifier=judge)
        found = {r["method"]: r for r in table}
        row: dict[str, Any] = {"greedy": found["cot"]["accuracy"], "greedy_slips": found["cot"]["slips"],
                               f"pass@{m.samples}": found[sampler]["pass"],
                               f"bon@{m.samples}": found[sampler]["accuracy"] if judge else None}
        row.update({f"{method}@{budget}": None for method in m.methods for budget in m.budgets})
        if m.methods and judge:
            table = run_eval(EvalConfig(**base, methods=m.methods, budgets=m.budgets,
                                        options={k: v for k, v in m.options.items() if k in m.methods}),
                             out / "search", lm=lm, verifier=judge)
            row.update({f"{r['method']}@{r['budget']}": r["accuracy"] for r in table})
        row["step_auroc"] = step_auroc(task, judge, out / "sampled" / "results.jsonl", m.split,
                                       m.problems) if judge else None
        row[f"recall@{m.recall_k}"] = proposal_recall(task, lm, m.split, m.problems, m.recall_k, recipe.seed)
    finally:
        close(lm)
    below = [k for k, v in row.items() if "@" in k and not k.startswith(("pass", "recall")) and v is not None
             and v < row["greedy"]]
    if below:
        logger.warning("%s: %s below greedy (%.2f): the verifier misjudges these problems", policy, ", ".join(below),
                       row["greedy"])
    row["below_greedy"] = below
    return row


def step_auroc(task: Task, verifier: Verifier, results: Path, split: str, limit: int) -> float | None:
    """The verifier's step-level AUROC against the exact oracle on the best-of-N samples (the round's own policy's
    solutions; a stream's steps: the path it ends on, `Task.judged`); None for a task without a step oracle."""
    if not isinstance(task, StepOracle):
        return None
    problems = {p.id: p for p in task.problems(split, limit=limit)}
    sampled = []
    for row in ResumableJsonl(results).rows:
        if row["method"] == "best_of_n" and not is_error(row):
            tree = Tree.from_row(task, problems[row["problem_id"]], row["trace"]["nodes"])
            problem = problems[row["problem_id"]]
            solutions = [task.judged(problem, tree.path(leaf)) for leaf in tree.outcomes]
            sampled.append((problem, [s for s in solutions if s]))

    async def score() -> list[list[list[float]]]:
        return [await verifier.score(task, p, sols) for p, sols in sampled]

    scores = asyncio.run(score())
    flat = [x for per in scores for s in per for x in s]
    labels = [y > 0 for p, sols in sampled for s in sols for y in exact_labels(task, p, s)]
    value = auroc(flat, labels)
    return None if value != value else round(value, 4)  # NaN: one class missing


def proposal_recall(task: Task, lm: LanguageModel, split: str, limit: int, k: int, seed: int) -> float | None:
    """Proposal recall@k over the states along a solver solution of each problem (`ponder bench proposals`' solver
    states); None for a task without a step oracle."""
    if not isinstance(task, StepOracle):
        return None
    cfg = ProposalConfig(k=k, recall_at=(k,), seed=seed)
    records, usage = asyncio.run(measure(task, task.problems(split, limit=limit), lm, cfg, sources=("solver",)))
    overall = next(r for r in summarize(records, cfg, usage) if r["depth"] == "all")
    return round(overall[f"recall@{k}"], 4)


def plot_rounds(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy per round, one line per measured column, and the verifier's step AUROC and the proposal recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [k for k in rows[0] if k in ("greedy", "step_auroc") or ("@" in k and k != "below_greedy")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for column in columns:
        values = [r.get(column) for r in rows]
        if any(v is not None for v in values):  # a column the task cannot measure (no step oracle) is left out
            ax.plot([r["round"] for r in rows], values, marker="o", label=column.replace("_", " "),
                    linestyle="--" if column == "step_auroc" or column.startswith("recall@") else "-")
    spent = list(itertools.accumulate(r.get("generated_tokens", 0) for r in rows))
    ax.set_xlabel("round (0: the start) / generated tokens of the rounds so far")
    ax.set_ylabel("accuracy; step AUROC, recall (dashed)")
    ax.set_xticks([r["round"] for r in rows], [f"{r['round']}\n{t / 1e6:.2f}M" for r, t in zip(rows, spent)])
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_improve(recipe: ImproveRecipe, out: Path, command: str, pool: Pool | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the loop into `out`; returns one row per round. `pool`: where the searches run (`Loop`)."""
    return Loop(recipe, out, command, pool).run()

