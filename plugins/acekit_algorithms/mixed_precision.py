"""``mixed-precision``: per-layer weight bit widths under a size or latency budget.

Each quantized layer may take any weight width the target runs (from ``bits``, those
in the rules' ``weight_bits``) or stay float. Its *sensitivity* at a width is measured
as in ``auto-skip``: the relative error of the model output, ``||y_q - y|| / ||y||`` on
a few calibration batches, with that layer's weight alone quantized at that width.
The search (:mod:`acekit_algorithms.mp_search`) picks one option per layer under the
budgets given:

* ``budget_bytes``: the layers' weights take at most this many bytes (bits / 8 per
  value, 4 for float; other tensors are the same for every choice and left out);
* ``budget_latency``: the layers' estimated latency is at most this fraction of their
  latency in float. A layer's estimate is its multiply-accumulates per sample times
  the target's relative cost of a MAC at that width (``QuantRules.mac_cost``, the
  target's cost model).

The trade-off curve (bytes, latency and predicted error at each search step) and the
per-layer choices are logged as tables, and the curve is drawn as an SVG picture
(:mod:`acekit_algorithms.mp_plot`) beside the run log or at ``plot``. A narrower
weight keeps the float range its calibrated spec covers (scale and zero point
rescaled to the new grid). Runs after ``calibrate`` (before ``bias-correction``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import attrs
import torch

from acekit.fileio import check_output_path
from acekit.ir.graph import Graph
from acekit.ir.quant import QuantSpec
from acekit.logging import current_run, get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant.context import QuantContext, current_context
from acekit.quant.fidelity import flat_output, relative_error
from acekit.quant.rules import QuantRules
from acekit.runtime.codegen import to_module
from acekit_algorithms.layers import CalibrationReader, Layer, after_ptq_reason, quantized_layers
from acekit_algorithms.mp_plot import write_curve_svg
from acekit_algorithms.mp_search import Budget, Step, predicted_error, search

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


def _optional_float(value: object) -> object:
    # Spec strings give ``budget_latency=1`` as an int.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_latency(
    instance: object, attribute: attrs.Attribute[float | None], value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, float) or not 0 < value <= 1:
        raise ValueError(
            f"{attribute.name} must be a fraction of the float model's estimated latency, "
            f"above 0 and at most 1 (e.g. 0.3); got {value!r}"
        )


def _check_plot(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not value.lower().endswith(".svg"):
        raise ValueError(f"{attribute.name} must be the path of an .svg file; got {value!r}")


@attrs.frozen
class MixedPrecision(CalibrationReader, Pass):
    """Choose each layer's weight width (or float) to fit a size and/or latency budget."""

    name: ClassVar[str] = "mixed-precision"
    summary: ClassVar[str] = (
        "per-layer weight widths under a model-size or latency budget (sensitivity)"
    )
    stage: ClassVar[str] = "after-calibration"

    #: The largest total size of the layers' weights, in bytes.
    budget_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    #: The largest estimated latency of the layers, as a fraction of theirs in float.
    budget_latency: float | None = attrs.field(
        default=None, converter=_optional_float, validator=_check_latency
    )
    #: Candidate weight widths, ':'-separated; float is always a candidate.
    bits: str = attrs.field(default="2:4:8", validator=_check_bits)
    #: Calibration batches the sensitivities are measured on.
    batches: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    #: Where the SVG picture of the trade-off curve goes (default: beside the run log,
    #: ``<log name>_mixed_precision.svg``; replaced if it exists).
    plot: str = attrs.field(default="", validator=_check_plot)

    def __attrs_post_init__(self) -> None:
        """Refuse a search without a budget."""
        if self.budget_bytes is None and self.budget_latency is None:
            raise ValueError(
                "give a budget: budget_bytes (bytes of the layers' weights) and/or "
                "budget_latency (a fraction of their estimated float latency, e.g. 0.3)"
            )

    def run(self, graph: Graph) -> PassResult:
        """Measure, search, set the chosen specs; stats: layers, bytes, latency, errors."""
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
        picture = self._picture_path()
        options = [*widths, FLOAT]
        errors = self._sensitivities(graph, context, targets, options)
        budgets = self._budgets(graph, context.rules, targets, options)
        choice, curve = search(errors, budgets)
        log.info(_curve_table(curve, budgets))
        log.info(_choice_table(targets, options, choice, errors, budgets))
        for layer, index in zip(targets, choice, strict=True):
            spec = layer.spec
            assert spec is not None
            layer.weight_value.quant = _option_spec(spec, options[index])
        totals = [budget.total(choice) for budget in budgets]
        for budget, total in zip(budgets, totals, strict=True):
            if total > budget.limit:
                log.info(
                    f"Mixed precision: the {budget.name} budget {_show(budget.name, budget.limit)} "
                    f"is below the smallest reachable {_show(budget.name, total)}: every layer "
                    "takes its cheapest width"
                )
        predicted = predicted_error(errors, choice)
        measured = self._measured(graph, context)
        stats: dict[str, float] = {
            "layers": len(targets),
            "predicted_error": predicted,
            "measured_error": measured,
        }
        for budget, total in zip(budgets, totals, strict=True):
            stats[budget.name] = total
        if picture is not None:
            panels = [
                (_axis_label(b.name), [step.totals[i] for step in curve], b.limit)
                for i, b in enumerate(budgets)
            ]
            write_curve_svg(picture, panels, [step.error for step in curve])
        where = f"; curve drawn in {picture}" if picture is not None else ""
        spent = ", ".join(
            f"{_show(b.name, t)} (budget {_show(b.name, b.limit)})"
            for b, t in zip(budgets, totals, strict=True)
        )
        log.info(
            f"Mixed precision: {len(targets)} layers, {spent}, output error predicted "
            f"{predicted:.3g}, measured {measured:.3g} with activations quantized{where}",
            pass_name=self.name,
        )
        return PassResult(graph, True, stats)

    def _picture_path(self) -> Path | None:
        """Where the curve goes, checked before any work; ``None`` without a log file."""
        if self.plot:
            return check_output_path(self.plot, overwrite=True)
        run = current_run()
        if run is None or run.path is None:
            log.info("Mixed precision: no run log file, so no picture (set plot='curve.svg')")
            return None
        return run.path.with_name(f"{run.path.stem}_mixed_precision.svg")

    def _budgets(
        self, graph: Graph, rules: QuantRules, targets: list[Layer], options: list[int]
    ) -> list[Budget]:
        budgets = []
        if self.budget_bytes is not None:
            sizes = [[_bytes(layer, graph, bits) for bits in options] for layer in targets]
            budgets.append(Budget("bytes", sizes, float(self.budget_bytes)))
        if self.budget_latency is not None:
            macs = [_macs(layer, graph) for layer in targets]
            whole = sum(macs) or 1
            latency = [
                [m * rules.mac_cost(None if bits == FLOAT else bits) / whole for bits in options]
                for m in macs
            ]
            budgets.append(Budget("latency", latency, self.budget_latency))
        return budgets

    def _inputs(self, context: QuantContext) -> list[tuple[torch.Tensor, ...]]:
        assert context.calibration is not None
        return [
            tuple(t.to(context.device) for t in batch)
            for batch in context.calibration.batches(limit=self.batches)
        ]

    def _measured(self, graph: Graph, context: QuantContext) -> float:
        """The chosen model's output error (every quantizer on) on the same batches."""
        inputs = self._inputs(context)
        with torch.no_grad():
            reference_module = to_module(graph).to(context.device)
            reference = [flat_output(reference_module(*batch)) for batch in inputs]
            quantized = to_module(graph, quantize=True).to(context.device)
            actual = [flat_output(quantized(*batch)) for batch in inputs]
        return relative_error(reference, actual)

    def _sensitivities(
        self, graph: Graph, context: QuantContext, targets: list[Layer], options: list[int]
    ) -> list[list[float]]:
        inputs = self._inputs(context)
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


