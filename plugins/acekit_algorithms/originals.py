"""The float weights and biases from before an algorithm changed them.

``adaround`` and ``gptq`` express their rounding as weights moved onto the integer grid
and ``bias-correction`` moves biases, so the graph no longer holds the float model.
Algorithms that compare against the float model find the original tensors here: the
first algorithm to change a tensor after calibration records it in the run's notes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor

from acekit.ir.graph import Graph
from acekit.quant.context import QuantContext

_NOTE = "float_weights"


def remember(context: QuantContext, ref: str, tensor: Tensor) -> None:
    """Record ``tensor`` as the float value of ``ref`` unless one is recorded already."""
    saved: dict[str, Tensor] = context.notes.setdefault(_NOTE, {})
    saved.setdefault(ref, tensor.detach().clone())


def original(context: QuantContext, graph: Graph, ref: str) -> Tensor:
    """The float value of ``ref``: the recorded one, else what the graph holds."""
    saved: dict[str, Tensor] = context.notes.get(_NOTE, {})
    return saved.get(ref, graph.tensors[ref])


@contextlib.contextmanager
def float_reference(graph: Graph, context: QuantContext) -> Iterator[None]:
    """Within the block, ``graph`` holds the recorded float weights."""
    saved: dict[str, Tensor] = context.notes.get(_NOTE, {})
    current = {ref: graph.tensors[ref] for ref in saved if ref in graph.tensors}
    try:
        for ref in current:
            graph.tensors[ref] = saved[ref]
        yield
    finally:
        graph.tensors.update(current)
