"""The one trace format every search method returns.

A trace is a tree of steps. The root holds the prompt; every other node is one step (a line of reasoning)
with its parent, the verifier's score, MCTS-style visit counts and values. `answer` is what the method
finally chose; `usage` is what it cost. Evaluation, the server and the tree viewer read only this.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Usage:
    """Compute spent on one problem, as the engines measured it. Methods are compared at equal compute, not at
    equal `n`."""

    prompt_tokens: int = 0  # prompt tokens requested
    computed_prompt_tokens: int = 0  # of those, the ones the model computed (the rest came from a prefix cache)
    generated_tokens: int = 0
    model_calls: int = 0
    verifier_calls: int = 0  # solutions or prefixes judged
    verifier_tokens: int = 0  # tokens a learned verifier read to judge them
    seconds: float = 0.0  # the policy's share of compute time
    verifier_seconds: float = 0.0  # the verifier's share

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# The usage of the problem whose verifier call is running: the verifier engine charges its tokens and time here.
METER: ContextVar[Usage | None] = ContextVar("ponder_usage", default=None)


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

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: int, text: str, **fields: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent, text=text, **fields)
        self.nodes.append(node)
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

    def path(self, node_id: int) -> list[str]:
        """The steps from the root down to `node_id`."""
        steps: list[str] = []
        node: Node | None = self.nodes[node_id]
        while node is not None and node.parent is not None:
            steps.append(node.text)
            node = self.nodes[node.parent]
        return steps[::-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
