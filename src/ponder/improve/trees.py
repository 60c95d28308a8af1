"""What one search tree teaches: the solutions the outcome check accepts, the policy's distillation pairs, and a value
target for every step the search wrote.

Only the task's answer grading (`Task.solves`) looks at the tree; the exact step oracle never does, because a real
task has none. A tree is the node list of a `Trace` (as an eval row stores it: dicts with `id`, `parent`, `text`,
`visits`, `value`, `terminal`).

Value targets (`targets`):
- `mc`: the tree's own Monte-Carlo estimate: of the finished solutions below a step (the step's own, if it ends one),
  the share that the outcome check accepts; none below: no target. The search's continuations are the rollouts
  of Math-Shepherd (Wang et al., 2024) and ReST-MCTS* (Zhang et al., 2024), which infer a step's process reward
  from how often the tree's completions through it reach the right answer.
- `q`: the search's own backed-up value Q(s, a) wherever it visited the step (MCTS: TS-LLM, Feng et al., 2024,
  learns its value from the tree's returns; rStar-Math, Guan et al., 2025, reads its Q-values the same way), the
  `mc` estimate where it did not; a finished solution's target is always its outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.collect.records import StepRecord
from ponder.errors import ConfigError
from ponder.tasks.base import Backtracking, Problem, Task, TaskError
from ponder.trace import Node, Trace

TARGETS = ("mc", "q")
DISTIL = ("choices", "visits", "stream")
STREAMING = ("tot_dfs",)  # the methods whose trace keeps the order it entered its states in (`Tree.stream`)


@dataclass
class Tree(Trace):
    """A searched tree (a `Trace`'s nodes) with the outcome of each finished solution in it."""

    outcomes: dict[int, bool] = field(default_factory=dict)  # finished leaf id -> the task grades its answer right

    @classmethod
    def from_row(cls, task: Task, problem: Problem, nodes: Sequence[dict[str, Any] | Node],
                 extra: dict[str, Any] | None = None) -> Tree:
        tree = cls(problem.id, "", nodes=[n if isinstance(n, Node) else Node(**n) for n in nodes], extra=extra or {})
        tree.outcomes = {n.id: task.solves(problem, tree.path(n.id)) for n in tree.nodes if n.terminal}
        return tree

    def child_ids(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            if n.parent is not None:
                out[n.parent].append(n.id)
        return out

    def right_solutions(self) -> list[list[str]]:
        """The distinct finished solutions the outcome check accepts, in the order the search wrote them."""
        seen: dict[tuple[str, ...], list[str]] = {}
        for leaf, right in self.outcomes.items():
            if right:
                steps = self.path(leaf)
                seen.setdefault(tuple(steps), steps)
        return list(seen.values())

    def mc_values(self) -> dict[int, float | None]:
        """Per node: the share of the finished solutions at or below it that are right (None: none finished)."""
        right = {n.id: 0 for n in self.nodes}
        done = {n.id: 0 for n in self.nodes}
        for node in reversed(self.nodes):  # children come after their parents
            if node.id in self.outcomes:
                done[node.id] += 1
                right[node.id] += self.outcomes[node.id]
            if node.parent is not None:
                done[node.parent] += done[node.id]
                right[node.parent] += right[node.id]
        return {i: right[i] / done[i] if done[i] else None for i in right}

    def targets(self, how: str) -> dict[int, float | None]:
        """The value target of every node (see the module doc)."""
        if how not in TARGETS:
            raise ConfigError(f"unknown value target {how!r}; choose from {', '.join(TARGETS)}")
        mc = self.mc_values()
        if how == "mc":
            return mc
        return {n.id: (float(self.outcomes[n.id]) if n.id in self.outcomes else
                       min(1.0, max(0.0, n.value)) if n.visits > 0 else mc[n.id]) for n in self.nodes}

    def judged(self, task: Task, problem: Problem) -> Tree:
        """The tree a verifier learns from: every leaf's path as a verifier judges it (`Task.judged`: the path a
        stream of search ends on, its dead ends and back steps left out), the distinct paths merged by their shared
        prefixes, each finished one keeping its sample's outcome; the tree itself where no path changes (a step
        search, a policy that does not back out). Its `mc` targets are then the share of the samples' right answers
        among those whose final path runs through a step, as Math-Shepherd's rollouts through it."""
        kids = self.child_ids()
        leaves = [n.id for n in self.nodes[1:] if not kids[n.id]]
        written = {leaf: self.path(leaf) for leaf in leaves}
        paths = {leaf: task.judged(problem, steps) for leaf, steps in written.items()}
        if paths == written:
            return self
        tree = Tree(self.problem_id, self.method)
        index: dict[tuple[str, ...], int] = {}
        for leaf in leaves:
            parent = 0
            for k, step in enumerate(paths[leaf]):
                key = tuple(paths[leaf][: k + 1])
                if key not in index:
                    index[key] = tree.add(parent, step).id
                parent = index[key]
            if leaf in self.outcomes and parent:
                tree.nodes[parent].terminal = True
                tree.outcomes[parent] = self.outcomes[leaf]
        return tree

    def records(self, task: Task, problem: Problem, how: str) -> list[StepRecord]:
        """A step record per root-to-leaf path, each step labelled with its target (None: no target); paths with no
        target at all are left out."""
        values = self.targets(how)
        kids = self.child_ids()
        out = []
        for node in self.nodes[1:]:
            if kids[node.id]:
                continue
            ids = self.path_ids(node.id)
            labels = [values[i] for i in ids]
            if all(x is None for x in labels):
                continue
            out.append(StepRecord(question=problem.question, steps=[self.nodes[i].text for i in ids], labels=labels,
                                  task=task.name, problem_id=problem.id, answer=problem.answer,
                                  outcome=self.outcomes.get(node.id), source=f"tree-{how}"))
        return out

    def visit_pairs(self, task: Task, prompt: str, copies: int) -> list[tuple[str, str]]:
        """The search's visit distribution as (`prompt` and prefix, next step) pairs: at every state whose children
        the search visited and below which it finished a right solution, each child `copies` x N(child) / sum N
        times, rounded (AlphaZero's and TS-LLM's policy target pi(a|s) proportional to N(s, a))."""
        mc = self.mc_values()
        kids = self.child_ids()
        out = []
        for node in self.nodes:
            visited = [self.nodes[c] for c in kids[node.id] if self.nodes[c].visits > 0]
            total = sum(c.visits for c in visited)
            if not total or not mc[node.id]:
                continue
            state = prompt + task.join_steps(self.path(node.id))
            for child in visited:
                out += [(state, child.text + task.step_end)] * round(copies * child.visits / total)
        return out

    def stream(self, task: Backtracking, problem: Problem) -> list[str] | None:
        """A depth-first search written as one solution (Gandhi et al., 2024, "Stream of Search"): the states in the
        order the search entered them (`extra["order"]`, kept by the methods in `STREAMING`), a back step
        (`Backtracking.back_step`) wherever the next one is not a child of the last, up to the first state with a
        finished child the outcome check accepts, then that child. None when the search entered no such state, or
        when it returns to a state its steps do not write legibly (a policy's garbled step: nothing to go back to)."""
        kids = self.child_ids()
        lines: list[str] = []
        path: list[int] = []  # the entered states from the root's child to the current one
        for node in self.extra.get("order", []):
            if node == 0:
                continue
            parent = self.nodes[node].parent
            if (path[-1] if path else 0) != parent:
                while path and path[-1] != parent:
                    path.pop()
                try:
                    lines.append(task.back_step(problem, [self.nodes[i].text for i in path]))
                except TaskError:
                    return None
            path.append(node)
            lines.append(self.nodes[node].text)
            if self.outcomes.get(node):
                return lines
            right = [c for c in kids[node] if self.outcomes.get(c)]
            if right:
                return [*lines, self.nodes[right[0]].text]
        return None
