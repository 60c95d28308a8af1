"""Learned verifiers: both PRM conventions and the ORM train, save their head, load and score; the read
positions survive markers inside steps and markers that the tokenizer splits."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch

from ponder.collect.records import StepRecord
from ponder.collect.run import CollectConfig, run_collect
from ponder.lm.engine import Engine
from ponder.search import SearchConfig, get_method, search
from ponder.tasks import get_task
from ponder.trace import Usage
from ponder.train.loop import TrainConfig
from ponder.train.verifier import VerifierRecipe, targets, train_verifier
from ponder.verifiers import aggregate, get_verifier
from ponder.verifiers.base import MeteredVerifier, PrefixError
from ponder.verifiers.learned import HeadSpec, LearnedVerifier, StepLayout, VerifierError

HEADS = {"step_tag": " ки", "token_classification": "<extra_0>", "orm": "", "value": ""}


@pytest.fixture(scope="module")
def oracle_records(tmp_path_factory, game24_backend) -> Path:
    out = tmp_path_factory.mktemp("oracle")
    run_collect(CollectConfig(labeller="oracle", task="game24", limit=10, samples=4), out, lm=Engine(game24_backend),
                show_progress=False)
    return out / "records.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, oracle_records) -> dict[str, Path]:
    out = {}
    for kind, marker in HEADS.items():
        directory = tmp_path_factory.mktemp(kind)
        recipe = VerifierRecipe(name=f"test-{kind}", task="game24", head=HeadSpec(kind=kind, marker=marker),
                                labels="hard", train=TrainConfig(steps=12, batch_size=8, warmup=2, lr=1e-3, bf16=False))
        summary = train_verifier(recipe, directory, data=str(oracle_records))
        assert summary["examples"] > 0 and summary["steps"] == 12
        out[kind] = directory
    directory = tmp_path_factory.mktemp("checked")
    recipe = VerifierRecipe(name="test-checked", task="game24", head=HeadSpec(kind="step_tag", marker=" ки",
                                                                              check_after="="),
                            labels="hard", train=TrainConfig(steps=12, batch_size=8, warmup=2, lr=1e-3, bf16=False))
    assert train_verifier(recipe, directory, data=str(oracle_records))["checked_tokens"] > 0
    out["checked"] = directory
    return out


@pytest.mark.parametrize("kind", list(HEADS))
def test_each_head_saves_its_declaration_and_scores_every_step(trained, kind):
    verifier = get_verifier(str(trained[kind]))
    assert isinstance(verifier, LearnedVerifier) and verifier.head.kind == kind
    assert verifier.head.task == "game24" and verifier.head.self_test["labels"][-1] is False
    task = get_task("game24")
    problem = task.problems("test", limit=1)[0]
    solutions = [["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)", "20 + 4 = 24 (left: 24)"],
                 ["5 + 4 = 9 (left: 6 9 10)"]]
    scores = asyncio.run(verifier.score(task, problem, solutions))
    assert [len(s) for s in scores] == [3, 1]
    assert all(0.0 <= x <= 1.0 for s in scores for x in s)
    report = verifier.self_test(require_separation=False)  # 12 steps of training need not separate it yet
    assert report["steps"] == 3 and report["kind"] == kind


def test_a_value_model_learns_the_outcome_at_every_step_and_judges_prefixes(trained):
    record = StepRecord("4 5 6 10", ["5 + 4 = 9 (left: 6 9 10)", "9 + 6 = 15 (left: 10 15)"], [1.0, 0.0],
                        outcome=False)
    assert targets(record, "value", "hard") == [0.0, 0.0]  # OVM: how the solution ended, at every prefix
    assert targets(record, "orm", "hard") == [None, 0.0]  # ORM: at the end only
    assert targets(record, "step_tag", "hard") == [1.0, 0.0]  # PRM: the process labels
    task = get_task("game24")
    problem = task.problems("test", limit=1)[0]
    prefixes = [["5 * 4 = 20 (left: 6 10 20)"], ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)"]]
    value = asyncio.run(get_verifier(str(trained["value"])).score_prefixes(task, problem, prefixes))
    assert [len(s) for s in value] == [1, 2] and value[1][0] == pytest.approx(value[0][0], abs=1e-5)
    with pytest.raises(PrefixError, match="whole solutions"):
        asyncio.run(get_verifier(str(trained["orm"])).score_prefixes(task, problem, prefixes))


def test_step_tag_score_is_p_plus_over_p_plus_plus_p_minus_at_the_tag(trained):
    verifier = LearnedVerifier(str(trained["step_tag"]))
    prompt, steps = "Input: 4 5 6 10\n", ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)"]
    ids, positions, _, _ = verifier.layout.encode(prompt, steps)
    tag = verifier.tokenizer.convert_tokens_to_ids("ки")
    assert [ids[p] for p in positions] == [tag, tag]  # the tag is one added token, read where it sits
    with torch.no_grad():
        probs = verifier.model(torch.tensor([ids])).logits[0].softmax(-1)
    good, bad = verifier.layout.label_ids
    expected = [(probs[p, good] / (probs[p, good] + probs[p, bad])).item() for p in positions]
    assert verifier.score_texts([(prompt, steps)])[0] == pytest.approx(expected, rel=1e-4)


def test_a_checked_prm_scores_the_tag_times_its_probability_of_every_result_so_far(trained):
    verifier = LearnedVerifier(str(trained["checked"]))
    assert verifier.head.check_after == "=" and "also checks what each step computes" in (
        trained["checked"] / "README.md").read_text()
    prompt = "Input: 4 5 6 10\n"
    steps = ["5 * 4 = 20 (left: 6 10 20)", "Let me think", "10 - 6 = 4 (left: 4 20)"]
    ids, positions, checks, _ = verifier.layout.encode(prompt, steps)
    tok = verifier.tokenizer
    assert [tok.decode([ids[p] for p in c]) for c in checks] == [" 20 (left: 6 10 20)", "", " 4 (left: 4 20)"]
    with torch.no_grad():
        logprobs = verifier.model(torch.tensor([ids])).logits[0].log_softmax(-1)
    good, bad = verifier.layout.label_ids
    expected, written = [], 0.0
    for p, c in zip(positions, checks):
        written += sum(logprobs[t - 1, ids[t]].item() for t in c)  # token t is predicted at t - 1
        tag = (logprobs[p, good].exp() / (logprobs[p, good].exp() + logprobs[p, bad].exp())).item()
        expected.append(tag * math.exp(written))
    assert verifier.score_texts([(prompt, steps)])[0] == pytest.approx(expected, rel=1e-3)


def test_the_check_loss_trains_only_the_results_of_steps_that_can_still_succeed(game24_backend):
    from ponder.collect.records import StepRecord
    from ponder.train.verifier import examples

    layout = StepLayout(game24_backend.tokenizer, HeadSpec(kind="step_tag", marker=" ки", check_after="="), 192)
    steps = ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 5 (left: 5 20)", "20 + 5 = 25 (left: 25)"]
    record = StepRecord(question="4 5 6 10", steps=steps, labels=[1.0, 0.0, 0.0], task="game24")
    [(ids, positions, targets, written)], cut = examples([record], get_task("game24"), layout, "step_tag", "hard")
    assert cut == 0
    assert targets == [1.0, 0.0, 0.0] and len(positions) == 3
    assert game24_backend.tokenizer.decode([ids[p] for p in written]) == " 20 (left: 6 10 20)"
    with pytest.raises(VerifierError, match="check_after needs a step_tag"):
        HeadSpec(kind="orm", check_after="=")


def test_a_record_longer_than_the_context_trains_the_steps_before_what_does_not_fit(game24_backend):
    from ponder.collect.records import StepRecord
    from ponder.train.verifier import examples

    layout = StepLayout(game24_backend.tokenizer, HeadSpec(kind="step_tag", marker=" ки"), 192)
    steps = ["5 * 4 = 20 (left: 6 10 20)", "10 - 6 = 4 (left: 4 20)", "1" * 400, "20 + 4 = 24 (left: 24)"]
    endless = StepRecord(question="4 5 6 10", steps=steps, labels=[1.0, 1.0, 0.0, 1.0], task="game24")
    garbage = StepRecord(question="4 5 6 10", steps=["1" * 400], labels=[0.0], task="game24")
    [(ids, positions, targets, _), (tail, *_)], cut = examples([endless, garbage], get_task("game24"), layout,
                                                               "step_tag", "soft")
    assert cut == 1 and targets == [1.0, 1.0] and len(positions) == 2 and len(ids) <= 192
    assert len(tail) == 192  # one step alone is read from its end
    assert examples([endless], get_task("game24"), layout, "orm", "soft") == ([], 1)  # its outcome is cut away


def test_a_split_marker_and_a_step_containing_it_keep_one_score_per_step(game24_backend):
    tok = game24_backend.tokenizer
    layout = StepLayout(tok, HeadSpec(kind="step_tag", marker=" <<tag>>"), max_length=512)
    assert len(layout.marker_ids) == 8  # a character tokenizer splits it into eight tokens
    steps = ["1 + 2 = 3 <<tag>> (left: 3 3 4)", "3 * 3 = 9 (left: 4 9)"]
    ids, positions, _, prompt_end = layout.encode("Input: 1 2 3 4\n", steps)
    assert len(positions) == 2
    assert tok.decode(ids[: prompt_end + 1]).endswith("Input: 1 2 3 4\n")  # the state before any step ends there
    assert ids[prompt_end + 1] == tok("1").input_ids[-1]
    assert tok.decode(ids[positions[0] - 7 : positions[0] + 1]) == " <<tag>>"  # read at the marker's last token
    assert tok.decode(ids).count("<<tag>>") == 2  # the one inside the step was removed


def test_a_foreign_checkpoint_takes_a_preset_and_one_without_a_head_is_refused():
    with pytest.raises(VerifierError, match="declares no `ponder_verifier`"):
        LearnedVerifier("game24-policy")
    with pytest.raises(VerifierError, match="unknown verifier preset"):
        LearnedVerifier("game24-policy", head="nope")
    shepherd = LearnedVerifier("game24-policy", head="math-shepherd")  # its tokenizer has no ки: " ", <unk>, <unk>
    report = shepherd.self_test()
    assert report["marker_tokens"] == 3 and len(report["scores"]) == report["steps"]


def test_best_of_n_ranks_by_the_configured_aggregation_of_learned_scores(trained, game24_backend):
    task = get_task("game24")
    problem = task.problems("test", limit=3)[2]
    verifier = get_verifier(str(trained["step_tag"]))
    for how in ("min", "last", "prod", "mean"):
        cfg = SearchConfig(n=6, aggregate=how, max_tokens=160)
        trace = asyncio.run(search(task, problem, Engine(game24_backend), verifier, get_method("best_of_n"), cfg))
        leaves = [n for n in trace.nodes if n.terminal]
        sols = [trace.path(n.id) for n in leaves]
        scores = [aggregate(s, how) for s in asyncio.run(verifier.score(task, problem, sols))]
        assert [n.score for n in leaves] == pytest.approx(scores)
        assert trace.solution == task.join_steps(sols[max(range(len(sols)), key=lambda i: scores[i])])
        assert trace.usage.verifier_calls == 6


def test_training_without_data_or_labels_fails_clearly(tmp_path):
    from ponder.tasks.base import TaskError

    recipe = VerifierRecipe(name="x", task="game24", head=HeadSpec(kind="orm"))
    with pytest.raises(TaskError, match="no training data"):
        train_verifier(recipe, tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"question": "1 2 3 4", "steps": ["a"], "labels": [1.0], "task": "game24"}\n')
    with pytest.raises(TaskError, match="no labelled steps"):
        train_verifier(recipe, tmp_path / "out", data=str(empty))  # an ORM needs outcomes


@pytest.mark.parametrize("name", ["game24-prm", "game24-orm", "arith-prm", "arith-orm"])
def test_shipped_verifiers_pass_their_self_test(name):
    report = get_verifier(name).self_test()
    assert report["separates_known_example"]


def test_shipped_game24_prm_ranks_test_split_steps_like_the_oracle(game24_backend):
    """On policy samples for held-out puzzles, good steps outscore bad ones (step AUROC against the oracle: 0.957
    on the shipped policy's 552 solutions to 100 test puzzles, docs/RESULTS.md; here a smaller draw, whose bad
    steps are nearly all dead ends, the PRM's weak kind)."""
    from ponder.collect.mc import exact_labels
    from ponder.collect.run import distinct_samples
    from ponder.evaluate.metrics import auroc

    task = get_task("game24")
    problems = task.problems("test", limit=12)
    cfg = SearchConfig(temperature=0.8, max_tokens=160, seed=3)
    lm = Engine(game24_backend)

    async def draw():
        return await asyncio.gather(*(distinct_samples(task, p, lm, cfg, 4) for p in problems))

    sampled = asyncio.run(draw())
    prm = get_verifier("game24-prm")
    scores, truth = [], []
    for p, sols in zip(problems, sampled):
        scores += [x for s in asyncio.run(prm.score(task, p, sols)) for x in s]
        truth += [t > 0 for s in sols for t in exact_labels(task, p, s)]
    assert sum(truth) >= 5 and len(truth) - sum(truth) >= 5
    assert auroc(scores, truth) >= 0.9  # 0.937 on this draw


def test_verifier_benchmark_on_state_walks_needs_no_policy_and_counts_kinds_of_bad_step():
    from ponder.bench.verifiers import verifiers_benchmark

    result = verifiers_benchmark(["oracle", "vote"], "game24", problems=4, samples=3, source="walks")
    kinds = result["kinds"]
    assert sum(kinds.values()) == result["steps"] and result["bad_steps"] == result["steps"] - kinds["good"]
    assert {"arithmetic", "after an error"} <= set(kinds)
    oracle = result["rows"][0]
    assert oracle["bon_min"] is None  # walks stop anywhere: nothing to pick
    with pytest.raises(ValueError, match="unknown source"):
        verifiers_benchmark(["oracle"], "game24", problems=1, source="dreams")


def test_verifier_benchmark_samples_the_policy_within_its_max_tokens():
    """The policy's samples stop at `max_tokens` (a stream policy needs more than the task's default): 8
    characters hold no whole game24 solution, the task's default holds the shipped policy's."""
    from ponder.bench.verifiers import verifiers_benchmark

    cut = verifiers_benchmark(["oracle"], "game24", problems=3, samples=2, max_tokens=8)
    whole = verifiers_benchmark(["oracle"], "game24", problems=3, samples=2)
    assert cut["solutions"] > 0 and cut["pass_at_n"] == 0
    assert whole["steps"] > cut["steps"]


def test_depth_baseline_scores_steps_by_position_only():
    from ponder.tasks import get_task
    from ponder.verifiers import get_verifier

    task = get_task("game24")
    problem = task.problem("4 5 6 10")
    scores = asyncio.run(get_verifier("depth").score(task, problem, [["a", "b", "c"], ["x"]]))
    assert scores == [[1.0, 0.5, 1 / 3], [1.0]]


def test_verifier_training_killed_with_sigkill_resumes_to_the_same_weights(tmp_path, oracle_records,
                                                                         kill_then_resume):
    recipe = tmp_path / "prm.yaml"
    recipe.write_text('kind: verifier\ntask: game24\nhead: {kind: step_tag, marker: " ки", good_token: "+", '
                      'bad_token: "-"}\nlabels: hard\n'
                      "train: {steps: 40, batch_size: 8, lr: 1.0e-3, warmup: 2, seed: 1, bf16: false, save_every: 0}\n")
    whole, killed = kill_then_resume(["train", "verifier", str(recipe), "--data", str(oracle_records)], tmp_path, 40)
    assert (killed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_a_prm_reading_on_from_cached_prefixes_scores_as_it_does_from_scratch():
    task = get_task("game24")
    items = []
    for problem in task.problems("test", limit=6):
        path = task.reference_solution(problem) or []
        for k in range(1, len(path) + 1):  # every prefix, and a sibling of its last step
            items += [(task.prompt(problem), path[:k]), (task.prompt(problem), [*path[: k - 1], "1 + 1 = 2 (left: 2)"])]
    fresh = LearnedVerifier("game24-prm", batched=False, prefix_cache_mb=0)
    reuse = LearnedVerifier("game24-prm", batched=False)
    assert fresh.prefixes is None and reuse.prefixes is not None
    cold = reuse.score_texts(items[::2]) + reuse.score_texts(items[1::2])  # the siblings find their parents cached
    warm = reuse.score_texts(items)
    expected = fresh.score_texts(items)
    interleaved = [s for pair in zip(cold[: len(items) // 2], cold[len(items) // 2 :]) for s in pair]
    for got in (interleaved, warm):
        assert all(math.isclose(a, b, abs_tol=1e-5) for x, y in zip(got, expected) for a, b in zip(x, y))
    ids = reuse.layout.encode(*items[-1]).ids
    assert reuse.prefixes.match(ids)[0] == len(ids)  # what it read stays cached, within its budget
    assert 0 < reuse.prefixes.nbytes <= reuse.prefixes.budget_bytes


@pytest.mark.parametrize("name", ["game24", "arith"])
def test_the_known_example_of_an_outcome_model_has_a_right_and_a_wrong_whole_solution(name):
    from ponder.train.verifier import known_example

    task = get_task(name)
    problem = task.problems("test", limit=1)[0]
    example = known_example(task)
    assert task.solves(problem, example["outcomes"]["right"]) and not task.solves(problem, example["outcomes"]["wrong"])
    assert example["labels"][-1] is False and all(example["labels"][:-1])


def test_a_verifier_judges_the_path_a_stream_of_search_ends_on(caplog):
    task = get_task("game24")
    p = task.problem("4 5 6 10")
    dead = ["10 + 5 = 15 (left: 4 6 15)", "15 + 4 = 19 (left: 6 19)", "19 - 6 = 13 (left: 13)"]
    path = ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]
    stream = [*[*dead, task.back_step(p, [])] * 6, *path]  # longer than the PRM's context, its path is not
    assert task.judged(p, stream) == path and task.judged(p, path) == path
    prm = LearnedVerifier("game24-prm")
    # read whole, the stream does not fit: it scores 0 at every step, with a warning, and loses no other solution
    with caplog.at_level("WARNING", logger="ponder.verifiers.learned"):
        unread, read = asyncio.run(prm.score(task, p, [stream, path]))
    assert unread == [0.0] * len(stream) and read == asyncio.run(prm.score(task, p, [path]))[0] and min(read) > 0.5
    assert "longer than the verifier's 192 tokens" in caplog.text
    usage = Usage()
    metered = MeteredVerifier(prm, usage)
    assert asyncio.run(metered.score(task, p, [stream])) == [read]
    assert usage.verifier_calls == 1
    # a back step to a state not on the path ends the stream there: the verifier sees the search go astray
    lost = [dead[0], "back (left: 1 2 3)", *path]
    assert task.judged(p, lost) == [dead[0], "back (left: 1 2 3)"]
    [scores] = asyncio.run(metered.score_prefixes(task, p, [lost]))
    assert len(scores) == 2 and scores[-1] < 0.5
