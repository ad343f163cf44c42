"""Small hand-built graphs for the cleanup plugin's golden tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from acekit.ir import Graph, Node, TensorType, Value

F32 = torch.float32
I64 = torch.int64


def t(*shape: int | str, dtype: torch.dtype = F32) -> TensorType:
    """A tensor type: ``t(1, 4)`` is ``f32[1,4]``."""
    return TensorType(dtype, shape)


class Builder:
    """Terse graph building for tests: ``b.op("relu", x, name="r", type=t(1, 4))``."""

    def __init__(self, name: str = "Net") -> None:
        self.graph = Graph(name)

    def input(self, name: str, type_: TensorType) -> Value:
        """A graph input."""
        return self.graph.add_input(name, type_, subgraph=self.graph.name)

    def param(self, name: str, tensor: torch.Tensor, *, trainable: bool = True) -> Value:
        """A parameter (``trainable=False`` for a buffer) in subgraph ``Net/<first part>``."""
        subgraph = f"{self.graph.name}/{name.split('.')[0]}"
        return self.graph.add_parameter(name, tensor, subgraph=subgraph, trainable=trainable)

    def const(self, value: Any, type_: TensorType | None = None, name: str = "c") -> Value:
        """A ``constant{value=...}`` node."""
        types = [type_] if type_ is not None else None
        return self.graph.add_node(
            "constant", attrs={"value": value}, name=name, types=types
        ).output

    def node(
        self,
        op: str,
        *inputs: Value,
        name: str | None = None,
        type_: TensorType | None = None,
        subgraph: str | None = None,
        num_outputs: int = 1,
        **attrs: Any,
    ) -> Node:
        """A node of ``op`` reading ``inputs``."""
        return self.graph.add_node(
            op,
            list(inputs),
            attrs,
            name=name,
            subgraph=self.graph.name if subgraph is None else subgraph,
            num_outputs=num_outputs,
            types=None if type_ is None else [type_],
        )

    def op(self, op: str, *inputs: Value, **kwargs: Any) -> Value:
        """Like :meth:`node`, returning the single result."""
        return self.node(op, *inputs, **kwargs).output

    def done(self, outputs: Sequence[Value]) -> Graph:
        """Set the outputs, verify and return the graph."""
        self.graph.set_outputs(list(outputs))
        self.graph.verify()
        return self.graph
