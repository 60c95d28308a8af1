"""Learned verifiers: process reward models (PRMs) in both conventions, and the outcome reward model (ORM).

Every learned verifier reads the same layout, the prompt followed by one line per step with a *marker* at
its end, and reads one logit per step at the marker's last token:

- `step_tag` PRM (Math-Shepherd, Wang et al., 2024): a causal LM; each step ends with a tag (`ки`) and the
  step's score is P(`+`) / (P(`+`) + P(`-`)) from the LM head at the tag.
- `token_classification` PRM (the Qwen2.5-Math-PRM convention, Zhang et al., 2025): a token-classification
  head; each step ends with a separator token (`<extra_0>`) and the score is P(label 1) there.
- `orm` (Cobbe et al., 2021): a sequence-classification reward model; one score for a whole solution, read at
  its last token. Because attention is causal, the same head read at the end of step i scores the prefix
  that ends there, so an ORM also gives per-step scores (each prefix judged as if it were finished).
- `value`, an outcome-supervised value model (OVM, Yu, Gao and Wang, 2024): the ORM's head, trained on outcome
  labels alone but at the end of every step (each prefix labelled with how its whole solution ended), so it
  estimates the chance that a prefix ends right under the policy that wrote it: a judge of prefixes made
  without process labels.
- `critic`, the value head of a policy trained by PPO (`ponder.train.ppo`): the policy's own causal LM with a
  linear head on its last hidden state (`value_head.safetensors` beside the weights), read at the end of each
  step; the score is the critic's value clamped to [0, 1]. PPO's returns lie in [0, 1] (the outcome, plus the
  PRM's share when its recipe has one, less the KL penalty), so with the outcome reward alone the value is the
  chance that the prefix ends right under the policy. One network proposes and evaluates, as in AlphaZero.

The head is declared in the checkpoint's `config.json` under `ponder_verifier` (kind, marker, `+`/`-`
tokens, a known example for the self-test); checkpoints made elsewhere take a preset (`math-shepherd`).
Steps are encoded piece by piece and the read positions are recorded as they are built, so a step that
contains the marker text (it is removed from the step) or a tokenizer that splits the marker into several
tokens (the last one is read) cannot shift a score onto the wrong step.

A step-tag PRM is a causal LM, so it can also *write* steps. With `check_after` declared (`=` for the built-in
tasks) it is trained to write the part of each good step after that text (the result and what is left) as well
as to tag it, and a step's score is the tag's probability times the model's probability of the checked part of
this step and of every earlier one: a step is good only if all steps so far compute what the model computes and
the tag judges the state reachable. A tag alone does not learn to check arithmetic (a tiny one passed
`13 * 4 = 64`); the same weights predicting `52` do.

A step-tag PRM reuses what it has read: the keys and values of every text it scored stay in a prefix cache
(`ponder.lm.prefix_cache`) with the head's margin and the checked log-probability at each position, so the k
children of a node, which share the node's whole path, compute only their own last step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from ponder.batcher import Batcher
from ponder.errors import PonderError
from ponder.lm.hf import checkpoint_config, load_tokenizer, loading_quietly, resolve_model
from ponder.lm.kv import cache_argument, new_cache, prefill_inputs, row_kv
from ponder.lm.prefix_cache import PrefixCache
from ponder.tasks.base import Problem, Task
from ponder.trace import METER
from ponder.verifiers.base import PrefixError, Verifier, one_line

log = logging.getLogger(__name__)

KINDS = ("step_tag", "token_classification", "orm", "value", "critic")
ONE_LOGIT = ("orm", "value", "critic")  # one output per position, no marker
VALUE_HEAD_FILE = "value_head.safetensors"  # a critic's head, beside the policy's weights


class VerifierError(PonderError, ValueError):
    """A verifier checkpoint that cannot be used as declared; the message says what is wrong."""


@dataclass(frozen=True)
class HeadSpec:
    """How a checkpoint scores steps. Stored in the checkpoint's config.json as `ponder_verifier`."""

    kind: str
    marker: str = ""  # appended to each step: the step tag, the separator token, or nothing (ORM)
    good_token: str = "+"  # step_tag only
    bad_token: str = "-"  # step_tag only
    task: str = ""
    self_test: dict[str, Any] = field(default_factory=dict)  # a known example: question, steps, labels
    check_after: str = ""  # step_tag only: the LM also checks each step's text after the last occurrence of this

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VerifierError(f"unknown verifier kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.kind not in ONE_LOGIT and not self.marker.strip():
            raise VerifierError(f"a {self.kind} PRM needs a marker token at the end of each step")
        if self.check_after and self.kind != "step_tag":
            raise VerifierError("check_after needs a step_tag PRM: only a causal LM head can write the checked text")


PRESETS = {
    # peiyi9979/math-shepherd-mistral-7b-prm and OpenR's PRMs
    "math-shepherd": HeadSpec(kind="step_tag", marker=" ки", good_token="+", bad_token="-"),
}


def _model_class(kind: str) -> type:
    return {"step_tag": AutoModelForCausalLM, "token_classification": AutoModelForTokenClassification,
            "orm": AutoModelForSequenceClassification, "value": AutoModelForSequenceClassification,
            "critic": AutoModelForCausalLM}[kind]


def value_head(hidden: int) -> torch.nn.Linear:
    """A critic's head: one linear map from the policy's last hidden state to the value, starting at 0."""
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def save_value_head(head: torch.nn.Linear, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in head.state_dict().items()}, directory / VALUE_HEAD_FILE)


