"""``mixed-precision``: per-layer weight bit widths under a model-size budget.

Each quantized layer may take any weight width the target runs (from ``bits``, those
in the rules' ``weight_bits``) or stay float. Its *sensitivity* at a width is measured
as in ``auto-skip``: the relative error of the model output, ``||y_q - y|| / ||y||`` on
a few calibration batches, with that layer's weight alone quantized at that width.
Assuming the squared errors add up, a greedy search starts every layer at
its smallest option and repeatedly takes the upgrade with the largest error reduction
per added byte that still fits the budget. The trade-off curve (size against the
predicted error, one row per step) and the chosen widths are logged as tables.

Size counts the weights of the layers (bits / 8 bytes per value, 4 for float); other
tensors are the same for every choice and are left out. A narrower weight keeps the
float range its calibrated spec covers (scale and zero point rescaled to the new grid).
Runs after ``calibrate`` (before ``bias-correction``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import attrs
import torch

from acekit.ir.graph import Graph
from acekit.ir.quant import QuantSpec
from acekit.logging import get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant.context import QuantContext, current_context
from acekit.quant.fidelity import flat_output, relative_error
from acekit.runtime.codegen import to_module
from acekit_algorithms.layers import CalibrationReader, Layer, after_ptq_reason, quantized_layers

log = get_logger(__name__)

FLOAT = 32


def _check_bits(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        widths = [int(part) for part in value.split(":") if part]
    except ValueError:
        widths = []
    if not widths or any(not 2 <= b <= 16 for b in widths):
        raise ValueError(
            f"{attribute.name} must be weight widths from 2 to 16 separated by ':' "
            f"(e.g. '4:8'); got {value!r}"
        )


def respec(spec: QuantSpec, bits: int) -> QuantSpec:
    """``spec`` at ``bits`` covering the same float range (scale and zero point rescaled)."""
    assert spec.scale is not None and spec.zero_point is not None
    narrow = attrs.evolve(spec, bits=bits, scale=None, zero_point=None)
    ratio = (spec.qmax - spec.qmin) / (narrow.qmax - narrow.qmin)
    scales, zeros = [], []
    for scale, zero in zip(spec.scale, spec.zero_point, strict=True):
        low = (spec.qmin - zero) * scale
        new = scale * ratio
        scales.append(new)
        if spec.symmetric:
            zeros.append(0 if spec.signed else 2 ** (bits - 1))
        else:
            zeros.append(int(min(max(round(narrow.qmin - low / new), narrow.qmin), narrow.qmax)))
    return attrs.evolve(narrow, scale=tuple(scales), zero_point=tuple(zeros))


def _option_spec(spec: QuantSpec, bits: int) -> QuantSpec:
    if bits == FLOAT:
        return QuantSpec.skipped("mixed precision: kept in float")
    return spec if bits == spec.bits else respec(spec, bits)


@contextmanager
def _alone(graph: Graph, layer: Layer, spec: QuantSpec) -> Iterator[None]:
    """Within the block, ``layer``'s weight with ``spec`` is the only quantized value."""
    saved = [(v, v.quant) for n in graph.nodes for v in n.outputs if v.quant is not None]
    for value, _ in saved:
        value.quant = None
    layer.weight_value.quant = spec
    try:
        yield
    finally:
        layer.weight_value.quant = None
        for value, quant in saved:
            value.quant = quant


