"""The generator-verifier loop (`ponder improve`): value targets and kept solutions of a hand-built tree, the oracle
kept out of the data it makes, a round killed by SIGKILL resuming to the same result, the per-round table."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ponder.errors import ConfigError
from ponder.improve.loop import Loop
from ponder.improve.recipe import ImproveRecipe
from ponder.improve.trees import Tree
from ponder.tasks import TaskError, get_task
from ponder.tasks.game24 import Game24
from ponder.trace import Node
from ponder.train.grpo import GRPORecipe
from ponder.train.sft import SFTRecipe

ROOT = Path(__file__).resolve().parent.parent
TASK = get_task("game24")
PROBLEM = TASK.from_text("4 5 6 10")

# (id, parent, step, visits, Q, finished); 3 is right, 4 and 9 are finished wrong, 5 and 6 were never expanded
TREE = [
    (1, 0, "5 * 4 = 20 (left: 6 10 20)", 4, 0.6, False),
    (2, 1, "10 - 6 = 4 (left: 4 20)", 3, 0.5, False),
    (3, 2, "20 + 4 = 24 (left: 24)", 2, 0.9, True),
    (4, 2, "20 * 4 = 80 (left: 80)", 1, 0.1, True),
    (5, 1, "20 + 10 = 30 (left: 6 30)", 1, 0.9, False),
    (6, 0, "10 + 6 = 16 (left: 4 5 16)", 1, 0.2, False),
    (7, 0, "6 - 4 = 2 (left: 2 5 10)", 0, 0.0, False),
    (8, 7, "10 / 2 = 5 (left: 5 5)", 0, 0.0, False),
    (9, 8, "5 * 5 = 25 (left: 25)", 0, 0.0, True),
]


def hand_tree() -> Tree:
    nodes = [Node(0, None, "")] + [Node(i, parent, text, visits=visits, value=q, terminal=done)
                                   for i, parent, text, visits, q, done in TREE]
    return Tree.from_row(TASK, PROBLEM, nodes)


def test_value_targets_of_a_hand_built_tree() -> None:
    tree = hand_tree()
    assert tree.outcomes == {3: True, 4: False, 9: False}
    # mc: right finished solutions / finished solutions at or below each node
    assert tree.targets("mc") == {0: 1 / 3, 1: 0.5, 2: 0.5, 3: 1.0, 4: 0.0, 5: None, 6: None, 7: 0.0, 8: 0.0, 9: 0.0}
    # q: the search's Q where it visited, the outcome at a finished solution, else mc
    assert tree.targets("q") == {0: 1 / 3, 1: 0.6, 2: 0.5, 3: 1.0, 4: 0.0, 5: 0.9, 6: 0.2, 7: 0.0, 8: 0.0, 9: 0.0}
    records = {tuple(r.steps): r.labels for r in tree.records(TASK, PROBLEM, "mc")}
    assert list(records.values()) == [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0], [0.5, None], [0.0, 0.0, 0.0]]  # 6: no target
    assert [r.outcome for r in tree.records(TASK, PROBLEM, "mc")] == [True, False, None, False]


def test_a_verifier_learns_the_paths_streams_of_search_end_on() -> None:
    """Samples of a policy that searches in its chain of thought: value targets on the path each stream ends on, the
    samples' paths merged by shared prefixes, so a step's target is the share of right answers through it."""
    dead, back = TREE[5][2], TASK.back_step(PROBLEM, [])
    right, wrong, cut = ([dead, back, TREE[0][2], TREE[1][2], TREE[2][2]], [TREE[0][2], TREE[1][2], TREE[3][2]],
                         [dead, back, TREE[6][2]])
    nodes = [Node(0, None, "")]
    for sample, done in ((right, True), (wrong, True), (cut, False)):  # as self-consistency writes them: chains
        for k, step in enumerate(sample):
            last = k == len(sample) - 1
            nodes.append(Node(len(nodes), 0 if k == 0 else len(nodes) - 1, step, terminal=done and last))
    judged = Tree.from_row(TASK, PROBLEM, nodes).judged(TASK, PROBLEM)
    records = {tuple(r.steps): r.labels for r in judged.records(TASK, PROBLEM, "mc")}
    assert records == {(TREE[0][2], TREE[1][2], TREE[2][2]): [0.5, 0.5, 1.0],  # no back step, no dead end
                       (TREE[0][2], TREE[1][2], TREE[3][2]): [0.5, 0.5, 0.0]}  # the unfinished sample: no target
    tree = hand_tree()
    assert tree.judged(TASK, PROBLEM) is tree  # a step search's tree: no path changes


def test_visit_distribution_pairs_are_proportional_to_visits() -> None:
    prompt = TASK.prompt(PROBLEM)
    pairs = hand_tree().visit_pairs(TASK, prompt, copies=8)
    counts: dict[tuple[str, str], int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    first, second = TREE[0][2] + "\n", TREE[1][2] + "\n"
    assert counts == {
        (prompt, first): 6, (prompt, TREE[5][2] + "\n"): 2,  # root: N 4 and 1 of 5
        (prompt + first, second): 6, (prompt + first, TREE[4][2] + "\n"): 2,  # 3 and 1 of 4
        (prompt + first + second, TREE[2][2] + "\n"): 5, (prompt + first + second, TREE[3][2] + "\n"): 3,  # 2, 1 of 3
    }  # node 7's subtree was never visited; a state below which nothing right was found gives no pair


def test_a_depth_first_search_is_written_as_one_stream_up_to_its_first_right_answer() -> None:
    """Stream of Search: the states in the order entered, a back step wherever the next is not a child of the last;
    the stream ends at the first entered state with a right finished child (the outcome check, never the oracle)."""
    tree = hand_tree()
    tree.extra["order"] = [0, 6, 1, 5, 2, 3]
    stream = tree.stream(TASK, PROBLEM)
    assert stream == [TREE[5][2], "back (left: 4 5 6 10)", TREE[0][2], TREE[4][2], "back (left: 6 10 20)",
                      TREE[1][2], TREE[2][2]]
    assert TASK.grade(PROBLEM, TASK.extract_answer(PROBLEM, stream))
    tree.extra["order"] = [0, 7, 8]  # 8's only finished child is wrong: no right answer, no stream
    assert tree.stream(TASK, PROBLEM) is None
    tree.extra["order"] = []  # a method that keeps no order
    assert tree.stream(TASK, PROBLEM) is None
    tree.nodes[1].text = "20 )"  # a garbled step the search went into and back to: no state to write
    tree.extra["order"] = [0, 1, 5, 2, 3]
    assert tree.stream(TASK, PROBLEM) is None


def test_outcome_filter_keeps_only_graded_right_solutions(tmp_path: Path) -> None:
    """The keep phase over a search's rows: only solutions the answer check accepts, each once, none from a row
    whose search failed."""
    recipe = ImproveRecipe.load(str(tiny_recipe(tmp_path)))
    loop = Loop(recipe, tmp_path / "run", "test")
    problems = TASK.problems("train", limit=recipe.search.problems)
    rows = []
    for problem in problems[:2]:
        right = TASK.solutions(problem)[0]
        a, op, b = right[-1].split()[:3]  # the last move with another operation: an answer that is not 24
        wrong = next(w for w in ([*right[:-1], f"{a} {other} {b} = 24 (left: 24)"] for other in "+-*/" if other != op)
                     if not TASK.solves(problem, w))
        tree = [Node(0, None, "")]
        for solution in (right, wrong, right, wrong[:1]):  # a duplicate, and an unfinished path
            parent = 0
            for k, step in enumerate(solution):
                tree.append(Node(len(tree), parent, step, terminal=k == len(solution) - 1 and len(solution) > 1))
                parent = tree[-1].id
        rows.append({"method": "tot_bfs", "budget": 2, "problem_id": problem.id, "correct": True,
                     "trace": {"nodes": [n.__dict__ for n in tree]}})
    rows.append({"method": "tot_bfs", "budget": 2, "problem_id": problems[2].id, "correct": False, "error": "boom"})
    folder = loop.folder(1) / "search"
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (loop.folder(1) / "prompts.json").write_text(json.dumps({p.id: TASK.prompt(p) for p in problems}))
    result = loop.keep_phase(1)
    kept = [json.loads(line) for line in (loop.folder(1) / "kept.jsonl").open()]
    assert result["kept"] == len(kept) == 2 and result["kept_problems"] == 2
    for k, problem in zip(kept, problems):
        steps = TASK.split_steps(k["completion"])
        assert k["prompt"] == TASK.prompt(problem) and TASK.solves(problem, steps)


@pytest.mark.parametrize("calculator", [False, True])
def test_the_calculator_keeps_only_right_solutions_that_write_no_false_equation(tmp_path: Path,
                                                                                 calculator: bool) -> None:
    recipe = ImproveRecipe.load(str(tiny_recipe(tmp_path, distil={"replay": 0.0, "calculator": calculator})))
    loop = Loop(recipe, tmp_path / "run", "test")
    problem = TASK.problems("train", limit=1)[0]
    right = TASK.solutions(problem)[0]
    a, op, b, _, c, *_ = right[0].split()
    slip = f"{a} {op} {b} = {int(c) + 1} (left: ...)"  # a dead end that writes a false result, then backs out
    stream = [slip, TASK.back_step(problem, []), *right]
    assert TASK.solves(problem, TASK.judged(problem, stream))  # the outcome check alone accepts it
    tree, parent = [Node(0, None, "")], 0
    for solution in (stream, right):
        parent = 0
        for k, step in enumerate(solution):
            tree.append(Node(len(tree), parent, step, terminal=k == len(solution) - 1))
            parent = tree[-1].id
    folder = loop.folder(1) / "search"
    folder.mkdir(parents=True)
    row = {"method": "self_consistency", "budget": 2, "problem_id": problem.id, "correct": True,
           "trace": {"nodes": [n.__dict__ for n in tree]}}
    (folder / "results.jsonl").write_text(json.dumps(row) + "\n")
    (loop.folder(1) / "prompts.json").write_text(json.dumps({problem.id: TASK.prompt(problem)}))
    result = loop.keep_phase(1)
    kept = [TASK.split_steps(json.loads(line)["completion"]) for line in (loop.folder(1) / "kept.jsonl").open()]
    assert kept == ([right] if calculator else [stream, right])
    assert result.get("slipped") == (1 if calculator else None)
    with pytest.raises(ConfigError, match=r"needs distil\.target choices"):
        ImproveRecipe.load(str(tiny_recipe(tmp_path, distil={"target": "visits", "calculator": True})))


def tiny_recipe(tmp_path: Path, **changes: object) -> Path:
    """A loop small enough for a test: 3 training puzzles, two proposals a state, a few training steps, measured on
    one test puzzle."""
    raw = {"task": "game24", "policy": "game24-policy", "verifier": "game24-prm", "rounds": 1,
           "search": {"method": "tot_bfs", "n": 2, "problems": 3},
           "distil": {"replay": 0.0, "train": {"steps": 40, "batch_size": 4, "warmup": 1, "save_every": 0}},
           "value": {"train": {"steps": 3, "batch_size": 4, "warmup": 1, "save_every": 0}},
           "measure": {"problems": 1, "samples": 2, "methods": ["beam"], "budgets": [2],
                       "options": {"beam": {"width": 2}}, "recall_k": 2}, **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


ORACLE = ("check_step", "step_labels", "moves", "step_candidates", "error_kind", "is_solvable")


STREAM = {"search": {"method": "tot_dfs", "n": 4, "problems": 3},
          "distil": {"target": "stream", "max_positions": 512, "replay": 0.0,
                     "train": {"steps": 2, "batch_size": 2, "warmup": 1, "save_every": 0}}}


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{}, STREAM], ids=["choices", "stream"])
def test_the_step_oracle_makes_none_of_the_training_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          changes: dict[str, object]) -> None:
    """The search and keep phases run with every step-oracle method of the task raising (on the class: every game24
    task the loop makes); with the search written as streams too, whose policy trains on the longer context."""

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the step oracle was asked while making training data")

    for name in ORACLE:
        monkeypatch.setattr(Game24, name, forbidden)
    loop = Loop(ImproveRecipe.load(str(tiny_recipe(tmp_path, **changes))), tmp_path / "run", "test")
    assert loop.search_phase(1)["problems"] == 3
    assert loop.keep_phase(1)["records"] > 0
    if changes:
        kept = loop.kept_pairs(1)
        assert kept and all(TASK.solves(TASK.from_text(p.removeprefix("Input: ").strip()), TASK.split_steps(c))
                            for p, c in kept)
        loop.policy_phase(1)
        config = json.loads((loop.folder(1) / "policy" / "config.json").read_text())
        assert config["max_position_embeddings"] == 512
    with pytest.raises(AssertionError, match="step oracle"):  # the guard is on
        loop.task.step_labels(PROBLEM, [TREE[0][2]])


def improve(recipe: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "ponder.cli", "improve", str(recipe), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


COLUMNS = {"round", "policy", "verifier", "kept", "train_solved", "generated_tokens", "cpu_minutes", "greedy",
           "greedy_slips", "pass@2", "bon@2", "beam@2", "step_auroc", "recall@2", "below_greedy"}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # three runs of the loop: minutes each on a loaded 2-core machine
def test_a_round_killed_mid_way_resumes_to_the_same_result(tmp_path: Path) -> None:
    """One run straight through; another SIGKILLed while it distils the policy, then run again in its folder: the
    same kept data, value targets, policy weights and table (but for CPU time), which has every column."""
    recipe = tiny_recipe(tmp_path)
    straight = improve(recipe, tmp_path / "straight")
    assert straight.wait() == 0, straight.stderr.read().decode()[-2000:] if straight.stderr else ""
    killed = improve(recipe, tmp_path / "killed")
    state = tmp_path / "killed" / "round-1" / "policy" / "train-state.pt"
    while not state.exists() and killed.poll() is None:
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before its policy phase could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "round-1" / "policy.json").exists()
    resumed = improve(recipe, tmp_path / "killed")
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    for name in ("kept.jsonl", "records.jsonl"):
        assert (tmp_path / "killed" / "round-1" / name).read_text() == (tmp_path / "straight" / "round-1" /
                                                                         name).read_text()
    weights = [load_file(tmp_path / run / "round-1" / "policy" / "model.safetensors") for run in ("straight", "killed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    rows = [[json.loads(line) for line in (tmp_path / run / "rounds.jsonl").open()] for run in ("straight", "killed")]
    assert [r["round"] for r in rows[0]] == [0, 1]
    for row in rows[0]:
        assert set(row) == COLUMNS
    drop = ("cpu_minutes", "policy", "verifier")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows[1]]
    card = (tmp_path / "killed" / "round-1" / "verifier" / "README.md").read_text()
    assert f"ponder improve {recipe} --out {tmp_path / 'killed'}" in card
    assert (tmp_path / "killed" / "rounds.png").stat().st_size > 0


def test_far_splits_hold_solvable_puzzles_above_the_training_numbers_apart() -> None:
    far, pool = TASK.problems("far"), TASK.problems("far-train")
    assert (len(far), len(pool)) == (100, 1000)
    assert not {p.question for p in far} & {p.question for p in pool}
    for problem in far[:20] + pool[:20]:
        numbers = problem.meta["numbers"]
        assert sum(25 <= n <= 60 for n in numbers) == 1 and all(1 <= n <= 60 for n in numbers)
        assert TASK.solutions(problem)
    near = TASK.problems("far-train-30")  # a curriculum's first step: the pool's puzzles nearest the training numbers
    assert 100 < len(near) < 300 and all(max(p.meta["numbers"]) <= 30 for p in near)
    assert [p.question for p in pool if max(p.meta["numbers"]) <= 30] == [p.question for p in near]
    assert TASK.problems("far-train-60") == pool
    for bad in ("far-train-24", "far-train-61", "far-train-x", "farther"):
        with pytest.raises(TaskError, match="far-train-N"):
            TASK.problems(bad)


def test_arith_training_problems_of_the_long_lengths_are_not_the_long_split() -> None:
    arith = get_task("arith")
    assert [p.meta["n_ops"] for p in arith.problems("long-train-11", limit=3)] == [11, 11, 11]
    assert [p.meta["n_ops"] for p in arith.problems("long-train", limit=4)] == [9, 10, 11, 12]
    held_out = {p.question for p in arith.problems("long")}
    assert not held_out & {p.question for split in ("long-train", "long-train-9", "long-train-12")
                           for p in arith.problems(split, limit=200)}
    problem = arith.problems("long-train-10", limit=2)[1]
    assert arith.rebuild(problem.id, problem.question).meta["n_ops"] == 10


def test_shipped_recipes_load_and_a_bad_knob_is_one_line(tmp_path: Path) -> None:
    # the recipes RESULTS reports: loops, and trainers' (a `kind:` names which)
    experiments = {str(p): yaml.safe_load(p.read_text()) for p in sorted((ROOT / "experiments").glob("*.yaml"))}
    loops = [path for path, raw in experiments.items() if "kind" not in raw]
    assert len(loops) >= 6
    for name in ("game24", "game24-weak", "game24-far", "arith-long", "gsm8k-smollm2", *loops):
        recipe = ImproveRecipe.load(name)
        assert recipe.rounds >= 1 and recipe.measure.split not in recipe.splits()
    trainers = {"grpo": GRPORecipe, "sft": SFTRecipe}
    for path, raw in experiments.items():
        if "kind" in raw:
            assert trainers[raw["kind"]].load(path).kind == raw["kind"]
    bad = tiny_recipe(tmp_path, distil={"target": "dreams"})
    done = subprocess.run([sys.executable, "-m", "ponder.cli", "improve", str(bad), "--out", str(tmp_path / "x")],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "unknown distil target 'dreams'" in done.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="only tot_dfs keeps"):
        ImproveRecipe.load(str(tiny_recipe(tmp_path, distil={"target": "stream"})))


def seed_questions(loop: Loop, draws: int = 40) -> set[str]:
    """The puzzles of a weak start's first `draws` seed examples."""
    examples = itertools.islice(loop.seed_examples(0), draws)
    return {TASK.from_text(example[0].removeprefix("Input: ").strip()).question for example in examples}


