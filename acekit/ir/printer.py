"""A stable text form of a Graph, for golden tests, logs and debugging."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from acekit.ir.graph import Graph, Node


def format_attr(value: Any) -> str:
    """Stable text for an attribute value."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {format_attr(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, torch.dtype):
        return str(value)
    return repr(value)


def format_node(node: Node, *, locations: bool = False) -> str:
    """One line for ``node``: results, op, inputs, attributes, types, specs, subgraph."""
    args = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(node.attrs.items()))
    text = f"{node.op}({args})" + (f" {{{attrs}}}" if attrs else "")
    if node.outputs:
        results = ", ".join(f"%{v.name}" for v in node.outputs)
        types = ", ".join(
            str(v.type) + (f" {v.quant}" if v.quant is not None else "") for v in node.outputs
        )
        text = f"{results} = {text} : {types}"
    notes = []
    if node.subgraph:
        notes.append(node.subgraph)
    if node.source_name and node.source_name != node.name:
        notes.append(f"from {node.source_name}")
    if locations and node.source_location:
        notes.append(node.source_location)
    return text + (f"  # {'; '.join(notes)}" if notes else "")


def format_graph(graph: Graph, *, locations: bool = False) -> str:
    """The whole graph as stable text (same graph, same text)."""
    lines = [f"graph {graph.name} {{"]
    lines += ["  " + format_node(node, locations=locations) for node in graph.nodes]
    lines.append("}")
    return "\n".join(lines)
