from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from ponder.tasks import Game24, TaskError, get_task
from ponder.tasks.game24 import load_puzzles
from ponder.train.data import (
    ORDERS,
    StreamDraw,
    endless,
    move_walks,
    repeat_marks,
    search_stream,
    solver_examples,
    stream_walks,
    trie,
    tried_moves,
    walks,
)
from ponder.train.sft import SFTRecipe


def test_move_walks_draw_each_next_step_uniformly_among_the_solver_moves():
    task = Game24()
    problem = task.problem("4 5 6 10", id="p")
    root = trie(task.solutions(problem))
    assert len(root) >= 2
    firsts = Counter(solution.split("\n")[0] for _, solution in islice(move_walks(task, [problem], seed=1), 4000))
    assert set(firsts) == set(root)
    expected = 4000 / len(root)
    assert all(abs(n - expected) < 0.2 * expected for n in firsts.values())
    paths = Counter(s for _, s in islice(move_walks(task, [problem], seed=1), 200))
    assert all(task.solves(problem, task.split_steps(s)) for s in paths)
    assert list(islice(move_walks(task, [problem], seed=1), 50)) == list(islice(move_walks(task, [problem], 1), 50))


def test_solver_examples_mix_splits_by_weight_and_never_take_the_test_split():
    task = get_task("arith")
    drawn = list(islice(solver_examples(task, {"train": 1.0}, "moves", seed=0, limit=30), 100))
    assert all(prompt.startswith("Question:") and solution.rstrip().split("\n")[-1].startswith("Answer:")
               for prompt, solution in drawn)
    with pytest.raises(TaskError, match="never trains on the test split"):
        solver_examples(task, {"train": 0.5, "test": 0.5}, "moves", seed=0, limit=3)
    with pytest.raises(TaskError, match="walk must be one of"):
        solver_examples(task, {"train": 1.0}, "jumps", seed=0)


def test_a_walk_over_problems_without_solutions_fails_instead_of_waiting_forever():
    task = get_task("game24")
    with pytest.raises(TaskError, match="nothing to draw"):
        walks(task, [task.problem((1, 1, 1, 1))], "paths", seed=0)  # no solution: no pair to cycle through
    with pytest.raises(TaskError, match="nothing to draw"):
        endless([], seed=0)


def test_action_walks_teach_every_action_format_in_right_solutions():
    task = get_task("arith")
    problems = {p.question: p for p in task.problems("train", 40)}
    drawn = list(islice(solver_examples(task, {"train": 1.0}, "actions", seed=0, limit=40), 200))
    lines = Counter(line.split(" ")[0] for _, solution in drawn for line in solution.split("\n") if line)
    assert lines["Given:"] > 20 and lines["Q:"] == lines["A:"] > 100 and lines["Answer:"] == 200
    for prompt, solution in drawn:
        problem = problems[prompt.removeprefix("Question: ").strip()]
        assert task.check_step(problem, task.split_steps(solution)) and task.solves(problem, task.split_steps(solution))
    assert drawn[:20] == list(islice(solver_examples(task, {"train": 1.0}, "actions", seed=0, limit=40), 20))
    with pytest.raises(TaskError, match="task 'game24' has no formats for rStar's actions"):
        next(solver_examples(Game24(), {"train": 1.0}, "actions", seed=0, limit=3))


def test_stream_walks_search_into_dead_ends_back_out_and_end_on_a_right_solution():
    task = Game24()
    problems = task.problems("train", 60)
    by_question = {p.question: p for p in problems}
    drawn = list(islice(solver_examples(task, {"train": 1.0}, "streams", seed=0, limit=60), 300))
    backs = 0
    for prompt, stream in drawn:
        problem, steps = by_question[prompt.removeprefix("Input: ").strip()], task.split_steps(stream)
        assert task.solves(problem, steps) and task.check_step(problem, steps)
        path = task.resolve(problem, steps)
        assert path is not None and len(path) == 3 and all(s in steps for s in path)
        for k, step in enumerate(steps):  # every back step follows a dead end and returns to a state on the path
            if step.startswith("back"):
                backs += 1
                assert not task.check_step(problem, steps[:k]) and task.resolve(problem, steps[: k + 1]) is not None
            assert k == len(steps) - 1 or not task.is_final(steps[: k + 1])  # only the right finish is written
    assert backs > 30
    assert sum("back" in s for _, s in drawn) < 200  # some streams go straight, some search
    assert drawn[:20] == list(islice(solver_examples(task, {"train": 1.0}, "streams", seed=0, limit=60), 20))
    with pytest.raises(TaskError, match="task 'arith' has no back steps"):
        next(solver_examples(get_task("arith"), {"train": 1.0}, "streams", seed=0, limit=3))