def test_a_weak_start_trains_its_policy_on_seed_problems_the_loop_does_not_search(tmp_path: Path) -> None:
    recipe = ImproveRecipe.load(str(tiny_recipe(tmp_path, policy="", verifier="", start={
        "seed_problems": 2, "model": {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_positions": 192},
        "train": {"steps": 2, "batch_size": 4, "warmup": 1}})))
    loop = Loop(recipe, tmp_path / "run", "ponder improve weak")
    searched = {p.question for p in TASK.problems("train", limit=recipe.search.problems)}
    seeds = seed_questions(loop)
    assert len(seeds) == 2 and not seeds & searched
    loop.start_phase()
    assert loop.policy(0) == str(tmp_path / "run" / "round-0" / "policy") and loop.verifier(0) == ""
    assert loop.search_config(1).methods == ["self_consistency"]  # no verifier yet: an unguided search
    assert "ponder improve weak" in (Path(loop.policy(0)) / "README.md").read_text()


def test_a_weak_start_can_learn_its_seed_problems_as_streams_of_search(tmp_path: Path) -> None:
    recipe = ImproveRecipe.load(str(tiny_recipe(tmp_path, policy="", verifier="", start={
        "seed_problems": 2, "walk": "streams", "detour": 1.0})))
    loop = Loop(recipe, tmp_path / "run", "test")
    examples = list(itertools.islice(loop.seed_examples(0), 20))
    assert seed_questions(loop) == {p.question for p in loop.seed_set()}
    streams = [(TASK.from_text(prompt.removeprefix("Input: ").strip()), TASK.split_steps(solution))
               for prompt, solution, *_ in examples]
    assert all(TASK.solves(problem, TASK.judged(problem, steps)) for problem, steps in streams)
    assert any(len(TASK.judged(problem, steps)) < len(steps) for problem, steps in streams)  # dead ends, back steps
    for knobs, message in (({"walk": "strolls"}, "walk must be one of"), ({"detour": 2}, "detour is a probability")):
        with pytest.raises(TaskError, match=message):
            ImproveRecipe.load(str(tiny_recipe(tmp_path, policy="", start={"seed_problems": 2, **knobs})))


def test_fresh_rounds_search_problems_no_earlier_round_or_seed_set_saw(tmp_path: Path) -> None:
    fresh = ImproveRecipe.load(str(tiny_recipe(tmp_path, rounds=3, search={"method": "tot_bfs", "n": 2,
                                                                           "problems": 3, "fresh": True})))
    rounds = [[p.id for p in fresh.searched(n)] for n in (1, 2, 3)]
    train = [p.id for p in TASK.problems("train", limit=9)]
    assert rounds == [train[0:3], train[3:6], train[6:9]]
    assert Loop(fresh, tmp_path / "run", "test").search_config(2).problems(TASK) == fresh.searched(2)
    same = ImproveRecipe.load(str(tiny_recipe(tmp_path, rounds=3)))
    assert [p.id for p in same.searched(3)] == train[0:3]  # without fresh: the same problems every round
    weak = ImproveRecipe.load(str(tiny_recipe(tmp_path, rounds=2, policy="", verifier="", start={"seed_problems": 2},
                                              search={"method": "tot_bfs", "n": 2, "problems": 3, "fresh": True})))
    seeds = seed_questions(Loop(weak, tmp_path / "weak", "test"))
    searched = {p.question for n in (1, 2) for p in weak.searched(n)}
    assert len(seeds) == 2 and len(searched) == 6 and not seeds & searched
    with pytest.raises(ConfigError, match="holds 100"):  # a split too small for the rounds fails before any work
        ImproveRecipe.load(str(tiny_recipe(tmp_path, rounds=2, search={"split": "far", "problems": 60, "fresh": True},
                                           measure={"split": "test", "problems": 1})))


@pytest.mark.slow
def test_unsolved_selection_searches_only_problems_the_policy_answers_wrong(tmp_path: Path) -> None:
    recipe = ImproveRecipe.load(str(tiny_recipe(tmp_path, search={"method": "tot_bfs", "n": 2, "problems": 3,
                                                                  "split": "far", "select": "unsolved"})))
    loop = Loop(recipe, tmp_path / "run", "test")
    found = loop.search_phase(1)
    screened = {r["problem_id"]: r["correct"] for r in
                map(json.loads, (tmp_path / "run" / "round-1" / "screen" / "results.jsonl").open())}
    chosen = [p.id for p in loop.searched(1)]
    assert len(screened) == found["screened"] == 100 and found["unsolved"] == sum(not c for c in screened.values())
    assert len(chosen) == 3 and not any(screened[i] for i in chosen)
    searched = [json.loads(line)["problem_id"] for line in (tmp_path / "run" / "round-1" / "search" /
                                                             "results.jsonl").open()]
    assert sorted(searched) == sorted(chosen) and found["generated_tokens"] > found["screen_tokens"] > 0
    assert loop.keep_phase(1)["records"] > 0  # the trees of the chosen problems
    with pytest.raises(ConfigError, match=r"unknown search\.select"):
        ImproveRecipe.load(str(tiny_recipe(tmp_path, search={"select": "hardest"})))
