"""Readers and writers for the step-label formats the field uses, all through `StepRecord`.

- **PRM800K** (Lightman et al., 2023): human ratings -1/0/1 per step; we follow the chosen completion (or the
  human one) and stop at the step the labeller rejected, as the data set's own trajectories do. Neutral (0)
  reads as `neutral` (default 1.0: good, as OpenR and most PRM recipes treat it).
- **Math-Shepherd** (Wang et al., 2024): `input` has each step as `Step k: ... ки`, `label` is the same text
  with each `ки` replaced by `+` or `-`.
- **MATH-APS** (OmegaPRM, Luo et al., 2024, as released by OpenR): one record per question with the visited
  states, each a `solution_prefix` (question, then the steps so far) and its Monte-Carlo value.
- **OpenR**: `{question, process, label}` where `process` ends each step with a step tag and `label` is a
  list of `+`/`-`.
- **TRL stepwise**: `{prompt, completions, labels}` with boolean labels (TRL's stepwise-supervision format).

Writers of hard-label formats use `StepRecord.hard()`; a step without a label cannot be written there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.collect.records import StepRecord, parse_jsonl, read_records, write_jsonl
from ponder.tasks.base import TaskError

SHEPHERD_TAG = "ки"
APS_GAP = "\n\n\n"  # between the question and the first step in a MATH-APS prefix
APS_STEP_SEP = "\n\n"  # between steps in a MATH-APS prefix


class Unlabelled(ValueError):
    """A record with a step that has no label cannot be written in a hard-label format."""


def _hard_signs(record: StepRecord) -> list[str]:
    hard = record.hard()
    if any(h is None for h in hard):
        raise Unlabelled(f"record {record.problem_id or record.question[:40]!r} has unlabelled steps")
    return ["+" if h else "-" for h in hard]


# --- PRM800K -------------------------------------------------------------------------------------------


def prm800k_record(obj: dict[str, Any], neutral: float = 1.0) -> StepRecord:
    rating_label = {1: 1.0, 0: neutral, -1: 0.0, None: None}
    steps, labels = [], []
    for step in obj["label"]["steps"]:
        chosen = step["chosen_completion"]
        if chosen is not None:
            completion = step["completions"][chosen]
        elif step.get("human_completion"):
            completion = dict(step["human_completion"], rating=step["human_completion"].get("rating") or 1)
        else:  # the labeller stopped here: keep the first rejected completion, if there is one, and end
            rejected = [c for c in step["completions"] or [] if c.get("rating") == -1]
            if rejected:
                steps.append(rejected[0]["text"])
                labels.append(0.0)
            break
        if completion["rating"] not in rating_label:
            raise ValueError(f"rating {completion['rating']!r} is not -1, 0 or 1")
        steps.append(completion["text"])
        labels.append(rating_label[completion["rating"]])
    question = obj["question"]
    meta = {k: obj.get(k) for k in ("labeler", "timestamp", "generation")}
    meta["finish_reason"] = obj["label"].get("finish_reason")
    return StepRecord(question=question["problem"], steps=steps, labels=labels,
                      answer=question.get("ground_truth_answer"), source="prm800k", meta=meta)


def prm800k_row(record: StepRecord) -> dict[str, Any]:
    steps = []
    for text, label in zip(record.steps, _hard_signs(record)):
        good = label == "+"
        steps.append({"completions": [{"text": text, "rating": 1 if good else -1, "flagged": False}],
                      "human_completion": None, "chosen_completion": 0 if good else None})
        if not good:  # PRM800K trajectories end at the first rejected step
            break
    finish = "solution" if all(s["chosen_completion"] == 0 for s in steps) else "found_error"
    return {
        "labeler": record.meta.get("labeler"), "timestamp": record.meta.get("timestamp"),
        "generation": record.meta.get("generation"),
        "is_quality_control_question": False, "is_initial_screening_question": False,
        "question": {"problem": record.question, "ground_truth_answer": record.answer},
        "label": {"steps": steps, "total_time": None, "finish_reason": record.meta.get("finish_reason") or finish},
    }


# --- Math-Shepherd -------------------------------------------------------------------------------------

_STEP_PREFIX = re.compile(r"^Step \d+: ?")


def shepherd_record(obj: dict[str, Any]) -> StepRecord:
    text, label_text = obj["input"], obj["label"]
    start = text.find("Step 1:")
    if start < 0:
        raise ValueError("no 'Step 1:' in input")
    pieces = text.split(SHEPHERD_TAG)
    if pieces[-1].strip():
        raise ValueError(f"text after the last {SHEPHERD_TAG} tag")
    # `label` is `input` with each tag replaced by one sign: walk both texts together.
    signs, at = [], 0
    for piece in pieces[:-1]:
        if label_text[at : at + len(piece)] != piece:
            raise ValueError(f"label text differs from input text near character {at}")
        at += len(piece)
        if label_text[at : at + 1] not in ("+", "-"):
            raise ValueError(f"expected + or - in label where input has a tag, found {label_text[at : at + 1]!r}")
        signs.append(label_text[at])
        at += 1
    if label_text[at:] != pieces[-1]:
        raise ValueError("label text differs from input text after the last tag")
    pieces[0] = pieces[0][start:]
    steps = [_STEP_PREFIX.sub("", piece.strip()) for piece in pieces[:-1]]
    extra = {k: v for k, v in obj.items() if k not in ("input", "label")}
    return StepRecord(question=text[:start].rstrip(" "), steps=steps, labels=[float(x == "+") for x in signs],
                      source="math-shepherd", meta=extra)


def shepherd_row(record: StepRecord) -> dict[str, Any]:
    signs = _hard_signs(record)
    steps = [f"Step {i}: {s} " for i, s in enumerate(record.steps, start=1)]
    row = {"input": f"{record.question} " + "\n".join(s + SHEPHERD_TAG for s in steps),
           "label": f"{record.question} " + "\n".join(s + sign for s, sign in zip(steps, signs))}
    row.update({k: v for k, v in record.meta.items() if k == "task"})
    return row


# --- MATH-APS ------------------------------------------------------------------------------------------


@dataclass
class APSRecord:
    """One question's OmegaPRM states: (solution prefix text, Monte-Carlo value)."""

    question: str
    final_answer: str
    question_id: Any
    states: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "final_answer": self.final_answer,
                "reasoning_steps": [{"solution_prefix": p, "mc_value": v} for p, v in self.states],
                "question_id": self.question_id}

    @staticmethod
    def prefix(question: str, steps: list[str]) -> str:
        return question + (APS_GAP + APS_STEP_SEP.join(steps) if steps else "")

    def step_records(self) -> list[StepRecord]:
        """Each visited state as a record whose last step carries the state's MC value; earlier steps are
        left unlabelled (they are states of their own when OmegaPRM visited them)."""
        out = []
        for prefix, value in self.states:
            if not prefix.startswith(self.question):
                raise ValueError("a solution_prefix does not start with the question")
            rest = prefix[len(self.question):].strip("\n")
            if not rest:
                continue
            steps = [s.strip() for s in rest.split(APS_STEP_SEP) if s.strip()]
            out.append(StepRecord(question=self.question, steps=steps, labels=[None] * (len(steps) - 1) + [value],
                                  answer=self.final_answer, problem_id=str(self.question_id), source="omegaprm"))
        return out