def test_repeat_marks_point_where_a_stream_could_retry_a_move_it_backed_out_of():
    """A hand-written stream: from the start it tries `1 + 1`, backs out, tries `8 * 2`, backs out, then `2 + 1`
    from the first move's state. The marks are the characters where the moves already tried from that state would
    leave the move written."""
    task = Game24()
    problem = task.problem("1 1 1 8", id="p")
    steps = ["1 + 1 = 2 (left: 1 2 8)", "1 / 2 = 1/2 (left: 1/2 8)", "back (left: 1 2 8)",
             "8 * 2 = 16 (left: 1 16)", "back (left: 1 2 8)", "2 + 1 = 3 (left: 3 8)", "8 * 3 = 24 (left: 24)"]
    assert tried_moves(task, problem, steps) == [[], [], [], [steps[1]], [], [steps[1], steps[3]], []]
    text = task.join_steps(steps)
    at = [len(task.join_steps(steps[:k])) for k in range(len(steps))]
    assert repeat_marks(task, problem, steps) == [(at[3], "1"), (at[5], "1"), (at[5], "8")]
    assert text[at[3]] == "8" and text[at[5]] == "2"
    shared = ["1 + 1 = 2 (left: 1 2 8)", "2 * 8 = 16 (left: 1 16)", "back (left: 1 2 8)", "2 + 1 = 3 (left: 3 8)"]
    # the retry shares `2 ` with the tried move: the mark is where the two first differ, at the operation
    assert repeat_marks(task, problem, shared) == [(len(task.join_steps(shared[:3])) + 2, "*")]
    assert repeat_marks(task, problem, steps[:2]) == []  # no back step, nothing retried
    with pytest.raises(TaskError, match="no back steps"):
        tried_moves(get_task("arith"), get_task("arith").problems("train", 1)[0], ["Answer: 1"])


