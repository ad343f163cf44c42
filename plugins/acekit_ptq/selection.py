"""Which nodes stay in floating point, and with which bit widths the others quantize.

Reads the per-layer and global settings: ``skip_quantization``,
``skip_quantization_until``, ``skip_quantization_downstream``, per-layer bit widths and
``skip_tail_quantization``. A settings key names a node (its name or its source name)
or a subgraph path, which covers every node inside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import attrs

from acekit.ir.graph import Graph, Node
from acekit.quant.layers import UnknownLayerError, matches, unknown_key_message
from acekit.quant.rules import QuantRules
from acekit.settings import LayerQuantizationSettings, Settings


@attrs.frozen
class Selection:
    """The outcome: skipped nodes with the reason, and per-node bit overrides."""

    skipped: Mapping[str, str]
    weight_bits: Mapping[str, int]
    activation_bits: Mapping[str, int]


def downstream(starts: Iterable[Node]) -> list[Node]:
    """``starts`` and every node that reads, directly or not, one of their outputs."""
    seen: dict[int, Node] = {}
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for value in node.outputs:
            queue.extend(value.users)
    return list(seen.values())


def select(graph: Graph, settings: Settings, rules: QuantRules) -> Selection:
    """Apply the skip and bit-width settings to ``graph`` under the target's ``rules``."""
    nodes = [n for n in graph.nodes if n.op not in ("input", "output", "parameter", "constant")]
    skipped: dict[str, str] = {}
    weight_bits: dict[str, int] = {}
    activation_bits: dict[str, int] = {}
    for key, layer in settings.layers.items():
        covered = [n for n in nodes if matches(n, key)]
        if not covered:
            raise UnknownLayerError(unknown_key_message(key, nodes))
        _apply_layer(key, layer, covered, nodes, skipped, weight_bits, activation_bits)
    if settings.quantization.skip_tail_quantization:
        for node in tail(nodes, rules):
            skipped.setdefault(node.name, "skip_tail_quantization")
    return Selection(skipped, weight_bits, activation_bits)


def tail(nodes: list[Node], rules: QuantRules) -> list[Node]:
    """The last weighted layers (no weighted layer downstream) and everything after them."""
    weighted = [n for n in nodes if (rule := rules.ops.get(n.op)) is not None and rule.weighted]
    weighted_ids = {id(n) for n in weighted}
    last = [
        node
        for node in weighted
        if not any(id(other) in weighted_ids for other in downstream([node])[1:])
    ]
    return downstream(last)


def _apply_layer(
    key: str,
    layer: LayerQuantizationSettings,
    covered: list[Node],
    nodes: list[Node],
    skipped: dict[str, str],
    weight_bits: dict[str, int],
    activation_bits: dict[str, int],
) -> None:
    if layer.skip_quantization:
        for node in covered:
            skipped.setdefault(node.name, f"layers[{key!r}].skip_quantization")
    if layer.skip_quantization_downstream:
        for node in downstream(covered):
            skipped.setdefault(node.name, f"layers[{key!r}].skip_quantization_downstream")
    if layer.skip_quantization_until is not None:
        until = [n for n in nodes if matches(n, layer.skip_quantization_until)]
        if not until:
            raise UnknownLayerError(
                f"layers[{key!r}].skip_quantization_until: "
                + unknown_key_message(layer.skip_quantization_until, nodes)
            )
        resumed = {id(n) for n in downstream(until)}
        for node in downstream(covered):
            if id(node) not in resumed:
                skipped.setdefault(node.name, f"layers[{key!r}].skip_quantization_until")
    for node in covered:
        if layer.weights_num_bits is not None:
            weight_bits[node.name] = layer.weights_num_bits
        if layer.activations_num_bits is not None:
            activation_bits[node.name] = layer.activations_num_bits
