"""Supervised fine-tuning of a tiny Llama policy on solutions written by a task's own solver.

The model is a real `LlamaForCausalLM` with a character tokenizer, saved as a Hugging Face directory that
`AutoModelForCausalLM` / `AutoTokenizer` load. Loss is on the solution tokens only (the prompt is context).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from ponder.collect.records import StepRecord, read_records
from ponder.errors import ConfigError
from ponder.lm.hf import resolve_model
from ponder.lm.load import resolve_alias
from ponder.tasks import StepOracle, Task, TaskError, get_task, require
from ponder.train.data import Example, StreamDraw, check_walk, endless, solver_examples
from ponder.train.loop import STATE_FILE, LoopResult, TrainConfig, hardware, save_checkpoint, train_loop
from ponder.train.recipe import load_recipe_yaml, recipe_named, recipe_source, remake_section, shipped_out
from ponder.train.tokenizer import char_tokenizer

WIDTH_STEP = 64  # batch widths are multiples of this (`batches`)


@dataclass
class ModelShape:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 768
    max_positions: int = 192


@dataclass
class SFTRecipe:
    name: str
    task: str
    model: ModelShape = field(default_factory=ModelShape)
    train: TrainConfig = field(default_factory=TrainConfig)
    kind: str = "sft"
    data: str = ""  # step records whose states give the examples (`move_pairs`); empty: solver solutions
    splits: dict[str, float] = field(default_factory=lambda: {"train": 1.0})  # solver data: split -> weight
    walk: str = "paths"  # how a solver solution is drawn: `paths` or `moves` (ponder.train.data)
    problems: int = 0  # problems taken from each split (0: all; a generated task needs a number)
    prepare: list[str] = field(default_factory=list)  # the commands that make the `data` and `init` it reads
    unlikelihood: float = 0.0  # walk `streams`: weight of the unlikelihood loss on retrying a move (`sft_loss`)
    detour: float = 0.0  # walk `streams`: the probability that a state tries a dead move first (`StreamDraw`)
    order: str = "drawn"  # walk `streams`: a state's tries in an order drawn afresh or in the task's listing
    source: str = ""  # the YAML file it was read from (empty: a shipped recipe, by its name)

    @classmethod
    def load(cls, name_or_path: str) -> SFTRecipe:
        """A shipped recipe by name (`game24-policy`) or a YAML file path."""
        name, raw = load_recipe_yaml(name_or_path)
        try:
            recipe = cls(name=name, task=raw["task"], model=ModelShape(**raw.get("model", {})),
                         train=TrainConfig(**raw.get("train", {})), kind=raw.get("kind", "sft"),
                         data=raw.get("data", ""), splits=dict(raw.get("splits", {"train": 1.0})),
                         walk=raw.get("walk", "paths"), problems=int(raw.get("problems", 0)),
                         prepare=list(raw.get("prepare", [])), unlikelihood=float(raw.get("unlikelihood", 0.0)),
                         detour=float(raw.get("detour", 0.0)), order=str(raw.get("order", "drawn")),
                         source=recipe_source(name_or_path))
        except (TypeError, ValueError) as err:
            raise TaskError(f"recipe {name_or_path}: malformed ({err})") from err
        try:
            check_walk(recipe.walk)
        except TaskError as err:
            raise TaskError(f"recipe {name_or_path}: {err}") from err
        for knob, plain in (("unlikelihood", 0.0), ("detour", 0.0), ("order", "drawn")):
            if getattr(recipe, knob) != plain and (recipe.walk != "streams" or recipe.data):
                raise TaskError(f"recipe {name_or_path}: {knob} acts on the solver's streams of search; it needs walk "
                                "`streams` (and no `data`)")
        try:
            recipe.stream_draw()
        except TaskError as err:
            raise TaskError(f"recipe {name_or_path}: {err}") from err
        return recipe

    def stream_draw(self) -> StreamDraw:
        """How the recipe's streams of search order a state's tries (walk `streams`)."""
        return StreamDraw(self.detour, self.order)


ORDER_NOTES = {  # what a card says of a stream recipe's `order` (the default, drawn, goes unsaid)
    "listed": ", each state's tries in the order the task lists its moves, live ones pulled forward (`order: listed`)",
    "dead-listed": ", the tries inside a dead end in the order the task lists them (`order: dead-listed`)",
}


def move_pairs(task: Task, records: list[StepRecord]) -> list[tuple[str, str]]:
    """(prompt and prefix, step) for every correct next step (`StepOracle.moves`) from every state that a record's
    correct prefix reaches. A policy trained on solver solutions sees only the moves that lead to 24 and learns
    which results are likely, not the arithmetic (`ponder bench arithmetic`: the game24 policy writes 52% of
    its test puzzles' first-move results right, 40% of quotients); drilled on all of them, 92%."""
    task = require(task, StepOracle, "SFT on every correct move (a recipe's `data`)")
    found: dict[str, list[str]] = {}
    for record in records:
        problem = task.rebuild(record.problem_id, record.question)
        for k, step in enumerate(record.steps):
            prompt = task.prompt(problem) + task.join_steps(record.steps[:k])
            if prompt not in found:
                found[prompt] = task.moves(problem, record.steps[:k])
            if step not in found[prompt]:
                break
    return [(prompt, move) for prompt, moves in found.items() for move in moves]


def batches(examples: Iterator[Example], tok: PreTrainedTokenizerBase, batch_size: int,
            max_len: int, rng: random.Random) -> Iterator[dict[str, torch.Tensor]]:
    """Length-bucketed batches: draw 8 batches' worth, sort by length, shuffle the batches (less padding).
    The pool is tokenized in one call of the (Rust) tokenizer. A batch's width is rounded up to a multiple of
    `WIDTH_STEP`: a few shapes recur, so the allocator reuses their blocks (widths that change by one token with every
    batch fragmented the C heap of a 1,024-token run until the kernel killed it). Examples that carry marks
    (`repeat_marks`) add them as `unlikely_row`, `unlikely_position` and `unlikely_token`: the token that should
    not come at that position of that row."""
    while True:
        drawn = [next(examples) for _ in range(batch_size * 8)]
        prompts = tok([e[0] for e in drawn], add_special_tokens=False).input_ids
        answers = tok([e[1] for e in drawn], add_special_tokens=False).input_ids
        marks = [unlikely_tokens(tok, e, len(a)) if len(e) == 3 else [] for e, a in zip(drawn, answers)]
        pool = sorted((((p + a + [tok.eos_token_id])[:max_len], len(p), m) for p, a, m in zip(prompts, answers, marks)),
                      key=lambda x: len(x[0]))
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            width = min(max_len, -(-max(len(ids) for ids, _, _ in chunk) // WIDTH_STEP) * WIDTH_STEP)
            input_ids = torch.full((len(chunk), width), tok.pad_token_id)
            labels = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            unlikely = [(i, n_prompt + at, token) for i, (ids, n_prompt, m) in enumerate(chunk) for at, token in m
                        if n_prompt + at < len(ids)]
            for i, (ids, n_prompt, _) in enumerate(chunk):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
                mask[i, : len(ids)] = 1
            batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
            if any(m for _, _, m in chunk):
                batch |= {key: torch.tensor([u[k] for u in unlikely], dtype=torch.long) for k, key in
                          enumerate(("unlikely_row", "unlikely_position", "unlikely_token"))}
            yield batch


def unlikely_tokens(tok: PreTrainedTokenizerBase, example: Example, n_tokens: int) -> list[tuple[int, int]]:
    """An example's marks as (token position in its solution, token id); marks are character offsets, so the
    solution must be one token a character (Ponder's policies' tokenizer)."""
    _, solution, marks = example  # type: ignore[misc]
    if n_tokens != len(solution):
        raise ConfigError("unlikelihood training needs a character-level tokenizer (one token a character): "
                          f"{len(solution)} characters came out as {n_tokens} tokens")
    out = []
    for at, char in marks:
        [token] = tok(char, add_special_tokens=False).input_ids
        out.append((at, token))
    return out


def sft_loss(unlikelihood: float) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """The next-token loss on the solution's tokens, plus `unlikelihood` x the mean over a batch's marked positions
    of -log(1 - p(token)) (Welleck et al., 2020, "Neural Text Generation With Unlikelihood Training", token-level
    unlikelihood with the marked tokens as the negative candidates)."""
    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, positions, tokens = (batch.pop(k, None) for k in ("unlikely_row", "unlikely_position",
                                                                 "unlikely_token"))
        out = model(**batch)
        if not unlikelihood or rows is None or not len(rows):
            return out.loss
        # the logits at position t - 1 predict the token at t
        p = out.logits[rows, positions - 1].float().softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
        return out.loss - unlikelihood * torch.log1p(-p.clamp(max=1 - 1e-6)).mean()

    return loss


def new_model(shape: ModelShape, tok: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.heads, intermediate_size=shape.intermediate,
        max_position_embeddings=shape.max_positions, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def start_model(init: str, shape: ModelShape) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """The checkpoint `init` (shipped name, directory or `.gguf` file, de-quantized) in fp32 (its context widened to
    `shape`'s), or a fresh model of `shape` when empty."""
    if init:
        directory, gguf = resolve_model(resolve_alias(init))
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
        if gguf:  # de-quantized to plain fp32 weights: what trains and is saved is no longer a GGUF model
            model.hf_quantizer, model.is_quantized = None, False
            vars(model.config).pop("quantization_config", None)
        # rotary positions have no table: a continued run may train on a longer context than its start had
        model.config.max_position_embeddings = max(model.config.max_position_embeddings, shape.max_positions)
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
        if tok.pad_token_id is None:  # a chat model's GGUF may name none; padding is masked out of the loss
            tok.pad_token = tok.eos_token
        return model, tok
    tok = char_tokenizer()
    return new_model(shape, tok), tok


def fit(model: LlamaForCausalLM, tok: PreTrainedTokenizerBase, examples: Iterator[Example],
        cfg: TrainConfig, n_steps: int, max_len: int, name: str, state: Path | None = None,
        run: dict[str, Any] | None = None, unlikelihood: float = 0.0) -> LoopResult:
    """Next-token loss on the solutions (prompts are context) for `n_steps` length-bucketed batches, with
    `unlikelihood` on the examples' marks (`sft_loss`); `state` and `run` as in `train_loop` (resumable)."""
    data = batches(examples, tok, cfg.batch_size, max_len, random.Random(cfg.seed))
    return train_loop(model, data, cfg, n_steps, sft_loss(unlikelihood), name, state=state, run=run)


def train_policy(examples: Iterator[tuple[str, str]], n_steps: int, out: Path, name: str, cfg: TrainConfig,
                 shape: ModelShape, recipe: dict[str, Any], init: str = "", summary: dict[str, Any] | None = None,
                 resumable: bool = False) -> dict[str, Any]:
    """Train from `init` (a shipped name, directory or `.gguf` file; a fresh model of `shape` when empty) on
    `examples` for `n_steps` and save to `out` with what made it (training.json: `summary` and the loop's numbers;
    recipe.yaml: `recipe`). `resumable`: keep the training state in `out` while it runs, so a killed run resumes
    where it was."""
    torch.manual_seed(cfg.seed)
    model, tok = start_model(init, shape)
    result = fit(model, tok, examples, cfg, n_steps, model.config.max_position_embeddings, name,
                 state=out / STATE_FILE if resumable else None, run=recipe if resumable else None)
    done = {"name": name, **(summary or {}), **result.summary()}
    save_checkpoint(model, tok, out, done, recipe)
    return done


def train_sft(recipe: SFTRecipe, out_dir: Path, steps: int | None = None) -> dict[str, Any]:
    """Train the recipe's policy and save it to `out_dir`; returns a summary (also saved as training.json)."""
    cfg = recipe.train
    task = get_task(recipe.task)
    if recipe.data:  # read (and checked) before the model loads: a bad file fails at once
        examples = endless(move_pairs(task, read_records(Path(recipe.data))), cfg.seed)
    else:
        examples = solver_examples(task, recipe.splits, recipe.walk, cfg.seed, limit=recipe.problems or None,
                                   marked=recipe.unlikelihood > 0, draw=recipe.stream_draw())
    torch.manual_seed(cfg.seed)
    model, tok = start_model(cfg.init, recipe.model)
    result = fit(model, tok, examples, cfg, steps if steps is not None else cfg.steps, recipe.model.max_positions,
                 f"sft {recipe.name}", state=out_dir / STATE_FILE, run=asdict(recipe),
                 unlikelihood=recipe.unlikelihood)
    summary = {"recipe": recipe.name, "task": recipe.task, **result.summary(),
               "parameters": sum(p.numel() for p in model.parameters()), "config": asdict(recipe)}
    save_checkpoint(model, tok, out_dir, summary, asdict(recipe))
    write_model_card(out_dir, summary)
    return summary


def write_model_card(out_dir: Path, summary: dict[str, Any]) -> None:
    """README.md of the checkpoint: what it is, the exact command that made it and what training cost.
    Measured accuracy is added under "Measured" from a `ponder eval` run (the card says which)."""
    shape = summary["config"]["model"]
    train = summary["config"]["train"]
    start = f"continued from `{train['init']}`" if train.get("init") else "from scratch"
    data = summary["config"].get("data")
    walk = summary["config"].get("walk", "paths")
    source = (f"every correct move from the states in `{data}` (`ponder.train.sft.move_pairs`)" if data else
              "solutions written by the task's exact solver with rStar's actions at random (walk `actions`: a "
              "rephrased question, sub-questions and their answers among plain steps; training split only)"
              if walk == "actions" else
              "revision pairs (walk `revisions`): one to three wrong attempts in the prompt, then a solver solution "
              "that keeps the last attempt's right steps (training split only)" if walk == "revisions" else
              "the task solver's depth-first searches written as one solution each (walk `streams`: dead ends and "
              "back steps included, the first right finish ending it; Stream of Search)"
              + (f", with unlikelihood (weight {summary['config']['unlikelihood']}) on retrying a move already tried "
                 "from the same state" if summary["config"].get("unlikelihood") else "")
              + (f", a state trying a dead move first with probability {summary['config']['detour']} (`detour`)"
                 if summary["config"].get("detour") else "")
              + ORDER_NOTES.get(summary["config"].get("order", "drawn"), "") if walk == "streams" else
              "solutions written by the task's exact solver (training split only)")
    card = f"""# {summary["recipe"]}

A tiny `LlamaForCausalLM` policy for the `{summary["task"]}` task, trained by Ponder's own SFT recipe on
{source}. Character-level tokenizer
(`AutoTokenizer` loads it). Weights stored in bf16; Ponder runs them in fp32.

- Shape: hidden {shape["hidden"]}, {shape["layers"]} layers, {shape["heads"]} heads,
  intermediate {shape["intermediate"]}, max positions {shape["max_positions"]};
  {summary["parameters"]:,} parameters, tied embeddings.
- Recipe: `{recipe_named(summary["config"])[0]}` ({train["steps"]} steps, batch {train["batch_size"]},
  lr {train["lr"]}, seed {train["seed"]}, {start}).
- Training: {summary["seconds"] / 60:.1f} minutes on {hardware(summary)},
  {summary["tokens_per_second"]:,} tokens/s, bf16 autocast: {summary["bf16_autocast"]},
  final loss {summary["final_loss"]}.

{remake_section(summary["config"].get("prepare", []),
                f"ponder train sft {recipe_named(summary['config'])[1]} --out {shipped_out(summary['config'], out_dir)}"
                )}## Measured
"""
    (out_dir / "README.md").write_text(card)
