"""The judge verifier: any language model asked Yes/No about each step, batched through the engine."""

from __future__ import annotations

import asyncio
import math

import pytest

from ponder.lm.engine import Engine
from ponder.lm.hf import Direct, HFBackend
from ponder.search import SearchConfig, get_method, search
from ponder.search.beam import BeamConfig
from ponder.tasks import get_task
from ponder.trace import Usage
from ponder.verifiers import get_verifier
from ponder.verifiers.base import MeteredVerifier, PrefixError
from ponder.verifiers.judge import NO, YES, JudgeVerifier

task = get_task("game24")
SOLUTIONS = [["4 + 4 = 8 (left: 8 8 9)", "8 * 9 = 72 (left: 8 72)"], ["10 - 4 = 6 (left: 5 6 6)"]]


@pytest.fixture(scope="module")
def backend():
    return HFBackend("game24-policy")


def test_judge_scores_every_step_from_the_models_next_token(backend):
    problem = task.problems(limit=1)[0]
    judge = JudgeVerifier(Direct(backend))
    scores = asyncio.run(judge.score(task, problem, SOLUTIONS))
    assert [len(s) for s in scores] == [2, 1]
    # by hand: P(Yes-ish) / (P(Yes-ish) + P(No-ish)) from the logits after the question about step 2
    logits = backend.next_token_logits([judge.prompt(problem, SOLUTIONS[0])])[0].double().softmax(-1)
    firsts = [backend.encode(w)[0] for w in (*YES, *NO)]
    shared = set(firsts[: len(YES)]) & set(firsts[len(YES) :])  # a character tokenizer's leading space
    assert shared
    yes = sum(logits[t] for t in set(firsts[: len(YES)]) - shared)
    no = sum(logits[t] for t in set(firsts[len(YES) :]) - shared)
    assert math.isclose(scores[0][1], float(yes / (yes + no)), rel_tol=1e-4)


def test_engine_batches_the_questions_of_concurrent_searches_and_charges_each(backend):
    problems = task.problems(limit=6)
    direct = JudgeVerifier(Direct(backend))
    alone = [asyncio.run(direct.score(task, p, SOLUTIONS)) for p in problems]
    engine = Engine(backend)
    judge = JudgeVerifier(engine)
    usages = [Usage() for _ in problems]

    async def all_at_once():
        return await asyncio.gather(*(MeteredVerifier(judge, u).score(task, p, SOLUTIONS)
                                      for p, u in zip(problems, usages)))

    together = asyncio.run(all_at_once())
    for a, b in zip(alone, together):
        assert all(math.isclose(x, y, abs_tol=1e-5) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    assert engine._questions.batches < len(problems)  # shared forward passes
    for problem, usage in zip(problems, usages):
        asked = [JudgeVerifier(engine).prompt(problem, s[: j + 1]) for s in SOLUTIONS for j in range(len(s))]
        assert usage.verifier_calls == 2 and usage.verifier_tokens == sum(len(backend.encode(q)) for q in asked)
        assert usage.verifier_seconds > 0  # its share of the forward passes that answered it


def test_outcome_judge_scores_solutions_not_prefixes(backend):
    problem = task.problems(limit=1)[0]
    judge = get_verifier("judge-outcome", Direct(backend))
    scores = asyncio.run(judge.score(task, problem, [*SOLUTIONS, []]))
    assert len(set(scores[0])) == 1 and len(scores[0]) == 2 and scores[2] == []
    with pytest.raises(PrefixError, match="whole solutions"):
        asyncio.run(judge.score_prefixes(task, problem, SOLUTIONS))
    with pytest.raises(ValueError, match="name one"):
        get_verifier("judge")


def test_step_level_search_runs_with_the_judge_as_its_prm(backend):
    problem = task.problems(limit=1)[0]
    lm = Engine(backend)
    cfg = SearchConfig(n=4, max_tokens=task.max_tokens, seed=0, knobs=BeamConfig(width=2))
    trace = asyncio.run(search(task, problem, lm, get_verifier("judge", lm), get_method("beam"), cfg))
    scored = [n for n in trace.nodes if n.score is not None]
    assert scored and all(0.0 <= n.score <= 1.0 for n in scored)
    assert trace.usage.verifier_calls > 0 and trace.usage.verifier_tokens > 0


def test_a_question_asked_again_is_answered_from_memory_without_a_forward_pass(backend):
    """A step-level search re-scores a state's earlier steps: the judge puts each question to the model once, and
    still charges every problem that asks it (the seconds once per problem, as recorded when computed)."""
    problem = task.problems(limit=1)[0]
    engine = Engine(backend)
    judge = JudgeVerifier(engine)
    first, again = Usage(), Usage()
    parent = asyncio.run(MeteredVerifier(judge, first).score_prefixes(task, problem, [SOLUTIONS[0][:1]]))
    passes = engine._questions.batches
    metered = MeteredVerifier(judge, again)
    child = asyncio.run(metered.score_prefixes(task, problem, [SOLUTIONS[0]]))
    assert child[0][0] == parent[0][0]
    asked = [judge.prompt(problem, SOLUTIONS[0][: j + 1]) for j in range(2)]
    assert again.verifier_tokens == sum(len(backend.encode(q)) for q in asked)  # both questions charged
    assert again.computed_verifier_tokens == len(backend.encode(asked[1]))  # step 2's question only computed
    assert again.verifier_seconds > first.verifier_seconds > 0  # step 1's recorded seconds and step 2's
    assert engine._questions.batches == passes + 1
    seconds = again.verifier_seconds
    asyncio.run(metered.score(task, problem, [SOLUTIONS[0]]))
    assert engine._questions.batches == passes + 1  # every question known: no forward pass
    assert again.verifier_seconds == seconds  # this problem was charged them already
    assert again.verifier_tokens == 2 * sum(len(backend.encode(q)) for q in asked)  # but judged them again
