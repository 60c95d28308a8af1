"""Typed method configs: every method's knobs are a frozen dataclass, checked when parsed (before any model
loads); `--set METHOD.KNOB=VALUE` means the same in `solve` and `eval`; `ponder methods` lists them; `ponder eval
--config` runs a YAML file or a saved run's config.json; a method that needs its own policy gets it."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import ConfigError
from ponder.evaluate import EvalConfig
from ponder.search import CONFIGS, METHODS, NEEDS_VERIFIER, SearchConfig, parse_options, pick_policy, typed_options
from ponder.search.beam import BeamConfig
from ponder.search.compute_optimal import RoutingTable, Strategy

cli = CliRunner()


def invoke(*args: str):
    return cli.invoke(app, list(args), env={"COLUMNS": "200"})


def error_line(result) -> str:
    """The one line a bad input prints on stderr (exit code 2, no traceback, nothing on stdout)."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


# -- parsing ----------------------------------------------------------------------------------------------------


def test_every_registered_method_has_a_config_with_a_budget_and_documented_knobs():
    assert set(CONFIGS) == set(METHODS)
    for name, config in CONFIGS.items():
        assert config.method == name and config.budget, name
        assert all(k.doc and k.allowed for k in config.knobs()), name


def test_an_unknown_knob_names_the_method_the_knob_and_lists_the_knobs():
    with pytest.raises(ConfigError) as err:
        parse_options("beam", {"beam_widht": 8})
    message = str(err.value)
    assert message.startswith("beam: unknown knob 'beam_widht'")
    knobs = "guard, guard_floor, guard_spread, depth, lookahead, select, distinct, width"
    assert f"beam's knobs: {knobs}" in message and "\n" not in message


@pytest.mark.parametrize(("method", "values", "message"), [
    ("beam", {"width": 0}, "width=0 is out of range: >= 1"),
    ("mcts", {"mix": 1.5}, "mix=1.5 is out of range: 0.0 to 1.0"),
    ("mcts", {"final": "random"}, "final='random' is out of range: one of verifier, visits, value"),
    ("tot_bfs", {"select": "vote"}, "select='vote' is out of range: one of majority, weighted, best"),
    ("revisions", {"context": -1}, "context=-1 is out of range: >= 0"),
    ("rstar", {"exploration": "-2"}, "exploration=-2.0 is out of range: >= 0.0"),
])
def test_a_value_out_of_range_is_refused(method, values, message):
    with pytest.raises(ConfigError, match=f"^{method}: ") as err:
        parse_options(method, values)
    assert message in str(err.value) and f"{method}'s knobs:" in str(err.value)


@pytest.mark.parametrize(("method", "values", "message"), [
    ("beam", {"width": "four"}, "width='four' is not int"),
    ("beam", {"width": 2.5}, "width=2.5 is not int"),
    ("beam", {"width": True}, "width=True is not int"),  # YAML's `true` is not a number
    ("beam", {"distinct": "maybe"}, "distinct='maybe' is not bool"),
    ("mcts", {"depth": "deep"}, "depth='deep' is not int or none"),
    ("best_of_n", {"select": 3}, "select=3 is not str"),
])
def test_a_value_of_the_wrong_type_is_refused(method, values, message):
    with pytest.raises(ConfigError, match=message):
        parse_options(method, values)


def test_command_line_text_is_read_as_each_knobs_type():
    knobs = parse_options("mcts", {"width": "8", "mix": "1", "depth": "none", "final": "visits", "token_budget": "64"})
    assert (knobs.width, knobs.mix, knobs.depth, knobs.final, knobs.token_budget) == (8, 1.0, None, "visits", 64)
    assert isinstance(knobs.mix, float)
    assert parse_options("beam", {"distinct": "True"}).distinct is True
    # the same knobs written differently are the same saved config
    assert typed_options("mcts", {"mix": "1", "width": "8"}) == typed_options("mcts", {"mix": 1.0, "width": 8})