def load_value_head(directory: Path, hidden: int) -> torch.nn.Linear:
    path = directory / VALUE_HEAD_FILE
    if not path.is_file():
        raise VerifierError(f"{directory} declares a critic but has no {VALUE_HEAD_FILE}")
    head = value_head(hidden)
    head.load_state_dict(load_file(path))
    return head


class Encoded(NamedTuple):
    ids: list[int]
    positions: list[int]  # where each step's score is read
    checks: list[list[int]]  # per step, the positions of the tokens the LM checks (empty without check_after)
    prompt_end: int  # the prompt's last token: where the head reads the state before any step


class Judged(NamedTuple):
    """One text as the verifier judged it: its step scores, the tokens read, how many of them it computed (the rest
    came from the prefix cache) and its share of the compute time (by tokens computed)."""

    scores: list[float]
    tokens: int
    computed: int
    seconds: float


class StepLayout:
    """Turns (prompt, steps) into token ids, the positions where each step's score is read and the tokens the
    LM checks."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, head: HeadSpec, max_length: int) -> None:
        self.tok = tokenizer
        self.head = head
        self.max_length = max_length
        self.marker_ids = self._encode(head.marker) if head.marker else []
        if head.marker and not self.marker_ids:
            raise VerifierError(f"the tokenizer encodes the marker {head.marker!r} to nothing")
        self.newline = self._encode("\n")
        self.label_ids: tuple[int, int] | None = None
        if head.kind == "step_tag":
            good, bad = self._encode(head.good_token), self._encode(head.bad_token)
            if len(good) != 1 or len(bad) != 1 or good == bad:
                raise VerifierError(f"good/bad tokens {head.good_token!r}/{head.bad_token!r} must each be one "
                                    f"distinct token; the tokenizer gives {good} and {bad}")
            self.label_ids = (good[0], bad[0])

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def clean(self, step: str) -> str:
        """A step as one line, without the marker's text (so the model never sees a spurious marker)."""
        return one_line(step, self.head.marker)

    def encode(self, prompt: str, steps: list[str]) -> Encoded:
        ids = list(self.tok(prompt).input_ids)
        prompt_end = len(ids) - 1
        positions: list[int] = []
        checks: list[list[int]] = []
        after = self.head.check_after
        for step in steps:
            text = self.clean(step)
            before, found, tail = text.rpartition(after) if after else ("", "", text)
            if found:  # encoded in two pieces, so that the checked tokens are exactly the tail's
                ids += self._encode(before + found)
                start = len(ids)
                ids += self._encode(tail)
                checks.append(list(range(start, len(ids))))
            else:
                ids += self._encode(text)
                checks.append([])
            ids += self.marker_ids
            positions.append(len(ids) - 1)
            ids += self.newline
        if len(ids) > self.max_length:  # keep every step: drop the start of the prompt
            cut = len(ids) - self.max_length
            if positions and positions[0] < cut:
                raise VerifierError(f"the solution alone is longer than the verifier's {self.max_length} tokens")
            ids, positions, prompt_end = ids[cut:], [p - cut for p in positions], max(0, prompt_end - cut)
            checks = [[p - cut for p in c if p > cut] for c in checks]  # a token is checked from the one before it
        return Encoded(ids, positions, checks, prompt_end)


