"""Shared rewrite helpers of the cleanup passes: purity, known values, erasing with care.

Every cleanup pass erases nodes through a :class:`Rewriter` created for that run, so
that tensors no node reads any more leave ``graph.tensors`` and the nodes a rewrite
leaves without readers are removed in the same pass. A Rewriter lives for one run
only: passes keep no state between runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

import torch

from acekit.ir import Graph, Node, Value

#: Ops that exist for their effect, never erased for lack of readers, never merged.
EFFECT_OPS: Final = frozenset({"input", "output", "assert", "_assert", "print"})

#: Ops whose result changes from call to call: never folded or merged.
RANDOM_OPS: Final = frozenset(
    {
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "stochastic_depth",
        "rand",
        "randn",
        "randint",
        "rand_like",
        "randn_like",
        "randint_like",
        "randperm",
        "bernoulli",
        "multinomial",
        "normal",
        "uniform",
        "empty",
        "empty_like",
    }
)

#: Ops that hold a condition to check at run time.
ASSERT_OPS: Final = frozenset({"assert", "_assert"})

#: Nodes that hold data rather than compute it.
SOURCE_OPS: Final = frozenset({"input", "parameter", "constant"})


class _Missing:
    """The type of :data:`MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by :func:`known_value` for a value that is not known before the graph runs.
MISSING: Final = _Missing()


def has_effect(node: Node) -> bool:
    """Whether ``node`` must stay even when nothing reads its results.

    Nodes without results exist only for their effect, and in-place ops (``add_``)
    change a value other nodes read.
    """
    return (
        node.op in EFFECT_OPS
        or not node.outputs
        or (node.op.endswith("_") and not node.op.startswith("_"))
    )


def is_deterministic(node: Node) -> bool:
    """Whether ``node`` gives the same results for the same inputs every time."""
    return node.op not in RANDOM_OPS and not has_effect(node)


def _truth(held: Any) -> bool | None:
    if isinstance(held, bool):
        return held
    if isinstance(held, torch.Tensor) and held.numel() == 1 and held.dtype == torch.bool:
        return bool(held.item())
    return None


def is_true(held: Any) -> bool:
    """Whether a known value is the boolean ``True`` (a Python bool or a 1-element tensor)."""
    return _truth(held) is True


def is_false(held: Any) -> bool:
    """Whether a known value is the boolean ``False``."""
    return _truth(held) is False


def source_tensor(graph: Graph, node: Node) -> torch.Tensor | None:
    """The tensor a ``parameter`` or ``constant`` node holds by reference, if any."""
    ref = node.attrs.get("ref")
    if node.op in ("parameter", "constant") and ref is not None:
        return graph.tensors.get(ref)
    return None


def known_value(graph: Graph, value: Value, *, buffers: bool = False) -> Any:
    """What ``value`` holds when it is known without running the graph, else :data:`MISSING`.

    Constants are known. With ``buffers``, so are non-trainable parameters (buffers such
    as BatchNorm running statistics); trainable parameters never are, because the user
    may train them after the cleanup.
    """
    node = value.producer
    if node is None:
        return MISSING
    if node.op == "constant":
        if node.attrs.get("ref") is not None:
            tensor = source_tensor(graph, node)
            return MISSING if tensor is None else tensor
        return node.attrs.get("value")
    if node.op == "parameter" and buffers and node.attrs.get("trainable") is False:
        tensor = source_tensor(graph, node)
        return MISSING if tensor is None else tensor
    return MISSING


def held_tensor(graph: Graph, value: Value) -> torch.Tensor | _Missing | None:
    """The tensor a parameter or constant value holds (trainable or not).

    ``None`` stands for an optional input given as ``constant{value=None}``;
    :data:`MISSING` for a value computed by the graph.
    """
    node = value.producer
    if node is None or node.op not in ("parameter", "constant"):
        return MISSING
    if node.attrs.get("ref") is not None:
        tensor = source_tensor(graph, node)
        return MISSING if tensor is None else tensor
    held = node.attrs.get("value")
    if held is None or isinstance(held, torch.Tensor):
        return held
    return MISSING


def fresh_tensor_ref(graph: Graph, base: str) -> str:
    """A key derived from ``base`` that ``graph.tensors`` does not hold yet."""
    if base not in graph.tensors:
        return base
    index = 1
    while f"{base}_{index}" in graph.tensors:
        index += 1
    return f"{base}_{index}"


class Rewriter:
    """Erases nodes of one graph for one pass run, keeping ``graph.tensors`` tidy.

    ``removed`` counts the nodes erased and ``added`` the nodes the pass reported
    creating through :meth:`note_added`, so ``removed - added`` is how much smaller
    the graph became.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.removed = 0
        self.added = 0
        # How many nodes read each held tensor: Graph.erase only forgets tensors of
        # parameter nodes, and constants folded or merged away must go too.
        self._ref_count: Counter[str] = Counter(
            ref
            for node in graph.nodes
            if node.op in ("parameter", "constant")
            and isinstance(ref := node.attrs.get("ref"), str)
        )

    @property
    def net_removed(self) -> int:
        """Nodes erased minus nodes added: how much smaller the graph became."""
        return self.removed - self.added

    def note_added(self, node: Node) -> None:
        """Record that the pass created ``node`` (counted against ``removed``)."""
        self.added += 1
        ref = node.attrs.get("ref")
        if node.op in ("parameter", "constant") and isinstance(ref, str):
            self._ref_count[ref] += 1

    def readers_of_ref(self, ref: str) -> int:
        """How many nodes hold the tensor ``ref``."""
        return self._ref_count[ref]

    def holds(self, node: Node) -> bool:
        """Whether ``node`` is still in the graph (erased nodes keep their ``graph``)."""
        return self.graph.has_node(node.name) and self.graph.node(node.name) is node

    def erase(self, node: Node) -> None:
        """Erase ``node`` (its results must have no readers left)."""
        ref = node.attrs.get("ref")
        self.graph.erase(node)
        self.removed += 1
        if node.op in ("parameter", "constant") and isinstance(ref, str):
            self._ref_count[ref] -= 1
            if self._ref_count[ref] <= 0:
                del self._ref_count[ref]
                self.graph.tensors.pop(ref, None)

    def bypass(self, node: Node, value: Value) -> None:
        """Make the readers of ``node``'s single result read ``value``, then erase it.

        Inputs of ``node`` left without readers are erased too.
        """
        self.graph.replace_all_uses(node.output, value)
        self.erase_with_dead_inputs(node)

    def erase_with_dead_inputs(self, node: Node) -> None:
        """Erase ``node`` and then every producer that this leaves without readers."""
        producers = [v.producer for v in node.inputs if v.producer is not None]
        self.erase(node)
        self.prune(producers)

    def prune(self, candidates: Iterable[Node]) -> None:
        """Erase the candidates without readers and, transitively, what only they read.

        Each node is looked at once per time one of its readers goes, so pruning is
        linear in the number of edges removed.
        """
        stack = list(candidates)
        while stack:
            node = stack.pop()
            if not self.holds(node) or node.users or has_effect(node):
                continue
            stack.extend(v.producer for v in node.inputs if v.producer is not None)
            self.erase(node)
