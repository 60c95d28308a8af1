"""rStar: self-play mutual reasoning (Qi et al., 2024, "Mutual Reasoning Makes Smaller LLMs Stronger
Problem-Solvers"). A generator MCTS over five human-like actions, then a discriminator that keeps the traces a
second model agrees with, and a vote among them.

The actions (the task writes their formats, `RStarActions.actions`; the policy is asked for one by the opening of its
line):
- A1 `one_step`: one next step (`width` samples, the same step drawn twice kept once).
- A2 `remaining_steps`: all the remaining steps at once (`votes` completions; the child is one that reaches
  the majority answer).
- A3 `subquestion`: the next sub-question and its answer (`subquestions` sampled sub-questions, repeats kept
  once, each answered `votes` times; the child keeps an answer with the majority result). Samples are drawn
  independently, as in the paper: drawn without replacement, a policy sure of the one right sub-question is made to
  write misspelt copies of it.
- A4 `reanswer`: the last sub-question answered again (`votes` new answers; a child only when their majority
  differs from the answer it replaces). The paper re-answers with a chain-of-thought prompt; where a task's
  sub-answer is one step (arith) the new answers are drawn in the same format.
- A5 `rephrase`: the question rewritten as its conditions (one, from the root only).
A5 only at the root, A4 only right after A3, and at the depth limit (`depth`) only A2, which ends a path; a path
also ends at a step that gives the answer.

`iterate` = select -> expand -> simulate -> back-propagate, with UCT (Kocsis and Szepesvari, 2006): from the root,
the child with the largest Q + c * sqrt(ln N(parent) / N(child)) (c: `exploration`; an unvisited child first), down
to a node not expanded yet; expand it (every action its place allows); simulate: a random child at each level,
expanding on the way, down to a finished solution (the rollout's nodes stay in the tree, as in rStar);
back-propagate that solution's reward: the confidence of its answer, the share of the `votes` direct answers (A2)
from its last state that reach the same answer (the paper's self-consistency reward).

Discriminator: every distinct finished solution in the tree goes to the run's verifier: by default
`MutualConsistency` with the policy itself (`--verifier consistency:MODEL` asks a second model, as the paper does);
any verifier works, a solution being kept when it scores `keep` (0.5) or more. The final answer is chosen among the
kept ones by `select` (`majority` by default; `best` takes the kept solution with the highest reward, the paper's
own choice), among all when none is kept. The discriminator only filters, so a verifier that knows nothing about
the problem cannot make rStar worse than its own vote: scores all alike keep or drop every solution alike, and the
answer is chosen among all. The guard (`ponder.search.guard`) says so where none of its scores reaches
`guard_floor`; `guard_spread` is off by default here (all solutions confirmed is a verdict, not noise).

Knobs: `RStarConfig` (the budget `cfg.n` is the rollouts).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from ponder.lm.base import Completion, LanguageModel
from ponder.search.base import (
    SearchConfig,
    knob,
    method_knobs,
    propose_steps,
    register,
    request_seed,
    sample_solutions,
)
from ponder.search.guard import Guard, GuardConfig
from ponder.search.select import SELECTIONS, Finished, answer
from ponder.tasks import RStarActions, require
from ponder.tasks.base import Actions, Problem, Task
from ponder.trace import Node, Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier
from ponder.verifiers.consistency import MutualConsistency

A1, A2, A3, A4, A5 = "one_step", "remaining_steps", "subquestion", "reanswer", "rephrase"


@dataclass(frozen=True)
class RStarConfig(GuardConfig):
    """rStar's knobs (the guard's among them, on the discriminator's scores)."""

    budget: ClassVar[str] = "rollouts of the generator's MCTS, unless iterations is set"
    iterations: int | None = knob(None, "rollouts of the generator's MCTS, num_rollouts in rStar (none: the budget "
                                        "n)", low=1)
    width: int = knob(3, "next steps a state proposes with A1, num_a1_steps in rStar", low=1)
    subquestions: int = knob(3, "sub-questions a state proposes with A3, num_subquestions in rStar", low=1)
    votes: int = knob(4, "answers sampled for a vote (A2's completions, A3/A4's sub-answers), num_votes in rStar",
                      low=1)
    exploration: float = knob(2.0, "exploration constant, c in UCT (rStar's exploration weight)", low=0.0)
    depth: int | None = knob(None, "the most actions a path takes, T (none: the task's max_steps)", low=1)
    keep: float = knob(0.5, "the discriminator's score at which a solution is kept")
    select: str = knob("majority", "how the answer is chosen among the kept solutions", choices=SELECTIONS)
    guard_spread: float = knob(0.0, "uninformative when the discriminator's scores (two or more) all lie within "
                                    "this of each other (0: never)", low=0.0)


