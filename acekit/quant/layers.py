"""Naming layers in settings: a node's name or source name, or a subgraph path."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from acekit.ir.graph import Graph, Node


class UnknownLayerError(KeyError):
    """A per-layer settings key names no node and no subgraph of the model."""

    def __str__(self) -> str:
        return str(self.args[0])


def matches(node: Node, key: str) -> bool:
    """Whether settings key ``key`` covers ``node`` (by name or subgraph path)."""
    if key in (node.name, node.source_name):
        return True
    return node.subgraph == key or node.subgraph.startswith(key + "/")


def check_layer_keys(graph: Graph, keys: Iterable[str]) -> None:
    """Raise :class:`UnknownLayerError` for the first key that covers no node."""
    nodes = list(graph.nodes)
    for key in keys:
        if not any(matches(node, key) for node in nodes):
            raise UnknownLayerError(unknown_key_message(key, nodes))


def unknown_key_message(key: str, nodes: list[Node]) -> str:
    """Say that ``key`` names nothing, with the closest node names and subgraphs."""
    names = sorted({n.name for n in nodes} | {n.subgraph for n in nodes if n.subgraph})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"per-layer settings name {key!r}, which is no node or subgraph of the model{hint}"
