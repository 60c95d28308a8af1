"""Training process and outcome reward models on step records (TRL no longer ships a PRM trainer).

One trainer for the four heads of `ponder.verifiers.learned` (step-tag PRM, token-classification PRM, ORM, value):
the model reads the same layout it will be scored with, and the loss is binary cross-entropy between the head's
"good" logit at each labelled step and the label: soft (the Monte-Carlo share, as Math-Shepherd's soft estimator) or
hard (0/1). An ORM sees only the outcome, at the last step; a value model (OVM) sees the outcome too, at every step.
Models start from the task's policy, which already reads the task's text; the marker token is added to its
vocabulary when missing.

A step-tag head that declares `check_after` is trained on two losses at once: the tag's, and (weighted by
`check_weight`) next-token cross-entropy on the checked part of every step whose label is above 0. Such a step
can still reach a right answer, so it is right, and what it wrote is what the model should write; without that
loss, training the tag erases what the starting model knew about writing steps.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel

from ponder.collect.mc import exact_labels
from ponder.collect.records import StepRecord, read_records
from ponder.lm.hf import resolve_model
from ponder.tasks import ReferenceSolver, StepOracle, Task, TaskError, get_task, require
from ponder.tasks.base import Problem
from ponder.train.loop import STATE_FILE, TrainConfig, hardware, save_checkpoint, train_loop
from ponder.train.recipe import load_recipe_yaml, recipe_named, recipe_source, remake_section, shipped_out
from ponder.verifiers.learned import (
    ONE_LOGIT,
    Encoded,
    HeadSpec,
    StepLayout,
    VerifierError,
    head_logits,
    load_head_model,
    next_token_logprobs,
    pad_batch,
    step_margins,
)

Example = tuple[list[int], list[int], list[float], list[int]]  # ids, read positions, targets, LM-trained positions


@dataclass
class VerifierRecipe:
    name: str
    task: str
    head: HeadSpec
    data: str = ""  # step-record JSONL (`ponder collect` output), several joined by commas; --data overrides it
    labels: str = "soft"  # soft or hard
    check_weight: float = 1.0  # with head.check_after: the weight of the next-token loss on checked text
    prepare: list[str] = field(default_factory=list)  # the commands that make the `data` and `init` it reads
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""  # the YAML file it was read from (empty: a shipped recipe, by its name)

    @classmethod
    def load(cls, name_or_path: str) -> VerifierRecipe:
        name, raw = load_recipe_yaml(name_or_path)
        try:
            recipe = cls(name=name, task=raw["task"], head=HeadSpec(**raw["head"]), data=raw.get("data", ""),
                         labels=raw.get("labels", "soft"), check_weight=float(raw.get("check_weight", 1.0)),
                         train=TrainConfig(**raw.get("train", {})), prepare=list(raw.get("prepare", [])),
                         source=recipe_source(name_or_path))
        except (KeyError, TypeError, ValueError) as err:
            raise TaskError(f"recipe {name_or_path}: malformed ({err})") from err
        if recipe.labels not in ("soft", "hard"):
            raise TaskError(f"recipe {name_or_path}: labels must be soft or hard, got {recipe.labels!r}")
        return recipe


def record_prompt(task: Task, record: StepRecord) -> str:
    return task.prompt(Problem(record.problem_id, record.question)) if record.task else record.question + "\n"


def targets(record: StepRecord, kind: str, labels: str) -> list[float | None]:
    """What each step is trained towards; None: not trained on."""
    if kind == "orm":
        return [None] * (len(record.steps) - 1) + [None if record.outcome is None else float(record.outcome)]
    if kind == "value":  # OVM: every prefix is labelled with how its solution ended
        return [None if record.outcome is None else float(record.outcome)] * len(record.steps)
    if labels == "hard":
        return [None if h is None else float(h) for h in record.hard()]
    return list(record.labels)


def fitted(layout: StepLayout, prompt: str, steps: list[str]) -> Encoded:
    """A record encoded with as many of its first steps as the verifier's context holds (each step's label is about
    its own prefix, so a cut record keeps the labels of the steps before the cut)."""
    for k in range(len(steps), 1, -1):
        try:
            return layout.encode(prompt, steps[:k])
        except VerifierError:
            continue
    return layout.encode(prompt, steps[:1])  # one step always fits: the layout drops the start of the text


def examples(records: list[StepRecord], task: Task, layout: StepLayout, kind: str,
             labels: str) -> tuple[list[Example], int]:
    """The records' labelled steps as training examples, and how many records were cut to fit the context."""
    out, cut = [], 0
    for record in records:
        if not record.steps:
            continue
        ids, positions, checks, _ = fitted(layout, record_prompt(task, record), record.steps)
        cut += len(positions) < len(record.steps)
        wanted = targets(record, kind, labels)[: len(positions)]
        keep = [(p, y) for p, y in zip(positions, wanted) if y is not None]
        written = [p for c, y in zip(checks, record.labels) if y is not None and y > 0 for p in c]
        if keep:
            out.append((ids, [p for p, _ in keep], [y for _, y in keep], written))
    return out, cut


