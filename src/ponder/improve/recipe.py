"""`ponder improve RECIPE`: a loop's recipe, a small YAML file (shipped ones in `ponder/improve/recipes/`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ponder.errors import ConfigError
from ponder.improve.trees import DISTIL, STREAMING, TARGETS
from ponder.search import get_method, parse_options
from ponder.tasks import Backtracking, get_task, require
from ponder.tasks.base import Problem
from ponder.train.data import StreamDraw, check_walk
from ponder.train.loop import TrainConfig
from ponder.train.recipe import load_recipe_yaml

SELECT = ("first", "unsolved")  # how a round picks the problems it searches (`SearchPhase.select`)


@dataclass
class SearchPhase:
    """How each round searches the training problems with its policy and verifier."""

    method: str = "tot_bfs"
    n: int = 16  # the method's budget
    options: dict[str, Any] = field(default_factory=dict)  # the method's knobs (`ponder methods METHOD`)
    unguided: str = "self_consistency"  # the method while the loop has no verifier yet (a start without one)
    split: str | list[str] = "train"  # one split, or one per round (the last repeats): a curriculum
    problems: int = 200  # training problems searched each round
    fresh: bool = False  # each round the next `problems` of its split, never one an earlier round searched (nor a
    # weak start's seed set), as rStar-Math's rounds draw new problems; False: the split's first `problems` each round
    select: str = "first"  # first: those problems; unsolved: the round's policy answers every problem of the split
    # greedily first (not one an earlier round searched, with `fresh`) and `problems` of those it gets wrong, drawn
    # at random, are searched: the loop spends its search where the policy fails, not where it already succeeds
    temperature: float = 0.8
    min_p: float = 0.01
    max_tokens: int = 0  # 0: the task's default


@dataclass
class StartPhase:
    """A weak start: the policy trained from scratch on the solver's solutions of `seed_problems` training problems
    (those after the ones the loop searches) before round 1, as STaR's original model; of the problems it searches
    the loop knows the answers only."""

    seed_problems: int = 0  # 0: start from the recipe's `policy` as it is
    walk: str = "paths"  # how a seed problem's solutions are drawn, any SFT walk (`ponder.train.data.walks`):
    # `paths`, `moves`, `streams` (the solver's search written with its dead ends and back steps), ...
    detour: float = 0.0  # walk `streams`: the probability that a state tries a dead move first (`StreamDraw`)
    model: dict[str, int] = field(default_factory=dict)  # its ModelShape (default: the task's shipped policy's)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DistilPhase:
    """How the policy learns from what the outcome check kept, mixed with replay of earlier data."""

    target: str = "choices"  # choices: the right solutions the search found; visits: its visit distribution;
    # stream: the search itself written as one solution, dead ends and back steps included (Stream of Search), up to
    # its first right solution: a policy that searches in its own chain of thought (needs a method in STREAMING)
    max_positions: int = 0  # the context the policy trains on (0: its start's; a stream is longer than a solution)
    per_problem: int = 4  # right solutions kept per problem (choices)
    calculator: bool = False  # choices: keep only right solutions whose every written equation is true (what a
    # calculator checks in any arithmetic text; not the step oracle): an answer reached through a slip, or a dead end
    # written with one, teaches the slip
    visit_copies: int = 8  # examples per visited state (visits)
    replay: float = 0.5  # share of each batch drawn from earlier data: earlier rounds', a weak start's seed set,
    # `replay_from`'s
    replay_from: str = ""  # an SFT recipe whose data made the start policy, replayed ("" : earlier rounds only)
    replay_problems: int = 0  # problems of each of its splits replayed (0: as many as the recipe takes)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class ValuePhase:
    """How the verifier learns from the round's trees (its head is the start verifier's)."""

    targets: str = "mc"  # mc: the tree's Monte-Carlo share of right finished solutions; q: the search's Q-values
    head: dict[str, Any] = field(default_factory=dict)  # a new verifier's head, grown from the round's policy when
    # the loop starts without one (default: a step-tag PRM, Math-Shepherd's convention)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class MeasurePhase:
    """What each round is measured on: greedy, pass@samples and best-of-samples by the round's verifier, the step
    searches' top-1 at each budget, the verifier's step AUROC against the exact oracle on the round's policy, and
    proposal recall@recall_k."""

    split: str = "test"
    problems: int = 100
    samples: int = 16
    methods: list[str] = field(default_factory=lambda: ["mcts", "beam"])
    budgets: list[int] = field(default_factory=lambda: [4, 16])
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method, its knobs
    recall_k: int = 16
    max_tokens: int = 0  # what a whole solution may take (0: the task's default; a stream policy's are longer)


@dataclass
class ImproveRecipe:
    name: str
    task: str
    policy: str = ""  # the start policy: a shipped name or a checkpoint directory (or `start` trains one)
    verifier: str = ""  # the start verifier, a learned PRM (shipped name or directory); "" : none, round 1 grows one
    rounds: int = 2
    seed: int = 0
    start: StartPhase = field(default_factory=StartPhase)
    search: SearchPhase = field(default_factory=SearchPhase)
    distil: DistilPhase = field(default_factory=DistilPhase)
    value: ValuePhase = field(default_factory=ValuePhase)
    measure: MeasurePhase = field(default_factory=MeasurePhase)

    @classmethod
    def load(cls, name_or_path: str) -> ImproveRecipe:
        """A shipped recipe by name (`game24`) or a YAML file path; every field checked before anything runs."""
        name, raw = load_recipe_yaml(name_or_path, "ponder.improve")
        try:
            distil = dict(raw.pop("distil", {}))
            value = dict(raw.pop("value", {}))
            start = dict(raw.pop("start", {}))
            recipe = cls(name=name, search=SearchPhase(**raw.pop("search", {})),
                         start=StartPhase(**{**start, "train": TrainConfig(**start.get("train", {}))}),
                         distil=DistilPhase(**{**distil, "train": TrainConfig(**distil.get("train", {}))}),
                         value=ValuePhase(**{**value, "train": TrainConfig(**value.get("train", {}))}),
                         measure=MeasurePhase(**raw.pop("measure", {})), **raw)
        except TypeError as err:
            raise ConfigError(f"improve recipe {name_or_path}: {err}") from err
        recipe.check()
        return recipe

    def check(self) -> None:
        """A bad knob fails here, before any model loads or any folder is written."""
        task = get_task(self.task)
        for split in self.splits():
            task.problems(split, limit=0)
        task.problems(self.measure.split, limit=0)
        if self.measure.split in self.splits() or "test" in self.splits():
            raise ConfigError("the loop trains on what it searches: the measured split must stay out of search.split")
        if not self.policy and not self.start.seed_problems:
            raise ConfigError("give a start `policy`, or `start.seed_problems` to train one")
        if self.start.seed_problems and len(task.problems("train", limit=self.search.problems +
                                                           self.start.seed_problems)) < (self.search.problems +
                                                                                         self.start.seed_problems):
            raise ConfigError("start.seed_problems and search.problems together take more than the train split holds")
        check_walk(self.start.walk)
        StreamDraw(self.start.detour)
        if self.rounds < 0 or self.search.problems < 1 or self.measure.problems < 1:
            raise ConfigError("rounds must be >= 0, search.problems and measure.problems >= 1")
        if self.distil.target not in DISTIL:
            raise ConfigError(f"unknown distil target {self.distil.target!r}; choose from {', '.join(DISTIL)}")
        if self.distil.target == "stream":
            require(task, Backtracking, "distil.target stream")
            if self.search.method not in STREAMING:
                raise ConfigError(f"distil.target stream writes the search's order of states, which only "
                                  f"{', '.join(STREAMING)} keeps; got search.method {self.search.method!r}")
        if self.distil.calculator and self.distil.target != "choices":
            raise ConfigError("distil.calculator checks the kept solutions' equations: it needs distil.target choices")
        if self.value.targets not in TARGETS:
            raise ConfigError(f"unknown value targets {self.value.targets!r}; choose from {', '.join(TARGETS)}")
        if not 0 <= self.distil.replay < 1:
            raise ConfigError(f"distil.replay is a share in [0, 1), got {self.distil.replay}")
        if self.search.select not in SELECT:
            raise ConfigError(f"unknown search.select {self.search.select!r}; choose from {', '.join(SELECT)}")
        if self.search.fresh and self.search.select == "first":
            for n in range(1, self.rounds + 1):
                self.searched(n)
        get_method(self.search.method)
        get_method(self.search.unguided)
        parse_options(self.search.method, self.search.options, self.search.n)
        for method in self.measure.methods:
            for budget in self.measure.budgets:
                parse_options(method, self.measure.options.get(method, {}), budget)

    def offset(self, n: int) -> int:
        """Where round n's problems start in its split: after those earlier rounds searched there (and the weak
        start's seed set, which follows the first round's problems) with `fresh`; else 0."""
        if not self.search.fresh:
            return 0
        earlier = sum(self.split(k) == self.split(n) for k in range(1, n))
        seeds = self.start.seed_problems if earlier and self.split(n) == "train" else 0
        return earlier * self.search.problems + seeds

    def searched(self, n: int) -> list[Problem]:
        """The problems round n searches; a ConfigError when its split has too few left."""
        split, offset, count = self.split(n), self.offset(n), self.search.problems
        problems = get_task(self.task).problems(split, limit=offset + count)[offset:]
        if len(problems) < count:
            raise ConfigError(f"round {n} searches problems {offset + 1}-{offset + count} of {self.task} {split!r}, "
                              f"which holds {offset + len(problems)}: fewer rounds or problems, or search.fresh off")
        return problems

    def splits(self) -> list[str]:
        return [self.search.split] if isinstance(self.search.split, str) else list(self.search.split)

    def split(self, n: int) -> str:
        """The split round n (from 1) searches."""
        splits = self.splits()
        return splits[min(n, len(splits)) - 1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
