"""Example inputs built from a graph's input types, for tracing exporters and checks."""

from __future__ import annotations

import torch

from acekit.ir.graph import Graph
from acekit.ir.tensor_type import TensorType


def example_input(type_: TensorType, *, batch: int = 1, fill: str = "zeros") -> torch.Tensor:
    """A tensor of ``type_``'s dtype and shape; symbolic dims become ``batch``.

    ``fill`` is ``"zeros"`` (tracing: values do not matter) or ``"randn"`` (checks that
    compare outputs; integer inputs get small non-negative integers, valid indices).
    """
    shape = [d if isinstance(d, int) else batch for d in (type_.shape or ())]
    dtype = type_.dtype or torch.float32
    if fill == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if fill != "randn":
        raise ValueError(f"fill must be 'zeros' or 'randn', got {fill!r}")
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    return torch.randint(0, 2, shape, dtype=dtype)


def example_inputs(
    graph: Graph, *, batch: int = 1, fill: str = "zeros"
) -> tuple[torch.Tensor, ...]:
    """One :func:`example_input` per graph input, in order."""
    return tuple(example_input(value.type, batch=batch, fill=fill) for value in graph.inputs)