def test_unlikelihood_batches_mark_the_right_tokens_and_the_loss_adds_their_unlikelihood():
    """Each marked position holds the written character, the mark another; the loss is the next-token loss plus
    alpha x mean -log(1 - p(marked token)), computed by hand here from the model's logits."""
    import random

    import torch

    from ponder.train.sft import ModelShape, batches, sft_loss, start_model

    task = Game24()
    model, tok = start_model("", ModelShape(hidden=32, layers=1, heads=2, intermediate=64, max_positions=256))
    examples = stream_walks(task, task.problems("train", 40), 0, marked=True)
    batch = next(b for b in batches(examples, tok, 8, 256, random.Random(0)) if "unlikely_row" in b)
    rows, positions, tokens = batch["unlikely_row"], batch["unlikely_position"], batch["unlikely_token"]
    assert len(rows) > 0
    for r, t, u in zip(rows, positions, tokens):
        assert batch["labels"][r, t] != -100 and batch["input_ids"][r, t] != u  # inside the solution; not written
    with torch.no_grad():
        plain = sft_loss(0.0)(model, dict(batch))
        both = sft_loss(0.5)(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        p = logits[rows, positions - 1].softmax(-1)[torch.arange(len(rows)), tokens]
        bare = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
    assert float(plain) == pytest.approx(float(bare), abs=1e-6)
    assert float(both) == pytest.approx(float(plain - 0.5 * torch.log1p(-p).mean()), abs=1e-5)


def test_the_stream_knobs_need_the_streams_walk(tmp_path):
    bad = tmp_path / "bad.yaml"
    for knob in ("unlikelihood: 1.0", "detour: 0.5"):
        bad.write_text(f"task: game24\nwalk: moves\n{knob}\n")
        with pytest.raises(TaskError, match="needs walk `streams`"):
            SFTRecipe.load(str(bad))
    bad.write_text("task: game24\nwalk: streams\ndetour: 1.5\n")
    with pytest.raises(TaskError, match="detour is a probability"):
        SFTRecipe.load(str(bad))
    bad.write_text("task: game24\nwalk: paths\norder: listed\n")
    with pytest.raises(TaskError, match="order acts on the solver's streams"):
        SFTRecipe.load(str(bad))
    bad.write_text("task: game24\nwalk: streams\norder: sorted\n")
    with pytest.raises(TaskError, match="unknown stream order 'sorted'; choose one of drawn, listed, dead-listed"):
        SFTRecipe.load(str(bad))
    assert SFTRecipe.load("experiments/game24-stream-unlikely.yaml").unlikelihood == 1.0
    assert SFTRecipe.load("game24-stream-policy").detour == 0.5


def test_a_detour_tries_a_dead_move_first_and_the_stream_still_solves():
    """With detour 1 every state that has a dead and a live move goes into a dead one first and backs out of it;
    with detour 0 the streams are the plain ones, draw for draw."""
    import random

    task = Game24()
    problems = task.problems("train", 40)
    plain = [search_stream(task, p, random.Random(k)) for k, p in enumerate(problems)]
    assert plain == [search_stream(task, p, random.Random(k), StreamDraw(0.0)) for k, p in enumerate(problems)]
    dead_first = 0
    for k, problem in enumerate(problems):
        steps = search_stream(task, problem, random.Random(k), StreamDraw(1.0))
        if steps is None:
            continue
        assert task.solves(problem, steps) and task.check_step(problem, steps)
        firsts = {m: task.check_step(problem, [m]) for m in task.moves(problem, [])}
        if any(firsts.values()) and not all(firsts.values()):
            assert not firsts[steps[0]]  # the first move written is dead, and the stream backs out of it
            assert any(step.startswith("back") for step in steps)
            dead_first += 1
    assert dead_first > 30


def test_listed_streams_try_a_states_moves_in_the_tasks_order():
    """Order `listed`: the same streams whatever the seed, a detour into the first dead move listed; `listed` and
    `dead-listed` alike: the dead state a detour reaches tries the first three moves listed there, backing out of
    each, where `drawn` tries them in no fixed order."""
    import random

    task = Game24()
    problems = task.problems("train", 40)
    listed = StreamDraw(order="listed")
    assert ([search_stream(task, p, random.Random(0), listed) for p in problems]
            == [search_stream(task, p, random.Random(9), listed) for p in problems])
    in_listed_order = {}
    for order in ORDERS:
        checked = in_listed_order[order] = 0
        for k, problem in enumerate(problems):
            steps = search_stream(task, problem, random.Random(k), StreamDraw(1.0, order))
            if steps is None:
                continue
            assert task.solves(problem, steps) and task.check_step(problem, steps)
            root = [m for m in task.moves(problem, []) if not task.is_final([m])]
            dead = [m for m in root if not task.check_step(problem, [m])]
            if 0 < len(dead) < len(root):
                assert steps[0] in dead and (steps[0] == dead[0] or order != "listed")
                assert all(step.startswith("back") for step in steps[2:7:2])
                in_listed_order[order] += steps[1:6:2] == task.moves(problem, steps[:1])[:3]
                checked += 1
        assert checked > 30
        assert in_listed_order[order] == checked or order == "drawn"
    assert in_listed_order["drawn"] < checked / 2


def test_recipes_name_their_walk_and_splits(tmp_path):
    assert SFTRecipe.load("game24-policy").splits == {"train": 0.5, "synthetic": 0.5}
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: game24\nwalk: hops\n")
    with pytest.raises(TaskError, match="walk must be one of"):
        SFTRecipe.load(str(bad))


@pytest.mark.slow
def test_synthetic_game24_puzzles_are_solvable_and_never_a_tree_of_thoughts_puzzle():
    task = Game24()
    synthetic = task.problems("synthetic")
    listed = {tuple(sorted(nums)) for _, nums in load_puzzles()}
    assert len(synthetic) > 7 * len(task.problems("train"))
    numbers = [task.numbers(p) for p in synthetic]
    assert not listed & {tuple(sorted(n)) for n in numbers}
    assert all(max(n) > 13 for n in numbers)
    assert all(task.is_solvable(p) for p in synthetic[::97])


def test_synthetic_split_names_say_their_bound():
    task = Game24()
    for bad in ("synthetic-13", "synthetic-61", "synthetic-x", "synth"):
        with pytest.raises(TaskError, match="synthetic"):
            task.problems(bad)
    assert {max(task.numbers(p)) for p in task.problems("synthetic-15")} == {14, 15}
