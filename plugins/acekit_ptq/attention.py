"""The ``decompose-attention`` pass: attention as linear, matmul and softmax nodes.

``multihead_attention`` and ``scaled_dot_product_attention`` are single IR ops, but the
integer work inside them (the projections and the two attention matmuls) can only be
quantized when each is its own node. This pass rewrites self-attention into
``linear -> unflatten -> permute -> unbind -> mul(scale) -> matmul -> softmax ->
matmul -> transpose -> flatten -> linear`` with the same result; the projections keep
the original parameters (same state_dict keys). SDPA masks, additive or boolean, are
kept. Forms it does not cover (cross attention, masks on nn.MultiheadAttention,
returned attention weights, dropout, causal or grouped-query SDPA) stay one float op,
and the log says so.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs

from acekit.ir.graph import Graph, Node, Value
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult

log = get_logger(__name__)


@attrs.frozen
class DecomposeAttention(Pass):
    """Rewrite attention ops into the primitive ops a quantizer can annotate."""

    name: ClassVar[str] = "decompose-attention"
    summary: ClassVar[str] = "attention ops as linear/matmul/softmax nodes, so they quantize"

    def run(self, graph: Graph) -> PassResult:
        """Decompose every attention node of a supported form."""
        done = kept = 0
        for node in list(graph.nodes):
            if node.op == "multihead_attention":
                reason = _mha_unsupported(node)
                rewrite = _decompose_mha
            elif node.op == "scaled_dot_product_attention":
                reason = _sdpa_unsupported(node)
                rewrite = _decompose_sdpa
            else:
                continue
            if reason is not None:
                log.info(f"Attention '{node.name}' stays one float op: {reason}")
                kept += 1
                continue
            rewrite(graph, node)
            done += 1
        if done:
            log.info(f"Decomposed {done} attention layers into quantizable ops")
        return PassResult(graph, done > 0, {"decomposed": done, "kept": kept})


def _mha_unsupported(node: Node) -> str | None:
    query, key, value = node.inputs[:3]
    if not (query is key is value):
        return "not self-attention (query, key and value differ)"
    if len(node.inputs) > 7:
        return "it has an attention or key-padding mask"
    if node.outputs[1].uses:
        return "its attention weights are used"
    if node.attrs.get("dropout", 0.0) and node.attrs.get("training"):
        return "it applies dropout"
    if node.attrs.get("is_causal"):
        return "it is causal"
    shape = query.type.shape
    if shape is not None and len(shape) != 3:
        return "its input is not batched"
    return None


def _sdpa_unsupported(node: Node) -> str | None:
    if node.attrs.get("is_causal") or node.attrs.get("enable_gqa"):
        return "it is causal or grouped-query"
    if node.attrs.get("dropout_p", 0.0):
        return "it applies dropout"
    if node.attrs.get("scale") is None and _last_dim(node.inputs[0]) is None:
        return "the head size is unknown"
    return None


class _Emitter:
    """Adds nodes before ``anchor`` in its subgraph, named after it."""

    def __init__(self, graph: Graph, anchor: Node) -> None:
        self.graph = graph
        self.anchor = anchor

    def __call__(
        self, op: str, inputs: list[Value], suffix: str, outputs: int = 1, **attributes: object
    ) -> Node:
        return self.graph.add_node(
            op,
            inputs,
            attributes,
            name=f"{self.anchor.name}_{suffix}",
            subgraph=self.anchor.subgraph,
            source_name=self.anchor.source_name,
            source_location=self.anchor.source_location,
            num_outputs=outputs,
            before=self.anchor,
        )

    def constant(self, value: float, suffix: str) -> Value:
        return self("constant", [], suffix, value=value).output


def _decompose_mha(graph: Graph, node: Node) -> None:
    emit = _Emitter(graph, node)
    x, _, _, in_weight, in_bias, out_weight, out_bias = node.inputs
    heads = int(node.attrs["num_heads"])
    embed = graph.tensors[str(_producer(in_weight).attrs["ref"])].shape[1]
    head_dim = embed // heads
    batch_first = bool(node.attrs.get("batch_first", False))
    if not batch_first:  # (L, B, E) -> (B, L, E)
        x = emit("transpose", [x], "to_batch_first", dim0=0, dim1=1).output
    qkv = emit("linear", [x, in_weight, in_bias], "in_proj").output
    split = emit("unflatten", [qkv], "split_heads", dim=-1, sizes=(3, heads, head_dim)).output
    moved = emit("permute", [split], "heads_first", dims=(2, 0, 3, 1, 4)).output
    q, k, v = emit("unbind", [moved], "qkv", outputs=3, dim=0).outputs
    context = _attention(emit, q, k, v, None, 1.0 / math.sqrt(head_dim))
    merged = emit("transpose", [context], "merge_heads", dim0=1, dim1=2).output
    flat = emit("flatten", [merged], "concat_heads", start_dim=2, end_dim=-1).output
    out = emit("linear", [flat, out_weight, out_bias], "out_proj").output
    if not batch_first:
        out = emit("transpose", [out], "to_sequence_first", dim0=0, dim1=1).output
    graph.replace_all_uses(node.outputs[0], out)
    graph.erase(node)


def _decompose_sdpa(graph: Graph, node: Node) -> None:
    emit = _Emitter(graph, node)
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    scale = node.attrs.get("scale")
    if scale is None:
        head_dim = _last_dim(q)
        assert head_dim is not None
        scale = 1.0 / math.sqrt(head_dim)
    out = _attention(emit, q, k, v, mask, float(scale))
    graph.replace_all_uses(node.output, out)
    graph.erase(node)


def _attention(
    emit: _Emitter, q: Value, k: Value, v: Value, mask: Value | None, scale: float
) -> Value:
    scaled = emit("mul", [q, emit.constant(scale, "scale")], "scale_query").output
    keys = emit("transpose", [k], "keys_t", dim0=-2, dim1=-1).output
    scores = emit("matmul", [scaled, keys], "scores").output
    if mask is not None and _is_float(mask):
        scores = emit("add", [scores, mask], "masked").output
    elif mask is not None:  # boolean: True marks the keys that take part
        hidden = emit.constant(float("-inf"), "masked_out")
        scores = emit("where", [mask, scores, hidden], "masked").output
    probs = emit("softmax", [scores], "probs", dim=-1).output
    return emit("matmul", [probs, v], "context").output


def _producer(value: Value) -> Node:
    assert value.producer is not None
    return value.producer


def _is_float(value: Value) -> bool:
    dtype = value.type.dtype
    return dtype is None or dtype.is_floating_point


def _last_dim(value: Value) -> int | None:
    shape = value.type.shape
    if not shape or not isinstance(shape[-1], int):
        return None
    return shape[-1]
