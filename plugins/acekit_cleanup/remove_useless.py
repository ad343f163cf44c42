"""``remove-useless``: bypass nodes that give back their input unchanged.

Each rule proves from static facts (value types, known constants, attributes) that a
node's result equals one of its inputs, element for element, with the same dtype and
shape. When a fact is unknown (a symbolic dimension, a missing dtype) the node stays:
the pass never changes what the graph computes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs
import torch

from acekit.ir import Graph, Node, TensorType, Value
from acekit.passes import Pass, PassResult
from acekit_cleanup._logging import log_removed_nodes
from acekit_cleanup._rewrite import ASSERT_OPS, MISSING, Rewriter, is_true, known_value

#: Ops that return their first input's values whatever the shapes.
IDENTITY_OPS: Final = frozenset({"identity", "contiguous"})

#: Ops that only rearrange, broadcast, tile or slice: the identity when the shape does
#: not change (a slice or repeat that keeps the shape selects every element in order).
RESHAPE_OPS: Final = frozenset(
    {
        "reshape",
        "repeat",
        "slice",
        "view",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "expand",
        "expand_as",
        "broadcast_to",
        "view_as",
        "reshape_as",
    }
)

#: Ops that only give the row-major element sequence a new shape.
PURE_RESHAPE_OPS: Final = frozenset(
    {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze"}
)

#: Pure reshapes whose target shape does not depend on their input's rank.
ABSOLUTE_RESHAPE_OPS: Final = frozenset({"reshape", "view"})

#: Ops that only change the dtype: the identity when it does not change.
CAST_OPS: Final = frozenset({"to", "cast", "type", "type_as"})

#: Ops with a ``dim``-permuting meaning: checked axis by axis.
PERMUTE_OPS: Final = frozenset({"permute", "transpose", "swapaxes", "swapdims"})


def static_shape(type_: TensorType) -> tuple[int, ...] | None:
    """The shape of ``type_`` when every dimension is a number, else ``None``."""
    if type_.shape is None or not all(isinstance(d, int) for d in type_.shape):
        return None
    return tuple(int(d) for d in type_.shape)


def same_static_type(a: Value, b: Value) -> bool:
    """Whether ``a`` and ``b`` are known to have the same dtype and the same static shape."""
    return (
        a.type.dtype is not None
        and a.type.dtype == b.type.dtype
        and static_shape(a.type) is not None
        and static_shape(a.type) == static_shape(b.type)
    )


def _equals_everywhere(held: Any, number: int) -> bool:
    if isinstance(held, bool):
        return False
    if isinstance(held, int | float):
        return held == number
    if isinstance(held, torch.Tensor) and held.numel() > 0 and not held.is_complex():
        return bool(torch.all(held == number))
    return False


def _permutation(node: Node, rank: int) -> list[int] | None:
    if node.op == "permute":
        dims = node.attrs.get("dims")
        if not isinstance(dims, tuple | list) or len(dims) != rank:
            return None
        return [int(d) % rank for d in dims]
    first = node.attrs.get("dim0")
    second = node.attrs.get("dim1")
    if not isinstance(first, int) or not isinstance(second, int) or not rank:
        return None
    order = list(range(rank))
    a, b = first % rank, second % rank
    order[a], order[b] = order[b], order[a]
    return order


def _permute_is_identity(node: Node) -> bool:
    source, result = node.inputs[0], node.output
    rank = source.type.rank
    if rank is None:
        return False
    order = _permutation(node, rank)
    if order is None or sorted(order) != list(range(rank)):
        return False
    if order == list(range(rank)):
        return True
    # Moving only size-1 axes keeps every element where it was.
    shape = static_shape(source.type)
    if shape is None or static_shape(result.type) != shape:
        return False
    moved = [axis for axis in order if shape[axis] != 1]
    return moved == sorted(moved)


def _checked_permutation(node: Node) -> list[int] | None:
    rank = node.inputs[0].type.rank if node.inputs else None
    if rank is None:
        return None
    order = _permutation(node, rank)
    return order if order is not None and sorted(order) == list(range(rank)) else None


def _plain_producer(value: Value, ops: frozenset[str]) -> Node | None:
    """The producer of ``value`` if it is one of ``ops`` with one unannotated result."""
    node = value.producer
    if node is None or node.op not in ops or not node.inputs or len(node.outputs) != 1:
        return None
    return node if node.output.quant is None else None


def _undone_permutation(node: Node) -> Value | None:
    """``x`` when ``node`` permutes back what a permute of ``x`` just permuted."""
    inner = _plain_producer(node.inputs[0], PERMUTE_OPS)
    if inner is None:
        return None
    outer_order, inner_order = _checked_permutation(node), _checked_permutation(inner)
    if outer_order is None or inner_order is None or len(outer_order) != len(inner_order):
        return None
    composed = [inner_order[axis] for axis in outer_order]
    return inner.inputs[0] if composed == sorted(composed) else None


def skip_inner_reshapes(node: Node) -> list[Node]:
    """Make ``reshape(reshape(x))`` read ``x``; returns the reshapes it stopped reading.

    A reshape to an absolute shape only sees the row-major element sequence, which a
    reshape before it does not change, so the earlier one is useless to it.
    """
    skipped: list[Node] = []
    if node.op not in ABSOLUTE_RESHAPE_OPS or not node.inputs:
        return skipped
    while (inner := _plain_producer(node.inputs[0], PURE_RESHAPE_OPS)) is not None:
        node.set_input(0, inner.inputs[0])
        skipped.append(inner)
    return skipped


def _arithmetic_identity(graph: Graph, node: Node) -> Value | None:
    """The input that ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``, ``x ** 1`` (and ``0 + x``,
    ``1 * x``) is."""
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    neutral = {"add": 0, "sub": 0, "mul": 1, "div": 1, "pow": 1}.get(node.op)
    if neutral is None or node.attrs.get("rounding_mode") is not None:
        return None
    commutes = node.op in ("add", "mul")
    left, right = node.inputs
    candidates = [(left, right), (right, left)] if commutes else [(left, right)]
    for kept, other in candidates:
        held = known_value(graph, other)
        if held is MISSING or not _equals_everywhere(held, neutral):
            continue
        # The result type must match the kept input: broadcasting or type promotion
        # against the constant would make ``x + 0`` differ from ``x``.
        if same_static_type(kept, node.output):
            return kept
    return None


def useless_replacement(graph: Graph, node: Node) -> Value | None:
    """The input ``node`` can be replaced by, or ``None`` when it does real work.

    For an ``assert`` whose condition is a known true constant, returns the condition
    itself; such a node has no results to replace and is simply erased.
    """
    if not node.inputs:
        return None
    if node.op in ASSERT_OPS:
        held = known_value(graph, node.inputs[0])
        return node.inputs[0] if held is not MISSING and is_true(held) else None
    if len(node.outputs) != 1 or node.output.quant is not None:
        return None
    source = node.inputs[0]
    if node.op in IDENTITY_OPS and len(node.inputs) == 1:
        return source
    if node.op == "cat" and len(node.inputs) == 1:
        return source
    if node.op in RESHAPE_OPS or node.op in CAST_OPS:
        return source if same_static_type(source, node.output) else None
    if node.op in PERMUTE_OPS:
        return source if _permute_is_identity(node) else _undone_permutation(node)
    return _arithmetic_identity(graph, node)


@attrs.frozen
class RemoveUseless(Pass):
    """Bypass nodes that change nothing: ``identity``, ``contiguous``, ``x + 0``, ``x * 1``,
    ``x - 0``, ``x / 1``, ``x ** 1``, one-input ``cat``, and reshape / expand / repeat /
    slice / squeeze / cast / permute nodes whose result has the same dtype, shape and
    element order as their input, and permutes undone by the next permute; erase
    ``assert`` nodes whose condition is the constant ``True``. A reshape reading another
    reshape reads that one's input instead.

    Inputs left without readers (the ``0`` of ``x + 0``) are erased too.
    """

    name: ClassVar[str] = "remove-useless"
    summary: ClassVar[str] = "bypass nodes that give back their input (x + 0, identity, ...)"

    def run(self, graph: Graph) -> PassResult:
        """Bypass the useless nodes of ``graph``; stats: ``removed``, ``bypassed``."""
        rewriter = Rewriter(graph)
        bypassed = 0
        for node in graph.nodes:
            if not rewriter.holds(node):
                continue
            skipped = skip_inner_reshapes(node)
            if skipped:
                bypassed += len(skipped)
                rewriter.prune(skipped)
            replacement = useless_replacement(graph, node)
            if replacement is None:
                continue
            if node.outputs:
                graph.replace_all_uses(node.output, replacement)
            rewriter.erase_with_dead_inputs(node)
            bypassed += 1
        log_removed_nodes(self.name, rewriter.net_removed, bypassed=bypassed)
        stats = {"removed": rewriter.net_removed, "bypassed": bypassed}
        return PassResult(graph, bypassed > 0, stats)
