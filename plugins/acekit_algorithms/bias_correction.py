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
    Layer,
    calibration_batches,
    ensure_bias,
    fake_quantized,
    no_data_reason,
    quantized_layers,
    set_tensor,
    stream,
)
from acekit_algorithms.originals import float_reference

log = get_logger(__name__)


def output_means(
    graph: Graph,
    context: QuantContext,
    layers: Sequence[Layer],
    *,
    quantize: bool,
    batches: int,
    float_inputs: bool = False,
) -> list[Tensor]:
    """Each layer's per-channel output mean on the calibration data.

    With ``quantize`` the layer computes with its fake-quantized weight and reads its
    input as the quantized model produces it (as the float model does with
    ``float_inputs``); otherwise everything is float.
    """
    sums: list[Tensor | None] = [None] * len(layers)
    count = 0
    weights = []
    for layer in layers:
        weight = layer.weight(graph).detach()
        spec = layer.spec
        weights.append(fake_quantized(weight, spec) if quantize and spec is not None else weight)
    for seen in stream(
        graph,
        context,
        [layer.input_value for layer in layers],
        quantize=quantize and not float_inputs,
        batches=batches,
    ):
        count += 1
        for i, layer in enumerate(layers):
            x = seen[layer.input_value.name]
            weight = weights[i].to(x.device)
            bias = layer.bias(graph)
            mean = layer.channel_mean(
                layer.forward(x, weight, None if bias is None else bias.detach().to(x.device))
            )
            total = sums[i]
            sums[i] = mean if total is None else total + mean
    return [total / count for total in sums if total is not None]


def mean_abs_shift(quantized: Sequence[Tensor], reference: Sequence[Tensor]) -> float:
    """The mean over layers and channels of ``|quantized - reference|``."""
    shifts = [(q - r).abs().mean() for q, r in zip(quantized, reference, strict=True)]
    return float(torch.stack(shifts).mean()) if shifts else 0.0


@attrs.frozen
class BiasCorrection(Pass):
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
        reason = no_data_reason(context)
        targets = quantized_layers(graph)
        if reason is None and not targets:
            reason = "no conv/linear layer has calibrated quantized weights (run it after ptq)"
        if reason is not None:
            log.info(f"Bias correction: did nothing: {reason}")
            return PassResult(graph, False, {"layers": 0})
        batches = calibration_batches(context, self.batches)
        with float_reference(graph, context):
            reference = output_means(graph, context, targets, quantize=False, batches=batches)
        before = mean_abs_shift(
            output_means(graph, context, targets, quantize=True, batches=batches), reference
        )
        if self.sequential:
            corrected = [
                self._correct(graph, layer, reference[i], context, batches)
                for i, layer in enumerate(progress(targets, "Bias correction", total=len(targets)))
            ]
        else:
            with float_reference(graph, context):
                measured = output_means(
                    graph, context, targets, quantize=True, batches=batches, float_inputs=True
                )
            corrected = [
                self._correct(graph, layer, reference[i], context, batches, measured[i])
                for i, layer in enumerate(targets)
            ]
        after = mean_abs_shift(
            output_means(graph, context, corrected, quantize=True, batches=batches), reference
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

    def _correct(
        self,
        graph: Graph,
        layer: Layer,
        reference: Tensor,
        context: QuantContext,
        batches: int,
        measured: Tensor | None = None,
    ) -> Layer:
        """Subtract ``layer``'s output-mean shift (measured now unless given) from its bias."""
        if measured is None:
            (measured,) = output_means(graph, context, [layer], quantize=True, batches=batches)
        layer = ensure_bias(graph, layer)
        bias = layer.bias(graph)
        assert bias is not None and layer.bias_ref is not None
        set_tensor(graph, layer.bias_ref, bias.detach() - (measured - reference).to(bias.device))
        return layer
