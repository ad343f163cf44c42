"""Symbolic tensor types: which sizes of every value follow the free input dims.

A parser types each value with the sizes it saw on the example inputs. Running the
graph a second time with every free input dim at another size shows which sizes move
with them: those become symbols (``batch``, ``seq``, ``2*batch``, ``batch*seq``), the
others stay ints. Shape arithmetic on symbolic sizes is then left in the graph by
constant folding, and the simulation and the exports compute it at run time.

A free dim the graph cannot run at another size (the model itself fixes it, as in a
``view(1, -1)``) stays static; :func:`generalize_types` reports where it is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from acekit.dims import FreeDim, FreeDims
from acekit.ir.graph import Graph, Value
from acekit.ir.tensor_type import Dim, TensorType
from acekit.runtime.codegen import to_module


@attrs.frozen
class FixedDim:
    """A free dim the model fixes: the node where running at another size fails."""

    dim: FreeDim
    node: str
    subgraph: str
    error: str

    def describe(self) -> str:
        """One line for the log: the dim, the node, its module and the error."""
        return (
            f"{self.dim.describe()} is fixed by the model at node '{self.node}' "
            f"(subgraph '{self.subgraph}'): {self.error}"
        )


class _ShapeRecorder(nn.Module):
    """Notes the shape of every tensor a value takes, and where the run got to."""

    def __init__(self, value: Value, seen: dict[str, tuple[int, ...] | None]) -> None:
        super().__init__()
        self.value_name = value.name
        self.seen = seen

    def forward(self, x: Any) -> Any:
        self.seen[self.value_name] = tuple(x.shape) if isinstance(x, torch.Tensor) else None
        return x


def generalize_types(graph: Graph, inputs: Sequence[Any], free: FreeDims) -> list[FixedDim]:
    """Give every value of ``graph`` symbolic sizes where they follow ``free`` dims.

    ``inputs`` are the example inputs the graph was parsed with. Returns the free dims
    the graph cannot vary (each stays at its example size), with where they are fixed.
    """
    if not free:
        return []
    values = [
        value
        for node in graph.nodes
        if node.op not in ("parameter", "constant", "output")
        for value in node.outputs
    ]
    base = _typed_shapes(values)
    if base is None:
        base, _ = _record(graph, values, list(inputs))
    fixed: list[FixedDim] = []
    moved, failure = _record(graph, values, free.resized(inputs))
    if failure is not None:
        # Some dim is fixed: try each symbol alone (dims sharing one, like the sequence
        # of input_ids and attention_mask, must move together); keep those that vary.
        groups: dict[str, list[FreeDim]] = {}
        for dim in free.dims:
            groups.setdefault(dim.symbol, []).append(dim)
        for group in groups.values():
            _, alone = _record(graph, values, free.resized(inputs, group))
            if alone is not None:
                fixed += [FixedDim(dim, *alone) for dim in group]
        free = free.without([f.dim for f in fixed])
        moved, failure = _record(graph, values, free.resized(inputs)) if free else (base, None)
        if failure is not None:  # the dims vary one at a time but not together
            fixed += [FixedDim(d, *failure) for d in free.dims]
            moved = base
    symbols = _SymbolNamer([d for d in free.dims if d not in {f.dim for f in fixed}])
    for value in values:
        before, after = base.get(value.name), moved.get(value.name)
        if before is None or after is None or len(before) != len(after):
            continue
        if before == after:
            continue
        shape: tuple[Dim, ...] = tuple(
            b if b == a else symbols.name(b, a) for b, a in zip(before, after, strict=True)
        )
        value.type = TensorType(value.type.dtype, shape)
        if value.producer is not None and value.producer.op == "input":
            # Exports trace the graph at these sizes (a size of 1 would be specialised).
            value.producer.attrs["example_shape"] = before
    return fixed


def _typed_shapes(values: Sequence[Value]) -> dict[str, tuple[int, ...] | None] | None:
    """The example's shapes as the parser typed them, or ``None`` where a type is not a
    concrete shape (then the graph is run instead: one forward pass fewer otherwise)."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for value in values:
        shape = value.type.shape
        if shape is None:
            if value.type.dtype is not None:  # a tensor of unknown shape: run instead
                return None
            shapes[value.name] = None  # not a tensor: a run records None too
            continue
        if not all(isinstance(d, int) for d in shape):  # typed symbolic already
            return None
        shapes[value.name] = tuple(int(d) for d in shape)
    return shapes


def _record(
    graph: Graph, values: Sequence[Value], inputs: list[Any]
) -> tuple[dict[str, tuple[int, ...] | None], tuple[str, str, str] | None]:
    """The shape of every value on ``inputs``; on failure, the node that failed and why."""
    seen: dict[str, tuple[int, ...] | None] = {}
    module = to_module(graph, taps={v.name: _ShapeRecorder(v, seen) for v in values})
    devices = [x.device for x in inputs if isinstance(x, torch.Tensor)]
    module.to(devices[0] if devices else "cpu")
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as error:
        lines = str(error).strip().splitlines()
        message = f"{type(error).__name__}: {lines[0] if lines else ''}"
        # Nodes run in graph order: the first one whose result was not seen failed.
        for node in graph.nodes:
            unseen = any(out.name not in seen for out in node.outputs)
            if unseen and node.op not in ("parameter", "constant", "output"):
                return seen, (node.name, node.subgraph, message)
        return seen, ("?", graph.name, message)
    return seen, None


class _SymbolNamer:
    """Names a size seen as ``before`` on the example and ``after`` on the other run."""

    def __init__(self, dims: Sequence[FreeDim]) -> None:
        self.dims = list(dims)
        self.fallback: dict[tuple[int, int], str] = {}

    def name(self, before: int, after: int) -> str:
        """``batch``, ``2*batch``, ``batch*seq``, ``3*batch*seq``, or a fresh ``d0``."""
        for dim in self.dims:
            scale = _scale(before, after, dim.example, dim.other)
            if scale is not None:
                return dim.symbol if scale == 1 else f"{scale}*{dim.symbol}"
        for i, first in enumerate(self.dims):
            for second in self.dims[i + 1 :]:
                if first.symbol == second.symbol:
                    continue
                scale = _scale(
                    before, after, first.example * second.example, first.other * second.other
                )
                if scale is not None:
                    product = f"{first.symbol}*{second.symbol}"
                    return product if scale == 1 else f"{scale}*{product}"
        key = (before, after)
        return self.fallback.setdefault(key, f"d{len(self.fallback)}")


def _scale(before: int, after: int, example: int, other: int) -> int | None:
    """``k`` when ``before == k * example`` and ``after == k * other``."""
    if example <= 0 or before % example:
        return None
    k = before // example
    return k if k > 0 and after == k * other else None
