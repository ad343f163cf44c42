"""``bias-correction``: cancel the mean shift quantization puts on each output channel.

Rounding a layer's weights moves the mean of each output channel:
``E[f(x, W_q)] != E[f(x, W)]``. Measured on the calibration data, that shift is
subtracted from the layer's bias (a zero bias is added where the layer had none), so
the quantized layer's output has the float layer's mean again. By default all layers
are measured in one pass on float inputs (NNCF's fast bias correction);
``sequential=true`` is the empirical variant of Nagel et al. 2019: layers corrected in
execution order, each measured in the quantized model (``E[f(x_q, W_q)]``) with the
layers before it already corrected, which also cancels what activation rounding shifts.

Runs after ``calibrate``; the float reference is the model before any weight-rounding
algorithm (``adaround``, ``gptq``) changed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import ClassVar

import attrs
import torch
from torch import Tensor

from acekit.ir.graph import Graph
from acekit.logging import get_logger, progress
from acekit.passes import Pass, PassResult
from acekit.quant.context import QuantContext, current_context
from acekit_algorithms.layers import (
    CalibrationReader,
    Layer,
    after_ptq_reason,
    calibration_batches,
    fake_quantized,
    quantized_layers,
    stream,
)
from acekit_algorithms.originals import float_reference

log = get_logger(__name__)


@attrs.define
class MeanInputs:
    """A layer's calibration inputs, summed over samples (one sum per input shape).

    The layers are linear in their input, so the mean of ``f(x, W)`` over the data is
    ``f`` of the mean input, and one single-sample forward per shape gives the output
    mean a pass over every batch would: bias correction then streams the model once
    and never recomputes a layer on the whole data.
    """

    layer: Layer
    sums: dict[tuple[int, ...], Tensor] = attrs.Factory(dict)
    batches: int = 0

    def add(self, x: Tensor) -> None:
        """Add one batch: its mean over samples (over every position, for linear)."""
        if self.layer.node.op == "linear":
            mean = x.reshape(-1, x.shape[-1]).mean(0, keepdim=True)
        else:
            mean = x.mean(0, keepdim=True)
        key = tuple(mean.shape)
        total = self.sums.get(key)
        self.sums[key] = mean if total is None else total + mean
        self.batches += 1

    def output_mean(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """The per-channel output mean over the data of the layer with ``weight``, ``bias``."""
        layer = self.layer
        means = [
            layer.channel_mean(layer.forward(total, weight.to(total.device)))
            for total in self.sums.values()
        ]
        mean = torch.stack(means).sum(0) / max(self.batches, 1)
        return mean if bias is None else mean + bias.detach().to(mean.device)


def mean_inputs(
    graph: Graph,
    context: QuantContext,
    layers: Sequence[Layer],
    *,
    quantized_inputs: bool,
    batches: int,
) -> list[MeanInputs]:
    """Each layer's summed inputs, in one pass over ``batches`` calibration batches.

    The layers read their inputs as the quantized model produces them with
    ``quantized_inputs``, else as the float model (before any rounding algorithm) does.
    """
    found = [MeanInputs(layer) for layer in layers]
    scope = contextlib.nullcontext() if quantized_inputs else float_reference(graph, context)
    with scope:
        values = [layer.input_value for layer in layers]
        for seen in stream(graph, context, values, quantize=quantized_inputs, batches=batches):
            for inputs in found:
                inputs.add(seen[inputs.layer.input_value.name])
    return found


def quantized_weights(graph: Graph, layers: Sequence[Layer]) -> list[Tensor]:
    """The layers' weights as they compute quantized (fake-quantized with their specs)."""
    found = []
    for layer in layers:
        spec = layer.spec
        assert spec is not None
        found.append(fake_quantized(layer.weight(graph).detach(), spec))
    return found


def mean_abs_shift(quantized: Sequence[Tensor], reference: Sequence[Tensor]) -> float:
    """The mean over layers and channels of ``|quantized - reference|``."""
    shifts = [(q - r).abs().mean() for q, r in zip(quantized, reference, strict=True)]
    return float(torch.stack(shifts).mean()) if shifts else 0.0


@attrs.frozen
class BiasCorrection(CalibrationReader, Pass):
    """Subtract each quantized layer's measured output-mean shift from its bias."""

    name: ClassVar[str] = "bias-correction"
    summary: ClassVar[str] = "correct the mean output shift of quantized layers (calibration data)"
    stage: ClassVar[str] = "after-calibration"

    #: ``false`` (default): every layer's weight-rounding shift, measured on float inputs
    #: in one pass (NNCF's fast bias correction). ``true``: each layer measured in the
    #: quantized model after correcting the layers before it (one pass over the data per
    #: layer; also cancels the shift activation rounding causes).
    sequential: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: Calibration batches measured (default: the settings' ``stats_steps``).
    batches: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )

    def run(self, graph: Graph) -> PassResult:
        """Correct the layers in order; stats: ``layers``, mean shifts before/after."""
        context = current_context(self.name)
        targets = quantized_layers(graph)
        reason = after_ptq_reason(context, targets)
        if reason is not None:
            log.info(f"Bias correction: did nothing: {reason}")
            return PassResult(graph, False, {"layers": 0})
        batches = calibration_batches(context, self.batches)
        originals = [layer.float_weight(context, graph) for layer in targets]
        floats = mean_inputs(graph, context, targets, quantized_inputs=False, batches=batches)
        reference = [inputs.output_mean(w) for inputs, w in zip(floats, originals, strict=True)]
        # Sequential measures in the quantized model (activation rounding's shift too).
        measuring = (
            mean_inputs(graph, context, targets, quantized_inputs=True, batches=batches)
            if self.sequential
            else floats
        )
        weights = quantized_weights(graph, targets)
        measured = [seen.output_mean(w) for seen, w in zip(measuring, weights, strict=True)]
        before = mean_abs_shift(measured, reference)
        corrected, deltas = [], []
        for i, layer in enumerate(progress(targets, "Bias correction", total=len(targets))):
            shift = measured[i]
            if self.sequential and i > 0:
                # Measured again with the layers before it corrected.
                (inputs,) = mean_inputs(
                    graph, context, [layer], quantized_inputs=True, batches=batches
                )
                shift = inputs.output_mean(quantized_weights(graph, [layer])[0])
            deltas.append(reference[i] - shift)
            corrected.append(layer.add_to_bias(graph, deltas[-1], context))
        after = mean_abs_shift(
            self._after(graph, context, corrected, deltas, floats, batches), reference
        )
        log.info(
            f"Bias correction: {len(corrected)} layers, mean |shift| {before:.3g} -> {after:.3g}",
            pass_name=self.name,
        )
        return PassResult(
            graph,
            True,
            {"layers": len(corrected), "shift_before": before, "shift_after": after},
        )

    def _after(
        self,
        graph: Graph,
        context: QuantContext,
        corrected: Sequence[Layer],
        deltas: Sequence[Tensor],
        floats: Sequence[MeanInputs],
        batches: int,
    ) -> list[Tensor]:
        """The corrected layers' output means (bias change included, the rest of the bias
        left out as in the reference): on the float inputs, or the quantized model's
        (one more pass) when ``sequential``."""
        inputs = (
            mean_inputs(graph, context, corrected, quantized_inputs=True, batches=batches)
            if self.sequential
            else floats
        )
        weights = quantized_weights(graph, corrected)
        return [
            seen.output_mean(weight, delta)
            for seen, weight, delta in zip(inputs, weights, deltas, strict=True)
        ]