@attrs.frozen
class MixedPrecision(CalibrationReader, Pass):
    """Choose each layer's weight width (or float) to fit a size budget."""

    name: ClassVar[str] = "mixed-precision"
    summary: ClassVar[str] = "per-layer weight widths under a model-size budget (sensitivity)"
    stage: ClassVar[str] = "after-calibration"

    #: The largest total size of the layers' weights, in bytes.
    budget_bytes: int = attrs.field(validator=attrs.validators.ge(1))
    #: Candidate weight widths, ':'-separated; float is always a candidate.
    bits: str = attrs.field(default="2:4:8", validator=_check_bits)
    #: Calibration batches the sensitivities are measured on.
    batches: int = attrs.field(default=2, validator=attrs.validators.ge(1))

    def run(self, graph: Graph) -> PassResult:
        """Measure, search, set the chosen specs; stats: layers, bytes, predicted error."""
        context = current_context(self.name)
        targets = quantized_layers(graph)
        reason = after_ptq_reason(context, targets)
        widths = sorted(
            {int(b) for b in self.bits.split(":") if b} & set(context.rules.weight_bits)
        )
        if reason is None and not widths:
            runs = context.rules.weight_bits
            reason = f"the target runs none of the widths {self.bits} (it runs {runs})"
        if reason is not None:
            log.info(f"Mixed precision: did nothing: {reason}")
            return PassResult(graph, False, {"layers": 0})
        options = [*widths, FLOAT]
        errors = self._sensitivities(graph, context, targets, options)
        sizes = [[_bytes(layer, graph, bits) for bits in options] for layer in targets]
        choice, curve = _search(errors, sizes, self.budget_bytes)
        log.info(_curve_table(curve, self.budget_bytes))
        log.info(_choice_table(targets, options, choice, errors, sizes))
        for layer, index in zip(targets, choice, strict=True):
            spec = layer.spec
            assert spec is not None
            layer.weight_value.quant = _option_spec(spec, options[index])
        total = sum(sizes[i][c] for i, c in enumerate(choice))
        predicted = math.sqrt(sum(errors[i][c] ** 2 for i, c in enumerate(choice)))
        if total > self.budget_bytes:
            log.info(
                f"Mixed precision: the budget {self.budget_bytes} bytes is below the smallest "
                f"reachable size {total} bytes: every layer takes its smallest width"
            )
        log.info(
            f"Mixed precision: {len(targets)} layers, {total} bytes of weights "
            f"(budget {self.budget_bytes}), predicted output error {predicted:.3g}",
            pass_name=self.name,
        )
        return PassResult(
            graph, True, {"layers": len(targets), "bytes": total, "predicted_error": predicted}
        )

    def _sensitivities(
        self, graph: Graph, context: QuantContext, targets: list[Layer], options: list[int]
    ) -> list[list[float]]:
        assert context.calibration is not None
        inputs = [
            tuple(t.to(context.device) for t in batch)
            for batch in context.calibration.batches(limit=self.batches)
        ]
        with torch.no_grad():
            module = to_module(graph).to(context.device)
            reference = [flat_output(module(*batch)) for batch in inputs]
        errors: list[list[float]] = []
        for layer in progress(targets, "Measuring mixed-precision sensitivity", total=len(targets)):
            spec = layer.spec
            assert spec is not None
            row = []
            for bits in options:
                with _alone(graph, layer, _option_spec(spec, bits)), torch.no_grad():
                    quantized = to_module(graph, quantize=True).to(context.device)
                    actual = [flat_output(quantized(*batch)) for batch in inputs]
                row.append(relative_error(reference, actual))
            errors.append(row)
        return errors


def _bytes(layer: Layer, graph: Graph, bits: int) -> int:
    return math.ceil(layer.weight(graph).numel() * bits / 8)


def _search(
    errors: list[list[float]], sizes: list[list[int]], budget: int
) -> tuple[list[int], list[tuple[int, float]]]:
    """Greedy upgrades by squared-error reduction per byte; the choice and the curve."""
    # Each layer starts at its smallest option.
    choice = [row.index(min(row)) for row in sizes]
    total = sum(sizes[i][c] for i, c in enumerate(choice))
    squared = sum(errors[i][c] ** 2 for i, c in enumerate(choice))
    curve = [(total, math.sqrt(squared))]
    while True:
        best: tuple[float, int, int] | None = None
        for layer, current in enumerate(choice):
            for option, size in enumerate(sizes[layer]):
                extra = size - sizes[layer][current]
                gain = errors[layer][current] ** 2 - errors[layer][option] ** 2
                if extra <= 0 or gain <= 0 or total + extra > budget:
                    continue
                if best is None or gain / extra > best[0]:
                    best = (gain / extra, layer, option)
        if best is None:
            return choice, curve
        _, layer, option = best
        total += sizes[layer][option] - sizes[layer][choice[layer]]
        squared += errors[layer][option] ** 2 - errors[layer][choice[layer]] ** 2
        choice[layer] = option
        curve.append((total, math.sqrt(max(squared, 0.0))))


def _curve_table(curve: list[tuple[int, float]], budget: int) -> str:
    lines = [
        "Mixed precision trade-off (weights' bytes against predicted output error; "
        f"budget {budget}):",
        f"  {'step':>4}  {'bytes':>10}  {'error':>9}",
    ]
    lines += [f"  {i:>4}  {size:>10}  {error:>9.4f}" for i, (size, error) in enumerate(curve)]
    return "\n".join(lines)


def _choice_table(
    targets: list[Layer],
    options: list[int],
    choice: list[int],
    errors: list[list[float]],
    sizes: list[list[int]],
) -> str:
    head = "  ".join(f"{('float' if b == FLOAT else f'w{b}'):>8}" for b in options)
    lines = [
        "Mixed precision per layer (relative output error when alone at each width; * chosen):",
        f"  {'layer':<40} {'bytes':>9}  {head}",
    ]
    for layer, index, row, size in zip(targets, choice, errors, sizes, strict=True):
        cells = "  ".join(
            f"{error:>7.4f}{'*' if i == index else ' '}" for i, error in enumerate(row)
        )
        lines.append(f"  {layer.node.name:<40} {size[index]:>9}  {cells}")
    return "\n".join(lines)
