"""``cse``: common-subexpression elimination.

Two nodes that run the same op with the same attributes on the same input values
compute the same results; the later one is replaced by the earlier one. Constants
merge by value (equal type and bits), which after constant folding collapses the many
copies of shape numbers such as ``-1`` or ``768``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Hashable
from typing import Any, ClassVar

import attrs
import torch

from acekit.ir import Graph, Node
from acekit.passes import Pass, PassResult
from acekit_cleanup._logging import log_removed_nodes
from acekit_cleanup._rewrite import Rewriter, is_deterministic, source_tensor


class _Unkeyable(Exception):
    """An attribute value that cannot be compared safely; its node is left alone."""


def tensor_key(tensor: torch.Tensor) -> Hashable:
    """A key equal for two tensors exactly when dtype, shape and every bit are equal."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.blake2b(flat.view(torch.uint8).numpy().tobytes(), digest_size=20)
    return ("tensor", str(tensor.dtype), tuple(tensor.shape), digest.hexdigest())


def freeze(value: Any) -> Hashable:
    """A hashable key for an attribute value that keeps apart what Python calls equal.

    ``1``, ``1.0`` and ``True`` compare equal in Python but are different constants,
    and so are ``0.0`` and ``-0.0``; the key records the type and the exact float.
    """
    if value is None or isinstance(value, bool | int | str):
        return (type(value).__name__, value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, tuple | list):
        return (type(value).__name__, tuple(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, torch.dtype):
        return ("dtype", str(value))
    if isinstance(value, torch.Tensor):
        return tensor_key(value)
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, value.name)
    raise _Unkeyable(type(value).__name__)


def node_key(graph: Graph, node: Node) -> Hashable | None:
    """What makes ``node``'s results: op, inputs, attributes and result types.

    ``None`` for nodes that must never merge: sources other than constants, random or
    effectful ops, and nodes with attributes that cannot be compared safely.
    """
    if not is_deterministic(node) or node.op in ("input", "parameter"):
        return None
    results = tuple((v.type, v.quant) for v in node.outputs)
    try:
        if node.op == "constant" and node.attrs.get("ref") is not None:
            tensor = source_tensor(graph, node)
            if tensor is None:
                return None
            key: Hashable = ("constant", tensor_key(tensor), results)
        else:
            key = (node.op, tuple(node.inputs), freeze(node.attrs), results)
        hash(key)
    except (_Unkeyable, TypeError):
        return None
    return key


@attrs.frozen
class EliminateCommonSubexpressions(Pass):
    """Replace every node by an earlier node that computes the same thing.

    One forward sweep: readers are rewired before they are looked at, so chains of
    repeated shape arithmetic (``shape`` -> ``gather`` -> ``mul``) collapse at once.
    Parameters never merge, even when equal: each may be trained on its own.
    """

    name: ClassVar[str] = "cse"
    summary: ClassVar[str] = "merge nodes and constants that compute the same value"

    def run(self, graph: Graph) -> PassResult:
        """Merge duplicate nodes of ``graph``; stats: ``removed``."""
        rewriter = Rewriter(graph)
        seen: dict[Hashable, Node] = {}
        for node in graph.nodes:
            key = node_key(graph, node)
            if key is None:
                continue
            first = seen.setdefault(key, node)
            if first is node:
                continue
            for old, new in zip(node.outputs, first.outputs, strict=True):
                graph.replace_all_uses(old, new)
            rewriter.erase(node)
        log_removed_nodes(self.name, rewriter.net_removed)
        return PassResult(graph, rewriter.removed > 0, {"removed": rewriter.net_removed})