def aps_from_dict(obj: dict[str, Any]) -> APSRecord:
    states = [(s["solution_prefix"], float(s["mc_value"])) for s in obj["reasoning_steps"]]
    for _, value in states:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"mc_value {value} is outside [0, 1]")
    return APSRecord(question=obj["question"], final_answer=obj["final_answer"], question_id=obj.get("question_id"),
                     states=states)


def read_math_aps(path: Path) -> list[APSRecord]:
    return parse_jsonl(path, aps_from_dict, "MATH-APS")


# --- OpenR and TRL -------------------------------------------------------------------------------------


def openr_record(obj: dict[str, Any], tag: str = SHEPHERD_TAG) -> StepRecord:
    pieces = obj["process"].split(tag)
    if pieces[-1].strip():
        raise ValueError(f"text after the last step tag {tag!r}")
    steps = [p.strip() for p in pieces[:-1]]
    signs = obj["label"]
    if len(signs) != len(steps) or any(s not in ("+", "-") for s in signs):
        raise ValueError(f"{len(steps)} tagged steps but labels {signs!r}")
    return StepRecord(question=obj["question"], steps=steps, labels=[1.0 if s == "+" else 0.0 for s in signs],
                      source="openr")


def openr_row(record: StepRecord, tag: str = SHEPHERD_TAG) -> dict[str, Any]:
    return {"question": record.question, "process": "".join(f"{s} {tag}\n" for s in record.steps),
            "label": _hard_signs(record)}


def trl_record(obj: dict[str, Any]) -> StepRecord:
    labels = obj["labels"]
    if len(labels) != len(obj["completions"]) or any(not isinstance(x, bool) for x in labels):
        raise ValueError("'labels' must be one boolean per completion")
    return StepRecord(question=obj["prompt"], steps=list(obj["completions"]), labels=[float(x) for x in labels],
                      source="trl")


def trl_row(record: StepRecord) -> dict[str, Any]:
    return {"prompt": record.question, "completions": record.steps, "labels": [s == "+" for s in _hard_signs(record)]}


# --- the registry used by `ponder collect convert` -----------------------------------------------------


def read_format(path: Path, fmt: str) -> list[StepRecord]:
    if fmt == "ponder":
        return read_records(path)
    if fmt == "math-aps":
        return [r for aps in read_math_aps(path) for r in aps.step_records()]
    readers = {"prm800k": (prm800k_record, "PRM800K"), "math-shepherd": (shepherd_record, "Math-Shepherd"),
               "openr": (openr_record, "OpenR"), "trl": (trl_record, "TRL stepwise")}
    if fmt not in readers:
        raise TaskError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    parse, what = readers[fmt]
    return parse_jsonl(path, parse, what)


def write_format(records: list[StepRecord], path: Path, fmt: str) -> int:
    """Write `records` in `fmt`; returns how many were written (hard-label formats skip records with an
    unlabelled step, which Monte-Carlo labels never have and OmegaPRM states sometimes do)."""
    writers: dict[str, Callable[[StepRecord], dict[str, Any]]] = {
        "ponder": StepRecord.to_dict, "prm800k": prm800k_row, "math-shepherd": shepherd_row,
        "openr": openr_row, "trl": trl_row,
    }
    if fmt not in writers:
        hint = " (MATH-APS is written by `ponder collect omegaprm`)" if fmt == "math-aps" else ""
        raise TaskError(f"cannot write format {fmt!r}{hint}; writable: {', '.join(writers)}")
    rows = []
    for record in records:
        try:
            rows.append(writers[fmt](record))
        except Unlabelled:
            continue
    write_jsonl(rows, path)
    return len(rows)


FORMATS = ("ponder", "prm800k", "math-shepherd", "math-aps", "openr", "trl")