def _macs(layer: Layer, graph: Graph) -> int:
    """Multiply-accumulates of ``layer`` per sample: output values x inputs per output."""
    weight = layer.weight(graph)
    per_output = weight.numel() // max(weight.shape[0], 1)
    dims = layer.node.outputs[0].type.shape or ()
    # Free dims (the batch) count once: the estimate is per sample.
    outputs = math.prod(d for d in dims[1:] if isinstance(d, int)) if len(dims) > 1 else 1
    return int(outputs * per_output)


def _show(name: str, value: float) -> str:
    return f"{value:.0f} bytes" if name == "bytes" else f"{value:.3f} x float latency"


def _axis_label(name: str) -> str:
    if name == "bytes":
        return "weights' bytes (budget dashed)"
    return "estimated latency relative to float (target cost model)"


def _curve_table(curve: list[Step], budgets: list[Budget]) -> str:
    heads = "  ".join(f"{b.name:>10}" for b in budgets)
    limits = ", ".join(f"{b.name} {_show(b.name, b.limit)}" for b in budgets)
    lines = [
        f"Mixed precision trade-off (cost against predicted output error; budget {limits}):",
        f"  {'step':>4}  {heads}  {'error':>9}",
    ]
    for i, step in enumerate(curve):
        cells = "  ".join(
            f"{total:>10.0f}" if b.name == "bytes" else f"{total:>10.4f}"
            for b, total in zip(budgets, step.totals, strict=True)
        )
        lines.append(f"  {i:>4}  {cells}  {step.error:>9.4f}")
    return "\n".join(lines)


def _choice_table(
    targets: list[Layer],
    options: list[int],
    choice: list[int],
    errors: list[list[float]],
    budgets: list[Budget],
) -> str:
    head = "  ".join(f"{('float' if b == FLOAT else f'w{b}'):>8}" for b in options)
    costs = "  ".join(f"{b.name:>9}" for b in budgets)
    lines = [
        "Mixed precision per layer (relative output error when alone at each width; * chosen):",
        f"  {'layer':<40} {costs}  {head}",
    ]
    for i, (layer, index, row) in enumerate(zip(targets, choice, errors, strict=True)):
        spent = "  ".join(
            f"{b.costs[i][index]:>9.0f}" if b.name == "bytes" else f"{b.costs[i][index]:>9.4f}"
            for b in budgets
        )
        cells = "  ".join(
            f"{error:>7.4f}{'*' if j == index else ' '}" for j, error in enumerate(row)
        )
        lines.append(f"  {layer.node.name:<40} {spent}  {cells}")
    return "\n".join(lines)
