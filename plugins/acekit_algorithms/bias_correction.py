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


def output_means(
    graph: Graph,
    context: QuantContext,
    layers: Sequence[Layer],
    weights: Sequence[Tensor],
    *,
    quantized_inputs: bool,
    batches: int,
) -> list[Tensor]:
    """Each layer's per-channel output mean on the calibration data with ``weights``.

    The layers read their inputs as the quantized model produces them with
    ``quantized_inputs``, else as the float model (before any rounding algorithm) does.
    """
    sums: list[Tensor | None] = [None] * len(layers)
    count = 0
    values = [layer.input_value for layer in layers]
    scope = contextlib.nullcontext() if quantized_inputs else float_reference(graph, context)
    biases = [layer.bias(graph) for layer in layers]
    with scope:
        for seen in stream(graph, context, values, quantize=quantized_inputs, batches=batches):
            count += 1
            for i, layer in enumerate(layers):
                x = seen[layer.input_value.name]
                bias = biases[i]
                out = layer.forward(
                    x, weights[i].to(x.device), None if bias is None else bias.detach().to(x.device)
                )
                mean = layer.channel_mean(out)
                total = sums[i]
                sums[i] = mean if total is None else total + mean
    return [total / count for total in sums if total is not None]


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
        reference = output_means(
            graph, context, targets, originals, quantized_inputs=False, batches=batches
        )

        def measure(layers: Sequence[Layer]) -> list[Tensor]:
            return output_means(
                graph,
                context,
                layers,
                quantized_weights(graph, layers),
                quantized_inputs=self.sequential,
                batches=batches,
            )

        measured = measure(targets)
        before = mean_abs_shift(measured, reference)
        corrected = []
        for i, layer in enumerate(progress(targets, "Bias correction", total=len(targets))):
            # Sequential: measured with the layers before it corrected.
            (shift,) = measure([layer]) if self.sequential else (measured[i],)
            corrected.append(_correct(graph, context, layer, shift - reference[i]))
        after = mean_abs_shift(measure(corrected), reference)
        log.info(
            f"Bias correction: {len(corrected)} layers, mean |shift| {before:.3g} -> {after:.3g}",
            pass_name=self.name,
        )
        return PassResult(
            graph,
            True,
            {"layers": len(corrected), "shift_before": before, "shift_after": after},
        )


def _correct(graph: Graph, context: QuantContext, layer: Layer, shift: Tensor) -> Layer:
    """Subtract ``shift`` from ``layer``'s bias (added as zeros where it has none)."""
    return layer.add_to_bias(graph, -shift, context)
