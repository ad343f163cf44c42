"""Filling in the tensor types that rewrites left unknown, by running the graph once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from acekit.ir.graph import Graph, Value
from acekit.ir.tensor_type import TensorType
from acekit.ops import infer_types
from acekit.runtime.codegen import to_module


class _Recorder(nn.Module):
    """Notes the type of the tensor it sees and passes it on."""

    def __init__(self, value: Value) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            self.value.type = TensorType.of(x)
        return x


def fill_unknown_types(graph: Graph, inputs: Sequence[Any]) -> int:
    """Set the type of every value without a shape by running ``graph`` on ``inputs``.

    Passes that add nodes (attention decomposition, for example) may not know the
    shapes they produce; pictures and reports want them. Each op's type rule answers
    first (:func:`acekit.ops.infer_types`); the graph runs only when some value is still
    unknown (a symbolic size, a size read from data). Returns how many were set.
    """
    inferred = 0
    unknown: list[Value] = []
    for node in graph.nodes:
        if node.op in ("parameter", "constant", "output"):
            continue
        missing = [value for value in node.outputs if value.type.shape is None]
        if not missing:
            continue
        types = infer_types(node)
        if types is None:
            unknown += missing
            continue
        for value, found in zip(node.outputs, types, strict=True):
            if value.type.shape is None:
                value.type = found
                inferred += 1
    if not unknown:
        return inferred
    module = to_module(graph, taps={value.name: _Recorder(value) for value in unknown})
    devices = [x.device for x in inputs if isinstance(x, torch.Tensor)]
    module.to(devices[0] if devices else "cpu")
    with torch.no_grad():
        module(*inputs)
    return inferred + sum(1 for value in unknown if value.type.shape is not None)
