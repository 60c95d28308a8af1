"""The `ponder` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ponder.tasks.base import TaskError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Test-time search for LLM reasoning.")
train_app = typer.Typer(no_args_is_help=True, help="Train policies (SFT).")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print ratios measured in one run.")
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")
console = Console() if sys.stdout.isatty() else Console(width=140)  # logs and CI get whole tables


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    table = Table(title=title)
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(format(row[key], fmt) if fmt else str(row[key]) for key, _, fmt in columns))
    console.print(table)


@app.command()
def solve(
    puzzle: str = typer.Argument(..., help="game24: four numbers, e.g. '4 5 6 10'; arith: a test-problem index"),
    task: str = typer.Option("game24", help="game24 or arith"),
    method: str = typer.Option("cot", help="search method"),
    n: int = typer.Option(16, help="budget for sampling methods"),
    verifier: str = typer.Option("oracle", help="verifier for best_of_n"),
    model: str = typer.Option("", help="model: shipped name, HF directory or .gguf file (default: the task's policy)"),
    seed: int = typer.Option(0),
) -> None:
    """Solve one problem and print the reasoning."""
    import asyncio

    from ponder.lm.engine import Engine
    from ponder.lm.hf import HFBackend, ModelLoadError
    from ponder.search import NEEDS_VERIFIER, SearchConfig, get_method, search
    from ponder.tasks import Game24, get_task
    from ponder.verifiers import get_verifier

    try:
        t = get_task(task)
        if isinstance(t, Game24):
            problem = t.problem(puzzle)
        else:
            if not puzzle.isdigit():
                _fail(f"arith: give a test-problem index (0-{t.size - 1}), got {puzzle!r}")
            problem = t.problems("test", limit=int(puzzle) + 1)[-1]
        search_method = get_method(method)
        ver = get_verifier(verifier) if method in NEEDS_VERIFIER else None
        lm = Engine(HFBackend(model or f"{task}-policy"))
    except (TaskError, ModelLoadError, ValueError) as err:
        _fail(str(err))
        return
    if isinstance(t, Game24) and not t.is_solvable(problem):
        console.print(f"[yellow]{problem.question} has no solution (checked exhaustively); "
                      "any answer will be graded wrong.[/yellow]")
    cfg = SearchConfig(n=n, seed=seed, max_tokens=200)
    trace = asyncio.run(search(t, problem, lm, ver, search_method, cfg))
    console.print(f"[bold]{t.prompt(problem).strip()}[/bold]")
    for i, step in enumerate(t.split_steps(trace.solution or ""), start=1):
        ok = t.check_step(problem, t.split_steps(trace.solution or "")[:i])
        mark = "" if ok is None else (" [green]✓[/green]" if ok else " [red]✗[/red]")
        console.print(f"  {step}{mark}")
    correct = t.grade(problem, trace.answer)
    console.print(f"answer: {trace.answer}  ->  " + ("[green]correct[/green]" if correct else "[red]wrong[/red]"))
    u = trace.usage
    console.print(f"[dim]{method}: {len(trace.nodes) - 1} nodes, {u.model_calls} model calls, "
                  f"{u.generated_tokens} generated tokens[/dim]")


@app.command("eval")
def eval_cmd(
    task: str = typer.Option("game24", help="game24 or arith"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(0, help="first N problems only (0: all)"),
    methods: str = typer.Option("cot,self_consistency,best_of_n", help="comma-separated search methods"),
    budgets: str = typer.Option("16", help="comma-separated budgets (samples) for sampling methods"),
    model: str = typer.Option("", help="shipped name, HF directory or .gguf file (default: the task's policy)"),
    verifier: str = typer.Option("oracle", help="verifier for best_of_n: oracle or vote"),
    temperature: float = typer.Option(0.8),
    seed: int = typer.Option(0),
    concurrency: int = typer.Option(64, help="problems in flight at once (they share the engine's batches)"),
    out: Path = typer.Option(None, help="results folder; rerun with the same folder to resume"),
) -> None:
    """Evaluate methods x budgets on a task; resumable; prints accuracy against compute."""
    from ponder.evaluate import EvalConfig, run_eval
    from ponder.lm.hf import ModelLoadError

    try:
        cfg = EvalConfig(task=task, split=split, limit=limit or None, model=model, methods=_csv(methods),
                         budgets=[int(b) for b in _csv(budgets)], verifier=verifier, temperature=temperature,
                         seed=seed, concurrency=concurrency)
        out = out or Path("runs") / f"eval-{task}-{split}-seed{seed}"
        table = run_eval(cfg, out)
    except (TaskError, ModelLoadError, ValueError) as err:
        _fail(str(err))
        return
    print_table(f"{task} {split}: accuracy against compute (per problem)", table, [
        ("method", "method", ""), ("budget", "n", ""), ("problems", "problems", ""), ("accuracy", "accuracy", ".3f"),
        ("generated_tokens", "gen tokens", ".0f"), ("model_calls", "model calls", ".1f"),
        ("verifier_calls", "verifier calls", ".1f"), ("seconds", "model s", ".2f")])
    console.print(f"results: {out}/results.jsonl  config: {out}/config.json  summary: {out}/summary.json")


@train_app.command("sft")
def train_sft_cmd(
    recipe: str = typer.Argument(..., help="shipped recipe name (game24-policy, arith-policy) or a YAML file"),
    out: Path = typer.Option(None, help="output directory (default runs/sft/RECIPE)"),
    steps: int = typer.Option(0, help="override the recipe's step count (0: as written)"),
) -> None:
    """Train a tiny Llama policy by SFT on the task's own solver's solutions."""
    from ponder.train.sft import SFTRecipe, train_sft

    try:
        r = SFTRecipe.load(recipe)
    except TaskError as err:
        _fail(str(err))
        return
    out = out or Path("runs") / "sft" / r.name
    summary = train_sft(r, out, steps=steps or None)
    summary.pop("config")
    console.print_json(json.dumps(summary))
    console.print(f"saved to {out}")


@bench_app.command("engine")
def bench_engine(
    problems: int = typer.Option(64, help="game24 test problems"),
    n: int = typer.Option(8, help="self-consistency samples per problem"),
    sequential_problems: int = typer.Option(0, help="problems run through the slow sequential path (0: all)"),
    model: str = typer.Option("game24-policy"),
    seed: int = typer.Option(0),
) -> None:
    """Engine vs sequential one-request calls vs one maximal batch, same workload, one run."""
    from ponder.evaluate.bench import engine_benchmark

    rows = engine_benchmark(model, problems, n, sequential_problems or problems, seed)
    print_table(f"engine benchmark: {problems} game24 problems x self-consistency@{n} ({os.cpu_count()} cores)",
                rows, [("mode", "mode", ""), ("rows", "requests", ""), ("batches", "batches", ""),
                       ("tokens", "gen tokens", ""), ("same_texts", "same texts", ""),
                       ("seconds", "seconds", ".2f"), ("tokens_per_s", "tokens/s", ".0f"),
                       ("vs_sequential", "vs sequential", ".2f"), ("vs_max_batch", "vs max batch", ".2f")])


def main() -> None:
    app(prog_name="ponder")


if __name__ == "__main__":
    sys.exit(main())