@pytest.mark.parametrize(("method", "values", "n", "message"), [
    ("beam", {}, 2, "the budget n=2 is below width=4"),
    ("dvts", {"width": 8}, 4, "the budget n=4 is below width=8"),
    ("revisions", {"sequential": 4}, 2, "the budget n=2 is below sequential=4"),
    ("compute_optimal", {}, 1, "a routing table is required"),
    ("best_of_n", {}, 0, "the budget n must be at least 1, got 0"),
    ("mcts", {}, -3, "the budget n must be at least 1, got -3"),
])
def test_knobs_that_do_not_fit_the_budget_are_refused_when_parsed(method, values, n, message):
    with pytest.raises(ConfigError, match=message):
        parse_options(method, values, n)
    parse_options(method, values)  # without a budget the knobs alone are fine


def test_a_search_checks_its_knobs_against_its_budget_too():
    """A library caller who builds the config by hand gets the same error, before any model call."""
    import asyncio

    from ponder.search import get_method
    from ponder.tasks import Game24
    from ponder.verifiers.base import OracleVerifier

    task = Game24()
    cfg = SearchConfig(n=2, knobs=BeamConfig(width=4))
    with pytest.raises(ConfigError, match="below width=4"):
        asyncio.run(get_method("beam")(task, task.problem("4 5 6 10"), None, OracleVerifier(), cfg))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mcts takes MCTSConfig, not BeamConfig"):
        asyncio.run(get_method("mcts")(task, task.problem("4 5 6 10"), None, OracleVerifier(), cfg))  # type: ignore[arg-type]


def test_defaults_are_the_knobs_each_method_ran_with_before_it_had_a_config():
    defaults = {name: asdict(config()) for name, config in CONFIGS.items()}
    guard = {"guard": True, "guard_floor": 0.05, "guard_spread": 0.001}  # the guard against an uninformative verifier
    assert defaults["beam"] == defaults["dvts"] == {**guard, "depth": None, "lookahead": 0, "select": "best",
                                                    "distinct": False, "width": 4}
    assert defaults["tot_bfs"] == {**guard, "depth": None, "lookahead": 0, "select": "best", "distinct": True,
                                   "width": None,
                                   "breadth": 5}
    assert defaults["tot_dfs"] == {**guard, "depth": None, "lookahead": 0, "select": "best", "distinct": True,
                                   "width": None,
                                   "threshold": 0.5, "max_expansions": 64}
    assert defaults["mcts"] == {**guard, "iterations": None, "width": 16, "exploration": 1.0, "mix": 0.0,
                                "token_budget": None, "stop_at": 0.95, "final": "verifier", "select": "best",
                                "depth": None}
    assert defaults["rstar"] == {**guard, "guard_spread": 0.0, "iterations": None, "width": 3, "subquestions": 3,
                                 "votes": 4, "exploration": 2.0,
                                 "depth": None, "keep": 0.5, "select": "majority"}
    assert defaults["revisions"] == {"sequential": 4, "context": 4, "select": "weighted", "final": "hierarchical"}
    assert defaults["best_of_n"] == {**guard, "select": "best"}
    assert defaults["cot"] == defaults["self_consistency"] == {}


def test_one_name_per_idea_across_methods():
    """The knob for an idea is spelt the same wherever a method has it; the papers' names are in the docs."""
    names = {k.name for config in CONFIGS.values() for k in config.knobs()}
    for old in ("beam_width", "num_iterations", "k", "b", "T", "v_th", "c", "c_puct", "simulations", "num_rollouts",
                "num_a1_steps", "num_subquestions", "num_votes", "weighted"):
        assert old not in names
    docs = {(m, k.name): k.doc for m, config in CONFIGS.items() for k in config.knobs()}
    assert "c_puct" in docs["mcts", "exploration"] and "c in UCT" in docs["rstar", "exploration"]
    assert "M (beam_width)" in docs["beam", "width"] and "k in ToT" in docs["tot_bfs", "width"]
    assert "num_iterations" in docs["beam", "depth"] and "T in ToT" in docs["tot_bfs", "depth"]