class LearnedVerifier(Verifier):
    """A PRM or ORM checkpoint (a shipped name, a directory) as a verifier, its weights on `device` (`cpu`, `cuda`,
    `cuda:1`); its prefix cache stays in host memory."""

    def __init__(self, spec: str, head: HeadSpec | str | None = None, batch_size: int = 64,
                 batched: bool = True, prefix_cache_mb: float = 128, device: str = "cpu") -> None:
        directory, gguf = resolve_model(spec)
        config = checkpoint_config(directory, gguf)
        if isinstance(head, str):
            if head not in PRESETS:
                raise VerifierError(f"unknown verifier preset {head!r}; known: {', '.join(PRESETS)}")
            head = PRESETS[head]
        if head is None:
            if "ponder_verifier" not in config:
                raise VerifierError(f"{spec} declares no `ponder_verifier` head in its config; pass a preset "
                                    f"({', '.join(PRESETS)})")
            head = HeadSpec(**config["ponder_verifier"])
        self.head = head
        self.name = f"{head.kind}:{Path(spec).name}"
        extra = {"gguf_file": gguf} if gguf else {}
        with loading_quietly():
            self.tokenizer = load_tokenizer(directory, gguf)
            self.model = load_head_model(directory, head.kind, **extra)
        self.model.to(device).eval()
        self.device = device
        limit = getattr(self.model.config, "max_position_embeddings", 2048)
        self.layout = StepLayout(self.tokenizer, head, limit)
        self.batch_size = batch_size
        # the verifier engine; unbatched, each call is scored at once in its caller's coroutine (the baseline the
        # verifier engine is measured against)
        self.engine = Batcher(self._judge, max_items=8 * batch_size, name="verifier") if batched else None
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # a causal LM (step tags) can read on from cached keys and values; the other heads read each text whole
        reuse = head.kind == "step_tag" and prefix_cache_mb > 0
        self.prefixes = PrefixCache(int(prefix_cache_mb * 2**20)) if reuse else None
        self._cache_arg = cache_argument(self.model)
        self.warned = False  # about a solution too long to read

    def score_texts(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        """Per-step scores for (prompt, steps) pairs, computed in batches."""
        return [j.scores for j in self._judge(items)]

    @torch.inference_mode()
    def _judge(self, items: list[tuple[str, list[str]]]) -> list[Judged]:
        """A solution longer than the verifier's context even without its prompt cannot be read: it scores 0 at
        every step (a search ranks it last; where every sample of a problem is unreadable, the search's guard
        falls back to the vote and says so), with a warning, rather than failing the problem's other solutions."""
        out: list[Judged] = []
        for start in range(0, len(items), self.batch_size):
            began = time.perf_counter()
            chunk = items[start : start + self.batch_size]
            encoded = [self.readable(p, s) for p, s in chunk]
            fits = [e for e in encoded if e is not None]
            read = iter((self._read_cached(fits) if self.prefixes is not None else self._read(fits)) if fits else [])
            judged: list[Judged | None] = []
            for e in encoded:
                if e is None:
                    judged.append(None)
                    continue
                margins, checked, computed = next(read)
                judged.append(Judged(step_scores(self.head, e, margins, checked), len(e.ids), computed, 0.0))
            seconds = time.perf_counter() - began
            total = sum(j.computed for j in judged if j is not None) or 1
            out += [j._replace(seconds=seconds * j.computed / total) if j is not None else
                    Judged([0.0] * len(steps), 0, 0, 0.0) for j, (_, steps) in zip(judged, chunk)]
        return out

    def readable(self, prompt: str, steps: list[str]) -> Encoded | None:
        """The solution in the verifier's layout; None (and a warning, once per verifier) when it is too long."""
        try:
            return self.layout.encode(prompt, steps)
        except VerifierError as err:
            if not self.warned:
                log.warning("%s: %s: such solutions score 0 at every step (%d steps here)", self.name, err, len(steps))
                self.warned = True
            return None

    def _read(self, encoded: list[Encoded]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Per item, at each of its positions: the head's margin and log P(token | the tokens before it); and the
        tokens computed (all of them)."""
        batch = {k: v.to(self.device) for k, v in pad_batch([e.ids for e in encoded], self.pad).items()}
        logits = head_logits(self.model, self.layout, batch)
        margins = step_margins(self.layout, logits)
        ids = batch["input_ids"]
        checked = next_token_logprobs(logits, ids) if self.head.check_after else torch.zeros_like(margins)
        return [(margins[i, : len(e.ids)], checked[i, : len(e.ids)], len(e.ids)) for i, e in enumerate(encoded)]

    def _read_cached(self, encoded: list[Encoded]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """As `_read`, reading on from the longest cached prefix of each text. The cache holds, after the model's
        layers, one more pair per position: the margin and the checked log-probability. A text computes from one
        token before its cached prefix ends (the logits there give its first new token's log-probability): those
        are the tokens it computed."""
        assert self.prefixes is not None
        ids = [e.ids for e in encoded]
        hits, known = [], []
        for row in ids:
            h, kv = self.prefixes.match(row[:-1])
            c = max(0, h - 1)
            hits.append((c, [(k[:, :c], v[:, :c]) for k, v in kv[:-1]] if c else []))
            known.append((kv[-1][0][0, :c, 0], kv[-1][1][0, : c + 1, 0]) if c else None)
        inputs, mask, positions, past = prefill_inputs(ids, hits, self.pad)
        inputs, mask, positions = inputs.to(self.device), mask.to(self.device), positions.to(self.device)
        cache = new_cache([(k.to(self.device), v.to(self.device)) for k, v in past], grow=False)
        logits = self.model(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True,
                            **{self._cache_arg: cache}).logits
        margins = step_margins(self.layout, logits)
        checked = next_token_logprobs(logits, inputs) if self.head.check_after else torch.zeros_like(margins)
        width = inputs.shape[1]
        out = []
        for j, (row, (c, _)) in enumerate(zip(ids, hits)):
            new = width - (len(row) - c)  # the row's first computed column
            before = known[j] or (margins.new_zeros(0), checked.new_zeros(1))
            full = (torch.cat([before[0].to(margins.device), margins[j, new:]]),
                    torch.cat([before[1].to(checked.device), checked[j, new + 1 :]]))
            scored = (full[0][None, :, None].cpu(), full[1][None, :, None].cpu())  # the cache stays on the host
            self.prefixes.insert(row, [*row_kv(cache, mask, j), scored])
            out.append((*full, len(row) - c))
        self.prefixes.evict()
        return out

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        """Through the verifier engine: the calls of all running searches share forward passes, in a worker
        thread; the tokens read (those computed apart) and the compute time are charged to the calling problem
        (`METER`)."""
        prompt = task.prompt(problem)
        judged = await self.judge([(prompt, steps) for steps in solutions])
        meter = METER.get()
        if meter is not None:
            meter.judged(tokens=sum(j.tokens for j in judged), computed=sum(j.computed for j in judged),
                         seconds=sum(j.seconds for j in judged))
        return [j.scores for j in judged]

    async def judge(self, items: list[tuple[str, list[str]]]) -> list[Judged]:
        """(prompt, steps) pairs judged through the verifier engine (at once, unbatched): scores, tokens, seconds."""
        return await self.engine.run(items) if self.engine is not None else self._judge(items)

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        if self.head.kind == "orm":
            raise PrefixError(f"{self.name} is an outcome reward model: it judges whole solutions, not prefixes")
        return await self.score(task, problem, prefixes)

    def self_test(self, require_separation: bool = True) -> dict[str, Any]:
        """Check the head on a known example; raises VerifierError with the reason when it fails.

        Always: the marker gives one read position per step, also when a step contains the marker text; scores
        lie in [0, 1]. With the checkpoint's known labelled example: every good step outscores every bad one, or
        for an ORM whose example has outcomes, the right whole solution outscores the wrong one (a trained
        checkpoint must; `require_separation=False` only reports it, for heads still untrained).
        """
        example = self.head.self_test or {"question": "1 + 1", "steps": ["1 + 1 = 2", "Answer: 2"], "labels": []}
        steps = list(example["steps"])
        prompt = example.get("prompt") or example["question"] + "\n"
        positions = self.layout.encode(prompt, steps).positions
        tricky = [*steps[:-1], steps[-1] + " " + (self.head.marker.strip() or "#")]
        tricky_positions = self.layout.encode(prompt, tricky).positions
        if len(positions) != len(steps) or len(tricky_positions) != len(steps):
            raise VerifierError("the marker does not give one read position per step")
        scores = self.score_texts([(prompt, steps)])[0]
        if not all(0.0 <= s <= 1.0 for s in scores):
            raise VerifierError(f"scores {scores} are not probabilities")
        report: dict[str, Any] = {"kind": self.head.kind, "marker_tokens": len(self.layout.marker_ids),
                                  "steps": len(steps), "scores": [round(s, 4) for s in scores]}
        labels = example.get("labels") or []
        good = [s for s, y in zip(scores, labels) if y]
        bad = [s for s, y in zip(scores, labels) if not y]
        what = "step"
        outcomes = example.get("outcomes")
        if self.head.kind == "orm" and outcomes:  # an outcome model judges whole solutions, not prefixes
            right, wrong = (s[-1] for s in self.score_texts([(prompt, outcomes["right"]), (prompt, outcomes["wrong"])]))
            good, bad, what = [right], [wrong], "solution"
            report["outcome_scores"] = {"right": round(right, 4), "wrong": round(wrong, 4)}
        separates = bool(good and bad) and min(good) > max(bad)
        if require_separation and good and bad and not separates:
            raise VerifierError(f"on its known example a bad {what} scores {max(bad):.3f} >= a good one "
                                f"{min(good):.3f}")
        report["separates_known_example"] = separates
        return report


def load_head_model(directory: Path | str, kind: str, **kwargs: Any) -> PreTrainedModel:
    """The checkpoint with the kind's head; a head new to the checkpoint starts random (that is expected when a
    trainer starts from a policy, so the loader's report of it is silenced)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = _model_class(kind).from_pretrained(directory, dtype=torch.float32, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    if kind == "critic":
        model.value_head = load_value_head(Path(directory), model.config.hidden_size)
    return model


def pad_batch(rows: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Right padding: read positions stay where `StepLayout.encode` put them."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def head_logits(model: PreTrainedModel, layout: StepLayout, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[batch, length, outputs]: the head's logits at every position (an ORM's too, not only at the end)."""
    if layout.head.kind in ONE_LOGIT:
        head = model.value_head if layout.head.kind == "critic" else model.score
        return head(model.base_model(**batch).last_hidden_state)
    return model(**batch).logits


def step_margins(layout: StepLayout, logits: torch.Tensor) -> torch.Tensor:
    """[batch, length] logits of "this step is good" at every position (sigmoid gives the score)."""
    kind = layout.head.kind
    if kind == "step_tag":
        assert layout.label_ids is not None
        good, bad = layout.label_ids
        return logits[..., good] - logits[..., bad]
    return logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]


def step_scores(head: HeadSpec, encoded: Encoded, margins: torch.Tensor, checked: torch.Tensor) -> list[float]:
    """One text's step scores from the head's margin and the checked log-probability at each of its positions."""
    scores = (margins[encoded.positions].clamp(0.0, 1.0) if head.kind == "critic"
              else torch.sigmoid(margins[encoded.positions]))
    if head.check_after and encoded.checks:  # times P(every checked token so far), from the same forward pass
        per_step = torch.stack([checked[c].sum() if c else checked.new_zeros(()) for c in encoded.checks])
        scores = scores * per_step.cumsum(0).exp()
    return scores.tolist()


def next_token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[batch, length]: log P(token t | tokens before t) from an LM's logits; 0 at t = 0."""
    picked = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return torch.cat([picked.new_zeros((ids.shape[0], 1)), picked], dim=1)

