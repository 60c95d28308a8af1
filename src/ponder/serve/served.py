"""A serving recipe made ready to serve (`Served`: its task and method checked, its models loaded on first use and
shared), and the question in a request's text (`question_of`)."""

from __future__ import annotations

from typing import Any

from ponder.lm.base import LanguageModel
from ponder.lm.load import shared_model
from ponder.search import NEEDS_VERIFIER, SearchConfig, check_search, get_method, pick_policy
from ponder.serve.recipes import Recipe
from ponder.tasks import get_task
from ponder.tasks.base import Problem
from ponder.verifiers import Verifier, shared_verifier

_MARK = "\x00question\x00"  # stands for the question when a task's prompt is taken apart (`question_of`)


class Served:
    """A recipe made ready to serve: its task and method checked, its policy and verifier loaded on first use and
    shared with every other user of the same names. `lm`, `verifier`: ones to use instead (a model of your own).
    `device` (`cpu`, `cuda`, `cuda:1`): where the transformers backend and a learned verifier run."""

    def __init__(self, recipe: Recipe, lm: LanguageModel | None = None, verifier: Verifier | None = None,
                 device: str = "cpu") -> None:
        self.recipe, self.device = recipe, device
        self.task = get_task(recipe.task, **({"style": recipe.style} if recipe.style else {}))
        self.method = recipe.method or self.task.default_method
        self.check(self.method, recipe.budget, recipe.knobs)
        self._lm, self._verifier = lm, verifier
        self.loaded: dict[str, LanguageModel] = {}  # the policies loaded so far, by name

    @property
    def name(self) -> str:
        return self.recipe.name

    def check(self, method: str, budget: int, knobs: dict[str, Any]) -> SearchConfig:
        """The search config of `method` at `budget` with `knobs` (seed 0), or a ConfigError: what a request
        may set, checked before any search starts."""
        r = self.recipe
        get_method(method)
        checked = check_search(self.task, method, knobs, budget, r.aggregate)
        return SearchConfig(n=budget, temperature=r.temperature, min_p=r.min_p, aggregate=r.aggregate,
                            max_tokens=r.max_tokens or self.task.max_tokens, knobs=checked)

    def policy(self, method: str) -> LanguageModel:
        """The policy `method` runs on (loaded on first use)."""
        if self._lm is not None:
            lm = self._lm
        else:
            lm = shared_model(pick_policy(self.task.name, [method], self.recipe.model, self.task.default_model),
                              device=self.device)
        if not self.loaded:
            self.task.template = lm.chat_prompt
        self.loaded[lm.name] = lm
        return lm

    def judge(self, method: str, lm: LanguageModel) -> Verifier | None:
        if method not in NEEDS_VERIFIER:
            return None
        return self._verifier or shared_verifier(self.recipe.verifier or self.task.default_verifier, lm, self.device)

    def load(self) -> None:
        """Load the recipe's own policy and verifier now."""
        self.judge(self.method, self.policy(self.method))


def question_of(served: Served, text: str) -> str:
    """The question in `text`: the text itself, or, when `text` is the task's own prompt for a question (what a
    client running a search over this server sends), that question."""
    head, _, tail = served.task.prompt(Problem("", _MARK)).partition(_MARK)
    if (head or tail) and len(text) >= len(head) + len(tail) and text.startswith(head) and text.endswith(tail):
        return text[len(head):len(text) - len(tail)].strip()
    return text.strip()
