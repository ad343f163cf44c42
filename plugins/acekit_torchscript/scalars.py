"""Numbers computed from tensor shapes: ``x.size(0)``, ``h // 16``, ``n * c``.

They become :class:`~acekit_torchscript.entries.ScalarEntry` entries: the example value
decides conditions, and the IR op computing the number is written only when an op of
the graph reads it (a ``reshape``'s shape), so the graph still runs for other shapes.
"""

from __future__ import annotations

from typing import Any, Final

import torch

from acekit_torchscript.context import Site
from acekit_torchscript.entries import ScalarEntry, TensorEntry, resolve

#: Ops reading a tensor's shape; rank, dtype and device queries are static.
SHAPE_QUERIES: Final = frozenset({"aten::size", "prim::shape", "aten::numel", "aten::dim"})

#: Arithmetic on numbers computed from shapes, by TorchScript op: the IR op computing it.
#: ``identity`` marks conversions between numbers and 0-dim tensors (traced graphs).
SCALAR_OPS: Final = {
    "aten::add": "add",
    "aten::sub": "sub",
    "aten::mul": "mul",
    "aten::div": "div",
    "aten::floordiv": "floor_divide",
    "aten::floor_divide": "floor_divide",
    "aten::remainder": "remainder",
    "aten::pow": "pow",
    "aten::neg": "neg",
    "aten::eq": "eq",
    "aten::ne": "ne",
    "aten::lt": "lt",
    "aten::le": "le",
    "aten::gt": "gt",
    "aten::ge": "ge",
    "aten::__and__": "logical_and",
    "aten::__or__": "logical_or",
    "aten::__not__": "logical_not",
    "aten::floor": "floor",
    "aten::ceil": "ceil",
    "aten::sqrt": "sqrt",
    "aten::abs": "abs",
    "prim::max": "maximum",
    "prim::min": "minimum",
    "prim::NumToTensor": "identity",
    "aten::Int": "identity",
    "aten::Float": "identity",
    "aten::ScalarImplicit": "identity",
    "aten::IntImplicit": "identity",
    "aten::FloatImplicit": "identity",
}


def number(value: Any) -> Any:
    """0-dim constant tensors (traced shape arithmetic) as Python numbers."""
    value = resolve(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


def shape_query(kind: str, tensor: TensorEntry, inputs: list[Any], result: Any, site: Site) -> Any:
    """The entry of a shape query on a graph tensor: ``x.size(1)`` is ``shape{dim=1}``;
    ``x.shape`` is one shape value whose sizes are read from it (``gather``)."""
    if kind in ("aten::numel", "aten::dim"):
        return ScalarEntry(result, kind.partition("::")[2], (tensor,), {}, site)
    if len(inputs) > 1:
        dim = number(inputs[1])
        if isinstance(dim, ScalarEntry):
            dim = dim.example
        return ScalarEntry(result, "shape", (tensor,), {"dim": dim}, site)
    sizes = tuple(result)
    shape = ScalarEntry(sizes, "shape", (tensor,), {}, site)
    return [
        ScalarEntry(size, "gather", (shape,), {"index": index}, site)
        for index, size in enumerate(sizes)
    ]


def scalar_op(kind: str, inputs: list[Any], results: list[Any], site: Site) -> list[Any]:
    """Arithmetic on numbers computed from shapes: a lazy IR op, or the example value."""
    results = [number(result) for result in results]
    op = SCALAR_OPS.get(kind)
    if op is None or len(results) != 1:
        # Anything else about shapes (a list's max, a string) keeps its example value.
        return results
    operands = [number(entry) for entry in inputs]
    if op == "identity":
        return [operands[0]]
    if kind in ("prim::max", "prim::min") and len(operands) == 1:
        return results
    attrs: dict[str, Any] = {}
    if kind == "aten::div" and len(operands) > 2 and operands[2] is not None:
        attrs["rounding_mode"] = operands[2]
    if op in ("add", "sub", "div", "floor_divide"):
        # aten's alpha (add, sub) is 1 for shape arithmetic; the mode is an attribute.
        operands = operands[:2]
    return [ScalarEntry(results[0], op, tuple(operands), attrs, site)]