class RStar:
    def __init__(self, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig) -> None:
        task = require(task, RStarActions, "the rstar method (it asks the policy for its five actions)")
        knobs = method_knobs(cfg, RStarConfig)
        self.task, self.problem, self.lm, self.cfg = task, problem, lm, cfg
        self.actions: Actions = task.actions
        self.discriminator = verifier or MutualConsistency(lm)
        self.iterations, self.width, self.subquestions = knobs.iterations or cfg.n, knobs.width, knobs.subquestions
        self.votes, self.exploration = knobs.votes, knobs.exploration
        self.limit, self.keep, self.how = knobs.depth or task.max_steps, knobs.keep, knobs.select
        self.trace = Trace(problem.id, "rstar", extra={"discriminator": self.discriminator.name,
                                                       "exploration": self.exploration, "votes": self.votes})
        self.steps: dict[int, list[str]] = {0: []}
        self.depth: dict[int, int] = {0: 0}
        self.children: dict[int, list[int]] = {}
        self.direct_answers: dict[int, list[list[str]]] = {}  # a state's completions to the end (A2)
        self.finished: list[Finished] = []
        self.rng = random.Random(request_seed(cfg, problem, "rstar"))
        self.guard = Guard(knobs, self.trace, self.discriminator.name,
                           fallback=f"choosing among every solution by {self.how}")

    # -- the four phases ---------------------------------------------------------------------------------------

    def select(self) -> list[Node]:
        """The path from the root down the UCT children to a node not expanded yet (or a finished solution)."""
        path = [self.trace.root]
        while self.children.get(path[-1].id):
            path.append(self.best_child(path[-1]))
        return path

    async def expand(self, node: Node) -> None:
        """The node's children: every action its place allows, at once."""
        if node.terminal or node.id in self.children:
            return
        await self.direct(node)  # A2's completions, which the rewards of A1's answers read too
        made = await asyncio.gather(*(getattr(self, action)(node) for action in self.allowed(node)))
        self.children[node.id] = [child.id for children in made for child in children]

    async def simulate(self, node: Node) -> list[Node]:
        """A random child at each level, expanding on the way, down to a finished solution (or a dead end)."""
        path = []
        while not node.terminal:
            await self.expand(node)
            if not self.children[node.id]:
                break
            node = self.trace.nodes[self.rng.choice(self.children[node.id])]
            path.append(node)
        return path

    @staticmethod
    def back_propagate(path: list[Node], reward: float) -> None:
        for node in path:
            node.visits += 1
            node.value += (reward - node.value) / node.visits  # the running mean: Q

    async def iterate(self) -> None:
        path = self.select()
        await self.expand(path[-1])
        path += await self.simulate(path[-1])
        leaf = path[-1]
        self.back_propagate(path, (leaf.score or 0.0) if leaf.terminal else 0.0)

    def best_child(self, node: Node) -> Node:
        children = [self.trace.nodes[c] for c in self.children[node.id]]
        for child in children:
            if not child.visits:
                return child
        return max(children, key=lambda ch: ch.value + self.exploration * math.sqrt(math.log(node.visits) / ch.visits))

    # -- the five actions ---------------------------------------------------------------------------------------

    def allowed(self, node: Node) -> list[str]:
        if self.depth[node.id] + 1 >= self.limit:
            return [A2]
        if node.id == 0:
            return [A1, A2, A3, A5]
        return [A1, A2, A3, A4] if node.extra.get("action") == A3 else [A1, A2, A3]

    async def one_step(self, node: Node) -> list[Node]:
        steps = self.steps[node.id]
        drawn = await self._propose(node, steps, self.width, "")
        cues = (self.actions.rephrase, self.actions.subquestion, self.actions.subanswer)
        texts = [t for t in dict.fromkeys(c.text.strip() for c in drawn) if t and not t.startswith(cues)]
        children = []
        for text in texts:
            path = [*steps, text]
            final = self.task.is_final(path)
            confidence = await self.confidence(node, path) if final else None
            children.append(self.add(node, A1, [text], path, confidence, final))
        return children

    async def remaining_steps(self, node: Node) -> list[Node]:
        rests = await self.direct(node)
        won = majority([self.key([*self.steps[node.id], *rest]) for rest in rests])
        if won is None:
            return []
        rest = rests[won[0]]
        return [self.add(node, A2, rest, [*self.steps[node.id], *rest], won[1], True)]

    async def subquestion(self, node: Node) -> list[Node]:
        steps, cue = self.steps[node.id], self.actions.subquestion
        drawn = await self._propose(node, steps, self.subquestions, cue)
        questions = list(dict.fromkeys(f"{cue} {c.text.strip()}" for c in drawn if c.text.strip()))
        answers = await asyncio.gather(*(self._subanswer(node, [*steps, q]) for q in questions))
        return [self.add(node, A3, [q, a], [*steps, q, a], share, False)
                for q, (a, share) in zip(questions, answers) if a]

    async def reanswer(self, node: Node) -> list[Node]:
        steps = self.steps[node.id]
        text, share = await self._subanswer(node, steps[:-1], again=True)
        if not text or self.task.step_result(text) == self.task.step_result(steps[-1]):
            return []
        return [self.add(node, A4, [text], [*steps[:-1], text], share, False)]

    async def rephrase(self, node: Node) -> list[Node]:
        cue = self.actions.rephrase
        [drawn] = await self._propose(node, [], 1, cue)
        text = f"{cue} {drawn.text.strip()}"
        return [self.add(node, A5, [text], [text], None, False)] if drawn.text.strip() else []

    # -- helpers ------------------------------------------------------------------------------------------------

    async def _propose(self, node: Node, steps: list[str], n: int, cue: str, tag: str = "") -> list[Completion]:
        return await propose_steps(self.task, self.problem, self.lm, self.cfg, steps, n, self.cfg.temperature,
                                   ("rstar", node.id, cue, tag), cue=cue)

    async def _subanswer(self, node: Node, steps: list[str], again: bool = False) -> tuple[str, float]:
        """An answer to the open sub-question after `steps` whose result the majority of `votes` answers
        reach, and that majority's share ("" when none computes anything)."""
        cue = self.actions.subanswer
        drawn = await self._propose(node, steps, self.votes, cue, tag="again" if again else "")
        texts = [f"{cue} {c.text.strip()}" for c in drawn]
        won = majority([self.task.step_result(t) for t in texts])
        return ("", 0.0) if won is None else (texts[won[0]], won[1])

    async def direct(self, node: Node) -> list[list[str]]:
        """`votes` completions of the node's state to the end (A2), drawn once per state."""
        if node.id not in self.direct_answers:
            self.direct_answers[node.id] = await sample_solutions(
                self.task, self.problem, self.lm, self.cfg, self.votes, self.cfg.temperature,
                ("rstar", "direct", node.id), prefix=self.steps[node.id])
        return self.direct_answers[node.id]

    async def confidence(self, node: Node, path: list[str]) -> float:
        """The reward of a solution that ends after `node`'s state: the share of that state's direct answers that
        reach its answer."""
        mine = self.key(path)
        theirs = [self.key([*self.steps[node.id], *rest]) for rest in await self.direct(node)]
        return theirs.count(mine) / len(theirs) if mine is not None and theirs else 0.0

    def key(self, steps: list[str]) -> str | None:
        return self.task.answer_key(self.problem, self.task.extract_answer(self.problem, steps))

    def add(self, parent: Node, action: str, lines: list[str], path: list[str], score: float | None,
            final: bool) -> Node:
        child = self.trace.add(parent.id, self.task.join_steps(lines).rstrip(self.task.step_end), score=score,
                               terminal=final, extra={"action": action})
        self.steps[child.id], self.depth[child.id] = path, self.depth[parent.id] + 1
        if final:
            child.extra["answer"] = self.task.extract_answer(self.problem, path)
            self.finished.append(Finished(path, child.id, score))
        return child

    # -- the discriminator and the answer -----------------------------------------------------------------------

    async def run(self) -> Trace:
        for _ in range(self.iterations):
            await self.iterate()
        texts = [self.task.join_steps(f.steps) for f in self.finished]
        by_text = dict(zip(texts, self.finished))  # the same solution reached twice is one candidate
        unique = list(by_text.values())
        scores = await self.discriminator.score(self.task, self.problem, [f.steps for f in unique])
        agreed = {f.node: bool(s) and aggregate(s, "last") >= self.keep for f, s in zip(unique, scores)}
        for f, text in zip(self.finished, texts):
            self.trace.nodes[f.node].extra["kept"] = agreed[by_text[text].node]
        kept = [f for f in unique if agreed[f.node]]
        if self.guard.observe([aggregate(s, "last") for s in scores if s]):
            kept = []  # (by default none reaches guard_floor < keep, so none was kept anyway)
        self.trace.extra.update({"iterations": self.iterations, "solutions": len(unique), "kept": len(kept)})
        return answer(self.trace, self.task, self.problem, kept or unique, self.how)


def majority(keys: list[str | None]) -> tuple[int, float] | None:
    """The first item whose key most items share, and that share of all items (None when no item has a key)."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    top, count = counts.most_common(1)[0]
    return keys.index(top), count / len(keys)


@register("rstar", config=RStarConfig, policies={"arith": "arith-rstar-policy"}, requires=(RStarActions,))
async def rstar(task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                cfg: SearchConfig) -> Trace:
    return await RStar(task, problem, lm, verifier, cfg).run()
