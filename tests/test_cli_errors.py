"""Bad input to the `ponder` command line: whatever the command, one line `error: ...` on stderr naming the
problem, exit code 2, no traceback. Run in process through typer's CliRunner; every invocation fails before a
search starts (at most the shipped tiny policy is loaded)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import ConfigError, PonderError
from ponder.lm.hf import ModelLoadError
from ponder.lm.openai_http import ServerError
from ponder.tasks import TaskError

# (invocation, a piece of the one line it must print); {tmp} is a folder holding the files written below
BAD_INPUT = [
    # solve
    ("solve 4 5 6 10 --n 0", "Invalid value for '--n'"),
    ("solve --method mcts --n -3 4 5 6 10", "Invalid value for '--n'"),
    ("solve --method beam --n 2 --verifier oracle 4 5 6 10", "beam: the budget n=2 is below width=4"),
    ("solve 1 2 3", "expected four non-negative integers"),
    ("solve 4 5 6 ten", "expected four non-negative integers"),
    ("solve --task arith seven", "give a test-problem index"),
    ("solve --device tpu 4 5 6 10", "unknown device 'tpu'; choose cpu, cuda or cuda:N"),
    ("solve --backend weird 4 5 6 10", "unknown backend 'weird'"),
    ("solve --set tot_bfs.guard_floor=2 4 5 6 10", "guard_floor=2.0 is out of range"),
    ("solve --task chess 1 2 3 4", "unknown task 'chess'"),
    ("solve --task data:{tmp}/nowhere.jsonl 1+1", "no such data file or folder"),
    ("solve --method telepathy 1 2 3 4", "unknown search method 'telepathy'"),
    ("solve --method best_of_n --verifier psychic 1 2 3 4", "unknown verifier 'psychic'"),
    ("solve --model /no/such/model 1 2 3 4", "is not a shipped model"),
    ("solve --aggregate median 1 2 3 4", "unknown aggregation 'median'"),
    ("solve --task gsm8k --style weird 1", "unknown prompting style 'weird'"),
    ("solve --min-p 2 4 5 6 10", "min_p 2.0 (must be in [0, 1))"),
    ("solve --n lots 1 2 3 4", "Invalid value for '--n'"),
    ("solve --nn 3 1 2 3 4", "No such option: --nn"),
    ("solve", "Missing argument 'puzzle'"),
    ("-v -q solve 1 2 3 4", "give --verbose or --quiet, not both"),
    ("solve --method beam --set beam.beam_widht=8 4 5 6 10", "beam: unknown knob 'beam_widht'; beam's knobs: "),
    ("solve --method beam --set beam.width=lots 4 5 6 10", "beam: width='lots' is not int"),
    # eval (each with --out {tmp}/run: nothing may be written there)
    ("eval --task chess", "unknown task 'chess'"),
    ("eval --split validation", "got 'validation'"),
    ("eval --task data:{tmp}/qa.jsonl --methods cot", "qa.jsonl, line 2: not JSON"),
    ("eval --methods cot,telepathy", "unknown search method 'telepathy'"),
    ("eval --budgets 0", "Invalid value for --budgets: every value must be >= 1"),
    ("eval --budgets four", "Invalid value for --budgets: 'four' is not comma-separated ints"),
    ("eval --temperature -1 --methods cot --limit 1", "temperature -1.0 (must be >= 0; 0 is greedy)"),
    ("eval --min-p 1.5", "min_p 1.5 (must be in [0, 1))"),
    ("eval --max-tokens -5", "max_tokens and max_step_tokens are positive"),
    ("eval --limit -1", "Invalid value for '--limit'"),
    ("eval --offset -1", "Invalid value for '--offset'"),
    ("eval --ids game24-905,game24-nope", "1 of the problem ids are not in game24 'test'"),
    ("eval --concurrency 0", "Invalid value for '--concurrency'"),
    ("eval --verifier psychic", "unknown verifier 'psychic'"),
    ("eval --aggregate median", "unknown aggregation 'median'"),
    ("eval --model /nonexistent/model", "is not a shipped model"),
    ("eval --device tpu", "unknown device 'tpu'; choose cpu, cuda or cuda:N"),
    ("eval --backend weird", "unknown backend 'weird'"),
    ("eval --template-from smollm2", "template_from is for server URLs"),
    ("eval --methods mcts --set mcts.width=0", "mcts: width=0 is out of range: >= 1"),
    ("eval --config {tmp}/nowhere.yaml", "cannot read the eval config"),
    ("eval --config {tmp}/malformed.yaml", "cannot read the eval config"),
    ("eval --set beam.width", "Invalid value for --set: 'beam.width' is not METHOD.KNOB=VALUE"),
    ("eval --methods cot --set beam.beam_width=8", "knobs set for beam, which this run does not use"),
    # collect
    ("collect oracle --task chess", "unknown task 'chess'"),
    ("collect mc --n 0", "samples, n, concurrency and max_batch must be positive"),
    ("collect search --device tpu", "unknown device 'tpu'; choose cpu, cuda or cuda:N"),
    ("collect omegaprm --limit -1", "Invalid value for '--limit'"),
    ("collect search --n 0", "Invalid value for '--n'"),
    ("collect omegaprm --k 0", "OmegaPRM needs k, budget >= 1"),
    ("collect convert {tmp}/bad-line.jsonl {tmp}/out.jsonl --from ponder --to trl", "bad-line.jsonl:2: not JSON"),
    ("collect convert {tmp}/missing.jsonl {tmp}/out.jsonl --from ponder --to trl", "cannot read"),
    ("collect convert {tmp}/bad-line.jsonl {tmp}/out.jsonl --from nope --to trl", "unknown format 'nope'"),
    ("collect star --filter vibes", "unknown STaR filter 'vibes'"),
    # train
    ("train sft no-such-recipe", "unknown recipe 'no-such-recipe'"),
    ("train sft {tmp}/malformed.yaml", "malformed YAML"),
    ("train verifier {tmp}/missing.yaml", "cannot read recipe"),
    ("train grpo {tmp}/median.yaml", "unknown aggregate"),
    ("train verifier game24-prm --data {tmp}/bad-line.jsonl", "bad-line.jsonl:2: not JSON"),
    # bench
    ("bench selection --pool 64 --ns 1,128", "every N must lie in 1..64"),
    ("bench engine --workloads warp", "unknown workload(s) warp"),
    ("bench selection --verifiers psychic", "unknown verifier 'psychic'"),
    ("bench verifiers psychic", "unknown verifier 'psychic'"),
    ("bench verifiers oracle --source dreams", "unknown source 'dreams'"),
    ("bench backends --model {tmp}/nowhere.gguf", "no GGUF file at"),
    ("bench labels --task chess", "unknown task 'chess'"),
    ("bench routing --tokens lots", "Invalid value for --tokens"),
    ("bench http --in-flight 0", "Invalid value for --in-flight: every value must be >= 1"),
    ("bench proposals --samplers psychic", "unknown sampler(s) psychic"),
    ("bench sft no-such-recipe", "unknown recipe 'no-such-recipe'"),
    ("bench star --filter vibes", "unknown STaR filter 'vibes'"),
    ("bench ppo --split test --out {tmp}/run", "never trains on the test split"),
    ("bench ppo --split dreams --out {tmp}/run", "got 'dreams'"),
    ("serve --device tpu", "unknown device 'tpu'; choose cpu, cuda or cuda:N"),
    ("bench arithmetic /no/such/model", "is not a shipped model"),
    # methods, plot, selftest
    ("methods telepathy", "unknown search method 'telepathy'"),
    ("plot {tmp}/nowhere", "has no summary.json"),
    ("plot {tmp}", "summary.json is not a `ponder eval` summary"),
    ("selftest psychic", "is not a shipped model"),
    ("selftest game24-prm --preset weird", "unknown verifier preset 'weird'"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "bad-line.jsonl").write_text(json.dumps({"question": "q", "steps": ["a"], "labels": [1.0]}) + "\n{oops\n")
    (tmp / "qa.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n{oops\n")
    (tmp / "malformed.yaml").write_text("task: game24\nkind: sft\ntrain: {steps: 3\n")
    (tmp / "median.yaml").write_text("task: game24\nkind: grpo\naggregate: median\n")
    (tmp / "summary.json").write_text('[{"method": "cot"}]\n')
    return tmp


@pytest.mark.parametrize(("invocation", "message"), BAD_INPUT, ids=[i for i, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_code_2(bad_files: Path, invocation: str, message: str) -> None:
    args = invocation.format(tmp=bad_files).split()
    if args[0] == "eval":
        args += ["--out", str(bad_files / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (bad_files / "run").exists()  # a bad eval writes nothing, not even its config


def test_the_installed_command_prints_the_same_line() -> None:
    """The `ponder` entry point runs the same root command as the in-process runner."""
    proc = subprocess.run([sys.executable, "-m", "ponder.cli", "solve", "1 2 3"], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "error: puzzle: expected four non-negative integers separated by spaces, got '1 2 3'\n"


def test_errors_the_user_can_fix_are_typed() -> None:
    for error in (ConfigError, TaskError, ModelLoadError, ServerError):
        assert issubclass(error, PonderError)
    assert issubclass(ConfigError, ValueError) and not issubclass(ConfigError, TaskError)


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception that is not a PonderError is not turned into a line: it reaches the caller whole."""
    import ponder.evaluate.plot

    def broken(folders: list[Path]) -> list[dict]:
        return [{}][1]

    monkeypatch.setattr(ponder.evaluate.plot, "load", broken)
    result = CliRunner().invoke(app, ["plot", "anywhere"])
    assert result.exit_code == 1 and isinstance(result.exception, IndexError)


