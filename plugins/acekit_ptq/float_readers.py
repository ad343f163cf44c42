"""Float readers of a quantized tensor read it unrounded.

A tensor is quantized for the ops the target runs on integers (the linear layers after a
LayerNorm), but other readers of the same tensor run in float anyway: the residual add
of a post-norm transformer block reads the LayerNorm output too. Marking the tensor
where it is produced would make the float readers see the rounded tensor as well, so
the rounding error of every block enters the residual stream (on all-MiniLM-L6-v2 that
alone costs 0.003 of sentence-embedding cosine at W8A8). Instead, the integer readers
read an ``identity`` of the tensor that carries the spec, and the float readers keep the
original. The deployed graph is the same size: the quantize/dequantize pair sits on the
branch to the integer ops (``x -> Q -> DQ -> MatMul`` and ``x -> Add``) and the runtime
runs the float readers in float either way.

A tensor an op quantizes as its own *output* (``DQ -> Conv -> Q``, where the runtime
fuses the requantization into the kernel) is left as it is: splitting it would break the
fusion.
"""

from __future__ import annotations

from collections.abc import Collection

from acekit.ir.graph import Graph, Use, Value
from acekit.quant.deploy import is_weight


def split_float_readers(
    graph: Graph, quantized_uses: Collection[tuple[int, int]], produced: Collection[int]
) -> int:
    """Give the integer readers of each mixed-use quantized tensor their own copy.

    ``quantized_uses`` holds ``(id(node), input index)`` of every read that takes the
    tensor quantized; ``produced`` the ``id`` of the values quantized as an op's output.
    Returns the number of tensors split.
    """
    split = 0
    for node in list(graph.nodes):
        for value in node.outputs:
            spec = value.quant
            if spec is None or spec.skip or id(value) in produced or is_weight(value):
                continue
            uses = value.uses
            quantized = [u for u in uses if (id(u.node), u.index) in quantized_uses]
            if not quantized or len(quantized) == len(uses):
                continue
            _split(graph, value, quantized)
            split += 1
    return split


def _split(graph: Graph, value: Value, quantized: list[Use]) -> None:
    first = quantized[0].node
    for use in quantized[1:]:
        if use.node.is_before(first):
            first = use.node
    producer = value.producer
    assert producer is not None
    twin = graph.add_node(
        "identity",
        [value],
        name=f"{producer.name}_quantized",
        subgraph=first.subgraph,
        source_name=producer.source_name,
        types=[value.type],
        before=first,
    ).output
    for use in quantized:
        use.node.set_input(use.index, twin)
    twin.quant, value.quant = value.quant, None
