"""What the step-level searches share (Tree of Thoughts, beam search, DVTS): the trace, and `expand`, which makes
states propose next steps and has the verifier judge every new state.

A state is a trace node and its steps. A proposal that gives an answer (or an empty proposal: the model ended the
solution) makes a finished solution, judged whole; the other new states are judged as prefixes. With `lookahead`
k > 0 (Snell et al., 2024, §5), a new state is first rolled out k more steps greedily and judged by that rollout's
prefix instead (the rollout is not added to the tree). The same step proposed twice from one state is one child.
`distinct` draws a state's proposals without replacement (stochastic beam search in the backend), so they do not
repeat the steps the policy is sure of; ToT does by default, beam search and DVTS sample independently as their
papers do unless asked. Where the verifier's scores on the problem carry no information (`ponder.search.guard`),
states rank by their path's probability under the policy instead.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel
from ponder.search.base import SearchConfig, knob, propose_steps, sample_steps
from ponder.search.guard import Guard, GuardConfig
from ponder.search.select import SELECTIONS, Finished, answer
from ponder.tasks.base import Problem, Task
from ponder.trace import Trace
from ponder.verifiers.aggregate import aggregate
from ponder.verifiers.base import Verifier

Scored = tuple[float, int, list[str]]  # (score, trace node, steps) of a state that goes on


@dataclass(frozen=True)
class StepConfig(GuardConfig):
    """The knobs every step-level search has (the guard's against an uninformative verifier among them)."""

    depth: int | None = knob(None, "the most steps a solution takes: T in ToT, num_iterations in search-and-learn "
                                   "(none: the task's max_steps)", low=1)
    lookahead: int = knob(0, "greedy steps rolled out before a new state is judged, k in Snell et al. (2024) §5",
                          low=0)
    select: str = knob("best", "how the answer is chosen among finished solutions", choices=SELECTIONS)
    distinct: bool = knob(False, "a state's proposals drawn without replacement (false: sampled independently)")


class StepSearch:
    def __init__(self, task: Task, problem: Problem, lm: LanguageModel, verifier: Verifier | None,
                 cfg: SearchConfig, knobs: StepConfig) -> None:
        name = knobs.method
        if verifier is None:
            raise ConfigError(f"{name} needs a verifier to judge its states (e.g. --verifier game24-prm)")
        self.task, self.problem, self.lm, self.verifier, self.cfg = task, problem, lm, verifier, cfg
        self.limit = knobs.depth or task.max_steps
        self.lookahead, self.how, self.distinct = knobs.lookahead, knobs.select, knobs.distinct
        self.trace = Trace(problem.id, name, extra={"verifier": verifier.name, "depth": self.limit})
        self.finished: list[Finished] = []
        self.guard = Guard(knobs, self.trace, verifier.name)
        self.logp: dict[int, float] = {0: 0.0}  # per node, its path's log-probability under the policy

    def policy_score(self, node: int) -> float:
        """The probability of `node`'s path under the policy: how states rank once the verifier is uninformative."""
        return math.exp(self.logp[node])

    async def expand(self, states: list[tuple[int, list[str]]], n: int | list[int], tag: tuple[object, ...],
                     ) -> tuple[list[Scored], list[Finished]]:
        """Each state proposes `n` steps (or n[i] for state i); every new state is judged and added to the trace.
        Returns the states that go on, best first, and the new finished solutions (also kept in `finished`)."""
        task, problem = self.task, self.problem
        counts = n if isinstance(n, list) else [n] * len(states)
        drawn = await asyncio.gather(*(propose_steps(task, problem, self.lm, self.cfg, steps, k, self.cfg.temperature,
                                                     (*tag, node), self.distinct)
                                       for (node, steps), k in zip(states, counts)))
        children: list[tuple[int, list[str], bool, float]] = []  # (parent, steps, whether the model ended, step logp)
        for (node, steps), proposals in zip(states, drawn):
            logps: dict[str, float] = {}
            for c in proposals:
                logps.setdefault(c.text.strip(), c.logprob or 0.0)
            for step, logp in logps.items():
                if step:
                    children.append((node, [*steps, step], False, logp))
                elif steps:  # an empty proposal: the model ends the solution here
                    children.append((node, steps, True, logp))
        done = [ended or task.is_final(steps) for _, steps, ended, _ in children]
        scores = await self._judge([c[1] for c in children], done, tag)
        fallback = self.guard.observe(scores)
        going, finished = [], []
        for (parent, steps, ended, logp), is_done, score in zip(children, done, scores):
            node = self.trace.nodes[parent] if ended else self.trace.add(parent, steps[-1], score=score)
            if not ended:
                node.extra["logprob"] = logp
                self.logp[node.id] = self.logp[parent] + logp
            rank = self.policy_score(node.id) if fallback else score
            if is_done:
                node.terminal = True
                node.extra["answer"] = task.extract_answer(problem, steps)
                finished.append(Finished(steps, node.id, rank))
            else:
                going.append((rank, node.id, steps))
        self.finished += finished
        return sorted(going, key=lambda x: -x[0]), finished

    async def _judge(self, states: list[list[str]], done: list[bool], tag: tuple[object, ...]) -> list[float]:
        task, problem, how = self.task, self.problem, self.cfg.aggregate
        partial = [s for s, d in zip(states, done) if not d]
        if self.lookahead:
            partial = list(await asyncio.gather(*(self._roll(s, (*tag, i)) for i, s in enumerate(partial))))
        whole = iter(await self.verifier.score(task, problem, [s for s, d in zip(states, done) if d]))
        ahead = iter(await self.verifier.score_prefixes(task, problem, partial))
        return [aggregate(next(whole if d else ahead), how) for d in done]

    async def _roll(self, steps: list[str], tag: tuple[object, ...]) -> list[str]:
        """`steps` extended by up to `lookahead` greedy steps (fewer if the solution ends)."""
        for j in range(self.lookahead):
            if self.task.is_final(steps):
                break
            [step] = await sample_steps(self.task, self.problem, self.lm, self.cfg, steps, 1, 0.0, ("ahead", *tag, j))
            if not step:
                break
            steps = [*steps, step]
        return steps

    def answer(self) -> Trace:
        """The chosen answer among the finished solutions: by the method's `select`, or, once the verifier is
        uninformative (`Guard`), by majority vote with ties going to the policy's likelier solution."""
        finished = self.finished
        if self.guard.fired:
            finished = [Finished(f.steps, f.node, self.policy_score(f.node)) for f in finished]
        return answer(self.trace, self.task, self.problem, finished, self.guard.select(self.how))