def test_verbose_and_quiet_set_the_ponder_loggers_level_and_nothing_else() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    levels = {}
    for flag in ("-v", "-q", None):
        CliRunner().invoke(app, [*([flag] if flag else []), "plot", "nowhere"])
        levels[flag] = logging.getLogger("ponder").level
    assert levels == {"-v": logging.DEBUG, "-q": logging.WARNING, None: logging.INFO}
    assert len(logging.getLogger("ponder").handlers) == 1  # one handler, however many commands ran
    assert (root.level, root.handlers) == before


def test_a_library_warning_reaches_stderr_through_the_ponder_logger() -> None:
    """What a library module logs under `ponder.` is printed by the command that ran it, with its level; -q keeps
    warnings and drops progress."""
    import typer

    def speak() -> None:
        logging.getLogger("ponder.train.loop").info("step 1/2")
        logging.getLogger("ponder.lm.openai_http").warning("the server takes no min_p")

    probe = typer.Typer()
    probe.command()(speak)
    shown = {}
    for flag in ("-q", None):
        CliRunner().invoke(app, [*([flag] if flag else []), "plot", "nowhere"])  # sets the level, as any command
        shown[flag] = CliRunner().invoke(probe, []).stderr
    assert shown == {"-q": "warning: the server takes no min_p\n",
                     None: "step 1/2\nwarning: the server takes no min_p\n"}


def test_loading_models_leaves_transformers_progress_bars_as_they_were() -> None:
    from transformers.utils import logging as hf_logging

    from ponder.lm.hf import HFBackend
    from ponder.verifiers.learned import LearnedVerifier

    assert hf_logging.is_progress_bar_enabled()
    HFBackend("game24-policy")
    LearnedVerifier("game24-prm")
    assert hf_logging.is_progress_bar_enabled()
