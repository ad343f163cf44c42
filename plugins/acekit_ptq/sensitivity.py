"""The ``auto-skip`` pass: keep in float the layers whose quantization hurts the output.

For each quantized layer (an op with a weight), the model runs with only that layer
quantized, on a few calibration batches; its sensitivity is the relative error of the
model output, ``||y_q - y|| / ||y||``. Layers above the settings'
``sensitivity_threshold`` are kept in float, each with a log line, and a table of the
most sensitive layers is printed so the threshold can be tuned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

import attrs
import torch

from acekit.ir.graph import Graph, Node, Value
from acekit.ir.quant import QuantSpec
from acekit.logging import get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant.context import current_context
from acekit.quant.deploy import is_weight
from acekit.quant.fidelity import flat_output, relative_error
from acekit.runtime.codegen import to_module
from acekit.settings import Settings

log = get_logger(__name__)

_TABLE_ROWS = 10


@attrs.frozen
class AutoSkip(Pass):
    """Measure per-layer sensitivity and skip the layers above the threshold."""

    name: ClassVar[str] = "auto-skip"
    summary: ClassVar[str] = "keep in float the layers whose quantization hurts the output most"

    batches: int = attrs.field(default=2, validator=attrs.validators.ge(1))

    def calibration_batches(self, settings: Settings) -> int:
        """How many calibration batches the pass reads: ``batches``."""
        return self.batches

    def run(self, graph: Graph) -> PassResult:
        """Rank the quantized layers by sensitivity; skip those above the threshold."""
        context = current_context(self.name)
        if context.calibration is None:
            raise ValueError("auto-skip needs calibration_inputs")
        threshold = context.settings.quantization.sensitivity_threshold
        layers = _quantized_layers(graph, set(context.rules.ops))
        inputs = [
            tuple(t.to(context.device) for t in batch)
            for batch in context.calibration.batches(limit=self.batches)
        ]
        with torch.no_grad():
            reference_module = to_module(graph).to(context.device)
            reference = [flat_output(reference_module(*batch)) for batch in inputs]
            scores: list[tuple[float, Node]] = []
            for node, values in progress(layers, "Measuring layer sensitivity", total=len(layers)):
                with _only(graph, values):
                    module = to_module(graph, quantize=True, rules=context.rules)
                    module = module.to(context.device)
                error = relative_error(reference, [flat_output(module(*batch)) for batch in inputs])
                scores.append((error, node))
        scores.sort(key=lambda item: -item[0])
        log.info(_table(scores, threshold))
        skipped = 0
        for error, node in scores:
            if error > threshold:
                log.info(f"Automatic Quantization: Skipping Quantization for node: '{node.name}'")
                _skip(node, layers_values(layers, node), f"sensitivity {error:.3g} > {threshold}")
                skipped += 1
        context.notes["skipped"] = int(context.notes.get("skipped", 0)) + skipped
        context.notes["quantized"] = int(context.notes.get("quantized", 0)) - skipped
        context.notes["sensitivity"] = [(node.name, error) for error, node in scores]
        return PassResult(graph, skipped > 0, {"measured": len(scores), "skipped": skipped})


def _quantized_layers(graph: Graph, ops: set[str]) -> list[tuple[Node, list[Value]]]:
    layers = []
    for node in graph.nodes:
        if node.op not in ops:
            continue
        values = [
            v
            for v in (*node.inputs, *node.outputs)
            if v.quant is not None and not v.quant.skip and v.quant.scale is not None
        ]
        if any(is_weight(v) for v in values):
            layers.append((node, values))
    return layers


def layers_values(layers: list[tuple[Node, list[Value]]], node: Node) -> list[Value]:
    """The quantized values of ``node`` as collected for the measurement."""
    return next(values for candidate, values in layers if candidate is node)


@contextlib.contextmanager
def _only(graph: Graph, keep: list[Value]) -> Iterator[None]:
    """Within the block, only the ``keep`` values carry quantization specs."""
    kept = {id(v) for v in keep}
    saved: list[tuple[Value, QuantSpec]] = []
    for node in graph.nodes:
        for value in node.outputs:
            if value.quant is not None and id(value) not in kept:
                saved.append((value, value.quant))
                value.quant = None
    try:
        yield
    finally:
        for value, spec in saved:
            value.quant = spec


def _skip(node: Node, values: list[Value], reason: str) -> None:
    skipped = QuantSpec.skipped(reason)
    for value in values:
        readers = [user for user in value.users if user is not node]
        # An input another quantized op still reads stays quantized for it.
        if is_weight(value) or value.producer is node or not readers:
            value.quant = skipped


def _table(scores: list[tuple[float, Node]], threshold: float) -> str:
    lines = [
        f"Most sensitive layers (relative output error when quantized alone; "
        f"threshold {threshold}):",
        f"  {'rank':>4}  {'error':>9}  {'layer':<40} {'op':<10} subgraph",
    ]
    for rank, (error, node) in enumerate(scores[:_TABLE_ROWS], 1):
        flag = "  <- skipped" if error > threshold else ""
        lines.append(
            f"  {rank:>4}  {error:>9.4f}  {node.name:<40} {node.op:<10} {node.subgraph}{flag}"
        )
    return "\n".join(lines)
