"""The one trace format every search method returns.

A trace is a tree of steps. The root holds the prompt; every other node is one step (a line of reasoning)
with its parent, the verifier's score, MCTS-style visit counts and values. `answer` is what the method
finally chose; `usage` is what it cost. Evaluation, the server and the tree viewer read only this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Usage:
    """What one problem's search cost, as the engines measured it; methods are compared at equal compute, not at
    equal `n`. The contract (docs/METHODOLOGY.md, "Accounting contract"):

    - Tokens count what the problem asked for, whether it was computed or read from a cache or a verifier's memory:
      the same search costs the same tokens alone or beside others. The `computed_*` fields say how many of them
      the model really computed; they depend on what ran before (a prefix cache, a judge's memory).
    - `seconds` and `verifier_seconds` are compute: the problem's share of the batched forward passes that served
      it. A verifier that answers a question from its memory charges the seconds recorded when the question was
      computed, once per problem, so a problem costs what it would alone.
    - `http_seconds` and `verifier_http_seconds` are the wall time of the HTTP calls made for the problem, summed
      (the server's queue included; calls in flight together each count their whole time). A server does not
      report its compute, so over HTTP the compute fields stay 0; wall time is never added to them.
    """

    # the policy
    prompt_tokens: int = 0  # prompt tokens of every completion asked for (a request for n completions: n prompts)
    computed_prompt_tokens: int = 0  # of those, the ones the model computed (the rest came from a prefix cache)
    generated_tokens: int = 0  # tokens the policy generated
    model_calls: int = 0  # requests to the policy (one request may ask for n completions)
    seconds: float = 0.0  # the policy's compute seconds charged to this problem
    http_seconds: float = 0.0  # the wall seconds of the policy's HTTP calls
    # the verifier
    verifier_calls: int = 0  # solutions or prefixes judged
    verifier_tokens: int = 0  # every token the verifier judged (a question's, a scored text's), computed or not
    computed_verifier_tokens: int = 0  # of those, the ones the verifier computed (not remembered, not cached)
    verifier_generated_tokens: int = 0  # tokens a verifier that writes generated (the consistency check's)
    verifier_seconds: float = 0.0  # the verifier's compute seconds charged to this problem
    verifier_http_seconds: float = 0.0  # the wall seconds of the verifier's HTTP calls
    # the budget
    uncounted_budgets: int = 0  # calls whose token budget could not be counted (a model that cannot count tokens):
    # each could take the whole `max_tokens`, so a step-level search's solution may be longer than its budget

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(eq=False)
class Meter:
    """Where a verifier charges one problem's judgements: the problem's usage, and the questions already charged
    to it (a verifier that remembers answers charges a question's seconds once per problem)."""

    usage: Usage
    charged: set[bytes] = field(default_factory=set)

    def judged(self, tokens: int, computed: int, seconds: float, http_seconds: float = 0.0,
               generated: int = 0) -> None:
        """Charge tokens judged (`computed` of them computed), tokens generated and seconds to the problem."""
        u = self.usage
        u.verifier_tokens += tokens
        u.computed_verifier_tokens += computed
        u.verifier_generated_tokens += generated
        u.verifier_seconds += seconds
        u.verifier_http_seconds += http_seconds

    def first(self, key: bytes) -> bool:
        """Whether this problem is charged question `key` for the first time (and from now on, not)."""
        new = key not in self.charged
        self.charged.add(key)
        return new


# The meter of the problem whose verifier call is running: the verifier charges its tokens and time there.
METER: ContextVar[Meter | None] = ContextVar("ponder_meter", default=None)


@dataclass
class Node:
    id: int
    parent: int | None
    text: str
    score: float | None = None
    prior: float | None = None  # the policy's probability of this step among its siblings (MCTS)
    visits: int = 0
    value: float = 0.0
    terminal: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """Tree of steps plus the chosen answer and its cost."""

    problem_id: str
    method: str
    nodes: list[Node] = field(default_factory=list)
    answer: str | None = None
    solution: str | None = None
    usage: Usage = field(default_factory=Usage)
    extra: dict[str, Any] = field(default_factory=dict)
    correct: bool | None = None  # the task's grade of `answer`, where the caller graded it (`ponder.solve`)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, text=""))
        made = _MADE.get()
        if made is not None:
            made.append(self)
        self.changed()

    def changed(self, final: bool = False) -> None:
        """Tell the observers (`observing`) that this trace changed; `final`: the search that makes it has ended.
        A trace calls it when it is made and whenever it grows a node; `ponder.search.search` when it ends."""
        for observer in _observers:
            observer(self, final)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: int, text: str, **fields: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent, text=text, **fields)
        self.nodes.append(node)
        self.changed()
        return node

    def add_path(self, steps: list[str], **leaf_fields: Any) -> Node:
        """Add a whole solution as a chain of steps under the root; the leaf gets `leaf_fields`."""
        node = self.root
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            node = self.add(node.id, step, **(leaf_fields if last else {}))
        if not steps:  # an empty solution is still a leaf, so votes and scores have somewhere to live
            node = self.add(0, "", **leaf_fields)
        return node

    def node_at(self, steps: tuple[str, ...] | list[str]) -> Node:
        """The node the steps lead to from the root, added (with the nodes above it) where the tree lacks it."""
        node = self.root
        for step in steps:
            node = next((n for n in self.children(node.id) if n.text == step), None) or self.add(node.id, step)
        return node

    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def path_ids(self, node_id: int) -> list[int]:
        """The nodes from below the root down to `node_id` (the root itself left out)."""
        ids: list[int] = []
        node = self.nodes[node_id]
        while node.parent is not None:
            ids.append(node.id)
            node = self.nodes[node.parent]
        return ids[::-1]

    def path(self, node_id: int) -> list[str]:
        """The steps from the root down to `node_id`."""
        return [self.nodes[i].text for i in self.path_ids(node_id)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The traces made in the current search (`ending_on_error`); None outside one.
_MADE: ContextVar[list[Trace] | None] = ContextVar("ponder_traces_made", default=None)


@contextmanager
def ending_on_error() -> Iterator[None]:
    """Inside, in this task and the tasks it starts: should the block raise, every trace made in it ends (its
    observers hear `final=True`, a tree viewer stops drawing it as running) with the error in `extra["error"]`."""
    made: list[Trace] = []
    token = _MADE.set(made)
    try:
        yield
    except BaseException as err:
        for trace in made:
            trace.extra["error"] = f"{type(err).__name__}: {err}"
            trace.changed(final=True)
        raise
    finally:
        _MADE.reset(token)


# Called with (trace, final) whenever any trace changes (`Trace.changed`), from the thread that changed it.
TraceObserver = Callable[[Trace, bool], None]
_observers: list[TraceObserver] = []
_observers_lock = threading.Lock()


@contextmanager
def observing(observer: TraceObserver) -> Iterator[None]:
    """While inside, `observer(trace, final)` is called whenever a trace is made or grows a node in this process (in
    any thread, any search method), and once with `final=True` when the search that makes it ends: a running
    search publishes its tree as it grows (the tree viewer draws it live). The observer runs in the search's
    thread, so it should only take note (keep the trace, count a version), not do slow work."""
    global _observers
    with _observers_lock:  # a new list each time: a trace iterating the old one is not disturbed
        _observers = [*_observers, observer]
    try:
        yield
    finally:
        with _observers_lock:
            _observers = [o for o in _observers if o is not observer]
