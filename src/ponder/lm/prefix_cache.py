"""Key-value caches of token prefixes, shared across requests: a radix tree under a memory budget.

The idea of SGLang's RadixAttention (Zheng et al., 2024, "SGLang: Efficient Execution of Structured Language
Model Programs"): every sequence the model has read leaves its keys and values in a tree whose edges are runs of
tokens; a new prompt reuses the longest cached prefix and computes only the rest. In a tree search the k children
of a node share the node's whole path, and a step at depth d extends the prompt of depth d - 1, so most of each
prompt is already cached. Least recently used leaves are evicted when the cache is over its budget.

A node's keys and values are one tensor per layer, [heads, tokens, head_dim], copied out of the batch (a cached
prefix never pins a batch's memory). Keys are stored after the rotary embedding of their absolute positions, which
are the same wherever the prefix is reused (a prefix always starts at position 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [heads, tokens, head_dim]


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: KV
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.kv)


def common_length(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _slice(kv: KV, start: int, stop: int) -> KV:
    return [(k[:, start:stop], v[:, start:stop]) for k, v in kv]


class PrefixCache:
    """`match` the longest cached prefix of a token list; `insert` a sequence's keys and values; `evict` down to
    `budget_bytes`."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.root = _Node((), [], None)
        self.nbytes = 0
        self.peak_bytes = 0
        self._clock = 0

    def match(self, ids: list[int]) -> tuple[int, KV]:
        """(length, per-layer keys and values of ids[:length]) for the longest cached prefix."""
        self._clock += 1
        node, at, pieces = self.root, 0, []
        while at < len(ids) and ids[at] in node.children:
            child = node.children[ids[at]]
            n = common_length(child.tokens, ids[at:])
            child.last_used = self._clock
            pieces.append(_slice(child.kv, 0, n) if n < len(child.tokens) else child.kv)
            at += n
            if n < len(child.tokens):
                break
            node = child
        if not pieces:
            return 0, []
        kv = [(torch.cat([p[layer][0] for p in pieces], dim=1), torch.cat([p[layer][1] for p in pieces], dim=1))
              for layer in range(len(pieces[0]))]
        return at, kv

    def insert(self, ids: list[int], kv: KV) -> None:
        """Cache the keys and values of `ids` ([heads, len(ids), head_dim] per layer); what is cached already is
        kept, the rest is copied in."""
        self._clock += 1
        node, at = self.root, 0
        while at < len(ids):
            child = node.children.get(ids[at])
            if child is None:
                copied = [(k.clone(), v.clone()) for k, v in _slice(kv, at, len(ids))]
                new = _Node(tuple(ids[at:]), copied, node, last_used=self._clock)
                node.children[ids[at]] = new
                self.nbytes += new.nbytes
                self.peak_bytes = max(self.peak_bytes, self.nbytes)
                return
            n = common_length(child.tokens, ids[at:])
            if n < len(child.tokens):  # split the edge where the new sequence leaves it
                child = self._split(child, n)
            child.last_used = self._clock
            node, at = child, at + n

    def _split(self, node: _Node, n: int) -> _Node:
        head = _Node(node.tokens[:n], [(k[:, :n].clone(), v[:, :n].clone()) for k, v in node.kv], node.parent,
                     last_used=node.last_used)
        assert node.parent is not None
        node.parent.children[node.tokens[0]] = head
        node.tokens = node.tokens[n:]
        node.kv = [(k[:, n:].clone(), v[:, n:].clone()) for k, v in node.kv]
        node.parent = head
        head.children[node.tokens[0]] = node
        return head

    def evict(self) -> None:
        """Drop least recently used leaves until the cache fits its budget."""
        if self.nbytes <= self.budget_bytes:
            return
        leaves = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if not node.children and node is not self.root:
                leaves.append(node)
        leaves.sort(key=lambda n: n.last_used)
        while self.nbytes > self.budget_bytes and leaves:
            leaf = leaves.pop(0)
            assert leaf.parent is not None
            del leaf.parent.children[leaf.tokens[0]]
            self.nbytes -= leaf.nbytes
            parent = leaf.parent
            if parent is not self.root and not parent.children:  # the parent became a leaf: evictable in turn
                index = next((i for i, other in enumerate(leaves) if other.last_used >= parent.last_used), len(leaves))
                leaves.insert(index, parent)