def test_a_routing_table_checks_its_strategies_knobs_when_read(tmp_path):
    good = RoutingTable("game24", 2, "min", [0.5], [Strategy("beam", 4, {"width": 2}), Strategy("cot", 1)])
    good.save(tmp_path / "good.json")
    assert RoutingTable.load(tmp_path / "good.json").strategies[0].knobs() == BeamConfig(width=2)
    raw = json.loads((tmp_path / "good.json").read_text())
    raw["strategies"][0]["options"] = {"beam_width": 2}
    (tmp_path / "old.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="beam: unknown knob 'beam_width'"):
        RoutingTable.load(tmp_path / "old.json")


# -- the command line -------------------------------------------------------------------------------------------


def test_ponder_methods_lists_every_method_with_its_knobs_and_budget():
    result = invoke("methods")
    assert result.exit_code == 0, result.output
    for name, config in CONFIGS.items():
        assert f"{name}: budget n = {config.budget}" in result.output
        for k in config.knobs():
            assert k.name in result.output
    assert "on game24 needs the policy game24-revision-policy" in result.output
    assert "on arith needs the policy arith-rstar-policy" in result.output
    assert result.output.count("needs a verifier") == len(NEEDS_VERIFIER)
    one = invoke("methods", "mcts")
    assert "c_puct in PUCT" in one.output and "beam" not in one.output
    assert "unknown search method 'nope'" in error_line(invoke("methods", "nope"))


@pytest.mark.parametrize(("setting", "message"), [
    ("beam.beam_widht=8", "beam: unknown knob 'beam_widht'"),
    ("beam.width=0", "beam: width=0 is out of range: >= 1"),
    ("beam.width=x", "beam: width='x' is not int"),
    ("beam.width=16", "beam: the budget n=8 is below width=16"),
    ("width=4", "Invalid value for --set: 'width=4' is not METHOD.KNOB=VALUE"),
    ("mcts.width=4", "knobs set for mcts, which this run does not use"),
])
def test_set_means_the_same_in_solve_and_eval(tmp_path, setting, message):
    """The same `--set` gives the same one-line error in both commands, before any model loads."""
    solve = error_line(invoke("solve", "4 5 6 10", "--method", "beam", "--n", "8", "--set", setting))
    evaluate = error_line(invoke("eval", "--methods", "beam", "--budgets", "8", "--set", setting,
                                 "--out", str(tmp_path / "out")))
    assert message in solve and message in evaluate
    assert not (tmp_path / "out").exists()  # nothing saved before the config was checked


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "beam", "--n", "2"], "beam: the budget n=2 is below width=4"),
    (["--n", "0"], "Invalid value for '--n': Input should be greater than or equal to 1"),
    (["--method", "mcts", "--n", "-3"], "Invalid value for '--n': Input should be greater than or equal to 1"),
    (["--method", "revisions", "--n", "2", "--verifier", "oracle"], "revisions: the budget n=2 is below sequential=4"),
])
def test_solve_refuses_a_budget_its_method_cannot_run_in_one_line(args, message):
    assert message in error_line(invoke("solve", "4 5 6 10", *args))