def batches(data: list[Example], batch_size: int, pad: int, rng: random.Random) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches, length-bucketed (sort a pool of 8 batches by length) to cut padding."""
    order: list[Example] = []
    while True:
        if len(order) < batch_size * 8:
            more = data[:]
            rng.shuffle(more)
            order.extend(more)
        pool, order = sorted(order[: batch_size * 8], key=lambda e: len(e[0])), order[batch_size * 8 :]
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            batch = pad_batch([ids for ids, _, _, _ in chunk], pad)
            batch["rows"] = torch.tensor([i for i, (_, pos, _, _) in enumerate(chunk) for _ in pos])
            batch["cols"] = torch.tensor([p for _, pos, _, _ in chunk for p in pos])
            batch["targets"] = torch.tensor([y for _, _, ys, _ in chunk for y in ys])
            batch["lm_rows"] = torch.tensor([i for i, (*_, lm) in enumerate(chunk) for _ in lm], dtype=torch.long)
            batch["lm_cols"] = torch.tensor([p for *_, lm in chunk for p in lm], dtype=torch.long)
            yield batch


def prepare(recipe: VerifierRecipe) -> tuple[PreTrainedModel, Any, StepLayout]:
    """The starting model with the recipe's head, and a tokenizer that has the marker as one token."""
    directory, _ = resolve_model(recipe.train.init or f"{recipe.task}-policy")  # default: the task's policy
    tok = AutoTokenizer.from_pretrained(directory)
    marker = recipe.head.marker.strip()
    if marker and len(tok(marker, add_special_tokens=False).input_ids) != 1:
        tok.add_tokens([marker], special_tokens=recipe.head.kind == "token_classification")
    extra = {} if recipe.head.kind == "step_tag" else {"num_labels": 1 if recipe.head.kind in ONE_LOGIT else 2}
    model = load_head_model(directory, recipe.head.kind, **extra)
    if model.get_input_embeddings().num_embeddings < len(tok):
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.config.pad_token_id = tok.pad_token_id
    layout = StepLayout(tok, recipe.head, model.config.max_position_embeddings)
    return model, tok, layout


def known_example(task: Task) -> dict[str, Any]:
    """The self-test example saved in the checkpoint: a test-split reference solution whose last step has its
    result changed by one, so the oracle marks it wrong; and, for an outcome model, a whole solution as the task's
    policies write it beside a wrong one: its answer's last number changed by one, or its last step a move that
    misses the goal."""
    solver = require(task, ReferenceSolver, "a learned verifier's self-test (its example is a reference solution)")
    oracle = require(task, StepOracle, "a learned verifier's self-test (its example's labels are the oracle's)")
    problem = task.problems("test", limit=1)[0]
    steps = [s for s in solver.reference_solution(problem) or [] if not s.lower().startswith("answer:")]
    steps[-1] = re.sub(r"= (\d+)", lambda m: f"= {int(m.group(1)) + 1}", steps[-1], count=1)
    example = {"question": problem.question, "prompt": task.prompt(problem), "steps": steps,
               "labels": [bool(x) for x in exact_labels(task, problem, steps)]}
    written = solver.solutions(problem)  # as the task's policies write a solution (game24's write no answer line)
    right = written[0] if written else None
    if right and task.solves(problem, right):
        # the answer's last number changed by one; where the task grades what the steps compute (game24), the last
        # step replaced by a legal move that does not reach the goal
        bumped = [*right[:-1], re.sub(r"(\d+)(\D*)$", lambda m: f"{int(m.group(1)) + 1}{m.group(2)}", right[-1])]
        moved = [[*right[:-1], move] for move in oracle.moves(problem, right[:-1])]
        wrong = next((w for w in [bumped, *moved] if not task.solves(problem, w)), None)
        if wrong is not None:
            example["outcomes"] = {"right": right, "wrong": wrong}
    return example


