"""rStar's mutual-consistency discriminator (Qi et al., 2024, "Mutual Reasoning Makes Smaller LLMs Stronger
Problem-Solvers", §3.3) as a verifier: a solution is cut after a random share of its steps, a second model
completes it from there, and the solution scores 1 when the completion reaches the same answer (the two models
agree), else 0. As in peer review, a trace that another model, given part of it as a hint, finishes the same way is
more likely right.

The cut is drawn from [`mask_left`, `mask_right`] of the solution's steps (at least one step kept, at least one
left to complete; a one-line solution is completed from the question), from a hash of the solution, so a score is
the same in every run. The completion is greedy. Any model serves (`consistency:MODEL`); `consistency` alone uses
the policy. Like an ORM it judges whole solutions, not prefixes. Its model calls are charged to the problem as
verifier cost (never as the policy's): the prompts as verifier tokens, the completions as verifier generated
tokens, their compute and HTTP seconds as the verifier's.
"""

from __future__ import annotations

import hashlib
import random

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel, Request, SamplingParams
from ponder.tasks.base import Problem, Task
from ponder.trace import METER
from ponder.verifiers.base import PrefixError, Verifier


class MutualConsistency(Verifier):
    name = "consistency"

    def __init__(self, lm: LanguageModel, mask_left: float = 0.2, mask_right: float = 0.8) -> None:
        if not 0 <= mask_left <= mask_right <= 1:
            raise ConfigError(f"consistency needs 0 <= mask_left <= mask_right <= 1; got {mask_left}, {mask_right}")
        self.lm, self.mask_left, self.mask_right = lm, mask_left, mask_right

    def cut(self, task: Task, steps: list[str]) -> int:
        """How many of the solution's steps the second model is shown."""
        if len(steps) < 2:
            return 0
        seed = int.from_bytes(hashlib.blake2b(task.join_steps(steps).encode(), digest_size=8).digest(), "big")
        share = random.Random(seed).uniform(self.mask_left, self.mask_right)
        return min(max(round(share * len(steps)), 1), len(steps) - 1)

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        shown = [steps[: self.cut(task, steps)] for steps in solutions]
        params = SamplingParams(temperature=0.0, max_tokens=task.max_tokens, seed=0)
        completions = await self.lm.generate([Request(task.prompt(problem) + task.join_steps(s), params)
                                              for s in shown])
        meter = METER.get()
        if meter is not None:
            meter.judged(tokens=sum(c.prompt_tokens for c in completions),
                         computed=sum(c.prompt_tokens - c.cached_tokens for c in completions),
                         seconds=sum(c.seconds for c in completions),
                         http_seconds=sum(c.wall_seconds for c in completions),
                         generated=sum(c.generated_tokens for c in completions))
        out = []
        for steps, given, completion in zip(solutions, shown, completions):
            finished = [*given, *task.split_steps(completion.text)]
            theirs = task.answer_key(problem, task.extract_answer(problem, finished))
            ours = task.answer_key(problem, task.extract_answer(problem, steps))
            out.append([float(ours is not None and theirs == ours)] * len(steps))
        return out

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        raise PrefixError("the mutual-consistency discriminator compares final answers: it cannot judge a prefix")
