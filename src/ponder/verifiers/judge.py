"""A judge: any chat model as a verifier (a generative verifier, as in "LLM-as-a-judge", Zheng et al., 2023, and
the generative PRMs of Zhang et al., 2024, "Generative Verifiers").

The model is shown the problem and a solution and asked whether a step (or the whole solution) is correct; the
score is P(Yes) / (P(Yes) + P(No)) at the first token of its reply, read with `LanguageModel.next_token` through
the engine (the questions of every running search share forward passes). Spellings that differ only in case or a
leading space count together, each first token once; a token that starts both a Yes and a No spelling (a lone
space, for a character-level tokenizer) tells nothing and is left out.

- `judge` (`kind="process"`): one question per step, "is the last step correct?", with the steps before it as
  context: per-step scores, so it serves as a PRM and scores prefixes.
- `judge-outcome` (`kind="outcome"`): one question per solution, "is the final answer correct?", its score given
  to every step; like an ORM it does not judge prefixes.

A step-level search asks about a state's every step each time it scores the state, and all but the last were asked
when its parent was scored: the judge remembers its answers (the `REMEMBER` latest, by a digest of the question), so
a question is put to the model once. The memory saves compute, not charges: every question asked is charged its
tokens as verifier tokens (only the computed ones as computed verifier tokens), and the seconds recorded when it was
computed, once per problem, so a problem costs what it would alone, whichever problems asked the question before.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ponder.errors import ConfigError
from ponder.lm.base import LanguageModel, NextToken
from ponder.tasks.base import Problem, Task
from ponder.trace import METER
from ponder.verifiers.base import PrefixError, Verifier

YES = ("Yes", " Yes", "yes", " yes", "YES")
NO = ("No", " No", "no", " no", "NO")
KINDS = ("process", "outcome")
REMEMBER = 1 << 20  # answers kept (a digest and four numbers each)


class Answer(NamedTuple):
    """A question's answer as remembered: the Yes share and what computing it cost."""

    yes: float
    tokens: int
    seconds: float
    http_seconds: float


class JudgeVerifier(Verifier):
    def __init__(self, lm: LanguageModel, kind: str = "process") -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown judge kind {kind!r}; choose from {', '.join(KINDS)}")
        self.lm, self.kind = lm, kind
        self.name = "judge" if kind == "process" else "judge-outcome"
        self._known: dict[bytes, Answer] = {}  # by question digest, oldest first

    def question(self, problem: Problem, steps: list[str]) -> str:
        """What the judge is asked about the last of `steps` (process) or about the solution (outcome)."""
        numbered = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
        if self.kind == "outcome":
            ask = "Is this solution correct, with the right final answer? Answer Yes or No."
        else:
            ask = f"Is step {len(steps)} correct? Answer Yes or No."
        return f"Problem: {problem.question}\n\nSolution:\n{numbered}\n\n{ask}"

    def prompt(self, problem: Problem, steps: list[str]) -> str:
        message = self.question(problem, steps)
        rendered = self.lm.chat_prompt([{"role": "user", "content": message}])
        return rendered if rendered is not None else f"{message}\nAnswer:"

    async def score(self, task: Task, problem: Problem, solutions: list[list[str]]) -> list[list[float]]:
        if self.kind == "outcome":
            probs = iter(await self._ask([self.prompt(problem, steps) for steps in solutions if steps]))
            return [[next(probs)] * len(steps) if steps else [] for steps in solutions]
        asked = [(i, self.prompt(problem, steps[: j + 1])) for i, steps in enumerate(solutions)
                 for j in range(len(steps))]
        probs = await self._ask([p for _, p in asked])
        out: list[list[float]] = [[] for _ in solutions]
        for (i, _), p in zip(asked, probs):
            out[i].append(p)
        return out

    async def score_prefixes(self, task: Task, problem: Problem, prefixes: list[list[str]]) -> list[list[float]]:
        if self.kind == "outcome":
            raise PrefixError("the outcome judge judges whole solutions: it cannot score a partial solution")
        return await self.score(task, problem, prefixes)

    async def _ask(self, prompts: list[str]) -> list[float]:
        keys = [hashlib.blake2b(p.encode(), digest_size=16).digest() for p in prompts]
        known = {k: self._known[k] for k in keys if k in self._known}  # (other calls may evict while this one waits)
        new = list(dict.fromkeys((k, p) for k, p in zip(keys, prompts) if k not in known))
        computed = 0
        if new:
            answers = await self.lm.next_token([p for _, p in new], [*YES, *NO])
            fresh = {k: Answer(_yes_share(a), a.prompt_tokens, a.seconds, a.wall_seconds)
                     for (k, _), a in zip(new, answers)}
            self._known.update(fresh)
            known.update(fresh)
            computed = sum(a.prompt_tokens for a in answers)
        meter = METER.get()
        if meter is not None:
            charged = [known[k] for k in dict.fromkeys(keys) if meter.first(k)]
            meter.judged(tokens=sum(known[k].tokens for k in keys), computed=computed,
                         seconds=sum(a.seconds for a in charged), http_seconds=sum(a.http_seconds for a in charged))
        while len(self._known) > REMEMBER:
            del self._known[next(iter(self._known))]
        return [known[k].yes for k in keys]


def _yes_share(answer: NextToken) -> float:
    yes = dict(zip(answer.tokens[: len(YES)], answer.probs[: len(YES)]))
    no = dict(zip(answer.tokens[len(YES) :], answer.probs[len(YES) :]))
    both = yes.keys() & no.keys()
    if both == yes.keys() or both == no.keys():
        raise ConfigError("the model's tokenizer starts every Yes spelling as it starts a No one: it cannot judge")
    p_yes = sum(p for t, p in yes.items() if t not in both)
    p_no = sum(p for t, p in no.items() if t not in both)
    return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5