def train_verifier(recipe: VerifierRecipe, out_dir: Path, data: str = "", steps: int | None = None) -> dict[str, Any]:
    """Train the recipe's verifier on step records and save it (with its head declared) to `out_dir`."""
    cfg = recipe.train
    n_steps = steps if steps is not None else cfg.steps
    paths = [Path(x.strip()) for x in (data or recipe.data).split(",") if x.strip()]
    if not paths:
        raise TaskError("no training data: give the recipe a `data:` path or pass --data")
    records = [r for path in paths for r in read_records(path)]
    path = ",".join(str(x) for x in paths)
    torch.manual_seed(cfg.seed)
    task = get_task(recipe.task)
    self_test = known_example(task)  # before training: a task without the oracle and a solver fails here, not after
    model, tok, layout = prepare(recipe)
    train_set, cut = examples(records, task, layout, recipe.head.kind, recipe.labels)
    if not train_set:
        raise TaskError(f"{path} has no labelled steps for a {recipe.head.kind} model")
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = head_logits(m, layout, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        tag = loss_fn(step_margins(layout, logits)[batch["rows"], batch["cols"]].float(), batch["targets"])
        if not recipe.head.check_after or not len(batch["lm_cols"]):
            return tag
        written = next_token_logprobs(logits, batch["input_ids"])[batch["lm_rows"], batch["lm_cols"]]
        return tag - recipe.check_weight * written.mean()  # next-token cross-entropy on the checked text

    stream = batches(train_set, cfg.batch_size, tok.pad_token_id, random.Random(cfg.seed))
    result = train_loop(model, stream, cfg, n_steps, loss, f"{recipe.head.kind} {recipe.name}",
                        state=out_dir / STATE_FILE, run={**asdict(recipe), "data": path})
    head = HeadSpec(**{**asdict(recipe.head), "task": recipe.task, "self_test": self_test})
    summary = {"recipe": recipe.name, "task": recipe.task, "kind": recipe.head.kind, "labels": recipe.labels,
               "data": path, "records": len(records), "cut_to_fit": cut, "examples": len(train_set),
               "labelled_steps": sum(len(t) for _, _, t, _ in train_set),
               "checked_tokens": sum(len(lm) for *_, lm in train_set), **result.summary(),
               "parameters": sum(p.numel() for p in model.parameters()),
               "config": {**asdict(recipe), "head": asdict(recipe.head)}}
    model.config.ponder_verifier = asdict(head)
    save_checkpoint(model, tok, out_dir, summary, summary["config"])
    write_card(out_dir, summary)
    return summary


def write_card(out_dir: Path, summary: dict[str, Any]) -> None:
    """README.md of the checkpoint: what it reads, the data and command that made it, what training cost.
    Measured quality goes under "Measured" from `ponder bench verifiers` (the card says which run)."""
    head = summary["config"]["head"]
    train = summary["config"]["train"]
    what = {"step_tag": f"a step-tag PRM (Math-Shepherd convention: each step ends with `{head['marker'].strip()}`, "
                        f"score = P(`{head['good_token']}`) / (P(`{head['good_token']}`) + P(`{head['bad_token']}`)))",
            "token_classification": f"a token-classification PRM (two labels read at `{head['marker']}` after each "
                                    "step, score = P(label 1))",
            "orm": "an outcome reward model (sequence-classification head, one logit, sigmoid)",
            "value": "an outcome-supervised value model (OVM: the ORM's head, trained on outcome labels at the end "
                     "of every step, so it judges prefixes)"}[summary["kind"]]
    check = ""
    if head.get("check_after"):
        check = (f"\nIt also checks what each step computes: it is trained to write the text after "
                 f"`{head['check_after']}` in good steps (loss weight {summary['config']['check_weight']}), and a "
                 f"step's score is the tag's times the model's probability of that text in this and every earlier "
                 f"step.\n")
    card = f"""# {summary["recipe"]}

{what} for the `{summary["task"]}` task, trained by Ponder's own verifier trainer from
`{train["init"] or summary["task"] + "-policy"}`. `--verifier {summary["recipe"]}` loads it; the head is declared
in `config.json` under `ponder_verifier`, with a known example for `ponder selftest`.
{check}
- Data: `{summary["data"]}` ({summary["records"]:,} records, {summary["labelled_steps"]:,} labelled targets,
  {summary["labels"]} labels).
- Recipe: `{recipe_named(summary["config"])[0]}` ({train["steps"]} steps, batch {train["batch_size"]},
  lr {train["lr"]}, seed {train["seed"]}).
- Training: {summary["seconds"] / 60:.1f} minutes on {hardware(summary)},
  bf16 autocast: {summary["bf16_autocast"]}, final loss {summary["final_loss"]}.

{remake_section(summary["config"].get("prepare", []),
                f"ponder train verifier {recipe_named(summary['config'])[1]} "
                f"--out {shipped_out(summary['config'], out_dir)}")}## Measured
"""
    (out_dir / "README.md").write_text(card)