def test_eval_config_file_runs_and_command_line_options_override_it(tmp_path):
    (tmp_path / "run.yaml").write_text("task: game24\nlimit: 1\nmethods: [cot, best_of_n]\nbudgets: [2]\n"
                                       "verifier: oracle\nceiling: false\nseed: 1\n"
                                       "options:\n  best_of_n: {select: weighted}\n")
    first = invoke("eval", "--config", str(tmp_path / "run.yaml"), "--seed", "4", "--set", "best_of_n.select=majority",
                   "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    # from the file: limit, methods, budgets, verifier, ceiling; given explicitly: seed and the knob
    assert (saved["limit"], saved["methods"], saved["budgets"], saved["verifier"], saved["ceiling"]) == (
        1, ["cot", "best_of_n"], [2], "oracle", False)
    assert saved["seed"] == 4 and saved["options"] == {"best_of_n": {"select": "majority"}}
    assert saved["min_p"] == 0.01  # a field neither gives: the command line's default

    again = invoke("eval", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "config.json").read_text()) == saved
    rows = [[json.loads(line)[k] for k in ("method", "budget", "answer")]
            for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert sorted(rows) == sorted([json.loads(line)[k] for k in ("method", "budget", "answer")]
                                  for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines())


@pytest.mark.parametrize(("text", "message"), [
    ("task: game24\nbudget: [4]\n", "unknown field 'budget'; EvalConfig's fields: task, split"),
    ("budgets: 4\n", "budgets=4 is not a list of int"),
    ("methods: [beam]\noptions: {beam: {beam_width: 2}}\n", "beam: unknown knob 'beam_width'"),
    ("- cot\n", "an eval config is a mapping of EvalConfig's fields, not list"),
])
def test_a_bad_config_file_is_one_line(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert message in error_line(invoke("eval", "--config", str(tmp_path / "bad.yaml"), "--out",
                                        str(tmp_path / "out")))


def test_eval_config_fields_all_have_a_command_line_option_or_are_filled_in():
    """`--config` merges the file with the command line by field name: every field a user sets is an eval option."""
    import inspect

    from ponder.cli import EXPLICIT_AS, eval_cmd

    options = set(inspect.signature(eval_cmd).parameters)
    settable = {f.name for f in fields(EvalConfig)} - {"top_p", "max_batch", "model_fingerprint",
                                                       "verifier_fingerprint"}
    assert {EXPLICIT_AS.get(name, name) for name in settable} <= options


# -- the policy a method needs ----------------------------------------------------------------------------------


def test_a_method_that_needs_its_own_policy_gets_it_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="ponder.search"):
        assert pick_policy("game24", ["cot", "revisions"], "", "game24-policy") == "game24-revision-policy"
    assert "revisions on game24 needs game24-revision-policy: using it" in caplog.text
    assert pick_policy("arith", ["rstar"], "", "arith-policy") == "arith-rstar-policy"
    assert pick_policy("arith", ["revisions"], "", "arith-policy") == "arith-policy"  # only game24's is declared
    assert pick_policy("game24", ["revisions"], "smollm2", "game24-policy") == "smollm2"  # a general model is tried
    with pytest.raises(ConfigError, match="revisions on game24 needs game24-revision-policy, a policy trained for "
                                          "it; game24-policy was not"):
        pick_policy("game24", ["revisions"], "game24-policy", "game24-policy")
    assert EvalConfig(methods=["revisions"], verifier="oracle").resolved().model == "game24-revision-policy"


def test_eval_of_revisions_without_a_model_runs_on_the_revision_policy(tmp_path):
    result = invoke("eval", "--methods", "revisions", "--verifier", "oracle", "--limit", "1", "--budgets", "2",
                    "--set", "revisions.sequential=2", "--no-ceiling", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model"] == "game24-revision-policy"
    [row] = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "revisions" and row["usage"]["model_calls"] == 2
    refused = invoke("eval", "--methods", "revisions", "--model", "game24-policy", "--out", str(tmp_path / "x"))
    assert "needs game24-revision-policy" in error_line(refused)


def test_readme_set_examples_parse():
    """Every `--set METHOD.KNOB=VALUE` the README shows names a real knob with a valid value."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    settings = re.findall(r"--set ([a-z_]+)\.([a-z_]+)=(\S+)", readme)  # real examples, not METHOD.KNOB
    assert settings
    defined_there = set(re.findall(r'@register\("(\w+)"', readme))  # the README's own example method
    for method, knob, value in settings:
        if method not in defined_there:
            parse_options(method, {knob: value.strip("`")})
