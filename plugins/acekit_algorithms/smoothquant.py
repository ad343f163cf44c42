"""``smoothquant``: move activation outliers into the weights (Xiao et al. 2023).

A few channels of a LayerNorm's output are often 10-100x larger than the rest, so one
per-tensor activation scale wastes most of its grid on them. Dividing channel ``j`` of
the activation by ``s_j`` and multiplying input column ``j`` of every linear layer that
reads it by ``s_j`` leaves the function unchanged; the division is folded into the
LayerNorm's affine weight and bias, so nothing is added to the graph. With
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` the migration strength ``alpha`` moves
difficulty from activations to weights; it is chosen per LayerNorm from a grid by the
quantized output error of its readers on calibration data (activations per tensor and
weights per channel, at the settings' bit widths and the target's symmetry, with
min/max ranges), and a LayerNorm keeps its scales where no ``alpha`` beats leaving it.

Applies where a ``layer_norm`` with its own weight and bias feeds only linear layers
(the pre-norm MLP and projection inputs of transformers) and its output has outlier
channels. Runs before ``quantize``/``calibrate``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from acekit.ir.graph import Graph, Node
from acekit.ir.quant import QuantSpec
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult
from acekit.quant.context import QuantContext, current_context
from acekit_algorithms.layers import (
    CalibrationReader,
    Layer,
    layers,
    no_data_reason,
    set_tensor,
    stream,
)

log = get_logger(__name__)

#: Migration strengths tried when ``alpha`` is not fixed.
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@attrs.frozen(eq=False)
class Site:
    """A LayerNorm and the linear layers reading its output."""

    norm: Node
    weight_ref: str
    bias_ref: str
    readers: tuple[Layer, ...]


def _own_ref(graph: Graph, node: Node, index: int) -> str | None:
    if len(node.inputs) <= index:
        return None
    producer = node.inputs[index].producer
    if producer is None or producer.op != "parameter" or len(node.inputs[index].users) != 1:
        return None
    ref = producer.attrs.get("ref")
    return ref if isinstance(ref, str) and ref in graph.tensors else None


def sites(graph: Graph) -> list[Site]:
    """LayerNorms (with their own affine parameters) whose readers are all linear."""
    linear = {layer.node.name: layer for layer in layers(graph) if layer.node.op == "linear"}
    found = []
    for node in graph.nodes:
        if node.op != "layer_norm" or not node.outputs[0].users:
            continue
        weight_ref, bias_ref = _own_ref(graph, node, 1), _own_ref(graph, node, 2)
        readers = [linear.get(user.name) for user in node.outputs[0].users]
        if weight_ref is None or bias_ref is None or any(r is None for r in readers):
            continue
        if any(r.node.inputs[0] is not node.outputs[0] for r in readers if r is not None):
            continue
        found.append(Site(node, weight_ref, bias_ref, tuple(r for r in readers if r is not None)))
    return found


def _minmax_fake_quant(x: Tensor, spec: QuantSpec, dims: tuple[int, ...] | None) -> Tensor:
    """``x`` rounded to ``spec``'s grid with a min/max range (over ``dims``; all if None).

    Only ranks candidate ``alpha`` values; calibration sets the real scales later.
    """
    low = x.amin(dim=dims, keepdim=True) if dims else x.min()
    high = x.amax(dim=dims, keepdim=True) if dims else x.max()
    if spec.symmetric:
        scale = torch.maximum(high.abs(), low.abs()) / ((spec.qmax - spec.qmin) / 2)
        zero = (
            torch.zeros_like(scale) if spec.signed else torch.full_like(scale, 2 ** (spec.bits - 1))
        )
    else:
        low, high = low.clamp(max=0), high.clamp(min=0)
        scale = (high - low) / (spec.qmax - spec.qmin)
        zero = torch.round(spec.qmin - low / scale.clamp_min(1e-12))
    scale = scale.clamp_min(1e-12)
    q = torch.clamp(torch.round(x / scale) + zero, spec.qmin, spec.qmax)
    return (q - zero) * scale


def _channel_max(x: Tensor) -> Tensor:
    return x.detach().abs().reshape(-1, x.shape[-1]).amax(0)


@attrs.frozen
class SmoothQuant(CalibrationReader, Pass):
    """Scale LayerNorm outputs down and the linear weights reading them up."""

    name: ClassVar[str] = "smoothquant"
    summary: ClassVar[str] = "migrate activation outliers of LayerNorm outputs into weights"
    stage: ClassVar[str] = "before-calibration"

    #: A fixed migration strength in [0, 1]; ``none`` chooses one per LayerNorm.
    alpha: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0), attrs.validators.le(1)]),
    )
    #: Smooth only where the largest channel max is this many times the median one.
    outlier_ratio: float = attrs.field(default=4.0, validator=attrs.validators.ge(1))
    #: Calibration batches measured (the first two also rank the ``alpha`` values).
    batches: int = attrs.field(default=8, validator=attrs.validators.ge(1))

    def run(self, graph: Graph) -> PassResult:
        """Smooth every eligible LayerNorm; stats: ``smoothed`` and the channel spreads."""
        context = current_context(self.name)
        found = sites(graph)
        reason = no_data_reason(context)
        if reason is None and not found:
            reason = "no LayerNorm with its own weight and bias feeds only linear layers"
        if reason is not None:
            log.info(f"SmoothQuant: did nothing: {reason}")
            return PassResult(graph, False, {"smoothed": 0})
        maxima, samples = self._measure(graph, context, found)
        smoothed, spread_before, spread_after = 0, [], []
        for site in found:
            amax = maxima[site.norm.name]
            spread = float(amax.max() / amax.median().clamp_min(1e-12))
            if spread < self.outlier_ratio:
                log.info(
                    f"SmoothQuant: '{site.norm.name}' left as is: channel max spread "
                    f"{spread:.3g} < outlier_ratio {self.outlier_ratio}"
                )
                continue
            alpha, scales = self._choose(graph, context, site, amax, samples[site.norm.name])
            if scales is None:
                log.info(f"SmoothQuant: '{site.norm.name}' left as is: no alpha lowers the error")
                continue
            _apply(graph, site, scales)
            after = amax / scales
            spread_before.append(spread)
            spread_after.append(float(after.max() / after.median().clamp_min(1e-12)))
            log.info(
                f"SmoothQuant: '{site.norm.name}' alpha={alpha}: channel max spread "
                f"{spread:.3g} -> {spread_after[-1]:.3g} ({len(site.readers)} linear readers)"
            )
            smoothed += 1
        log.info(
            f"SmoothQuant: {smoothed} of {len(found)} LayerNorms smoothed",
            pass_name=self.name,
        )
        return PassResult(
            graph,
            smoothed > 0,
            {
                "smoothed": smoothed,
                "spread_before": _mean(spread_before),
                "spread_after": _mean(spread_after),
            },
        )

    def _measure(
        self, graph: Graph, context: QuantContext, found: list[Site]
    ) -> tuple[dict[str, Tensor], dict[str, list[Tensor]]]:
        maxima: dict[str, Tensor] = {}
        samples: dict[str, list[Tensor]] = {site.norm.name: [] for site in found}
        values = {site.norm.outputs[0].name: site.norm.name for site in found}
        for index, seen in enumerate(
            stream(
                graph,
                context,
                [s.norm.outputs[0] for s in found],
                quantize=False,
                batches=self.batches,
            )
        ):
            for value, norm in values.items():
                x = seen[value]
                m = _channel_max(x)
                maxima[norm] = m if norm not in maxima else torch.maximum(maxima[norm], m)
                if index < 2:
                    samples[norm].append(x.reshape(-1, x.shape[-1]))
        return maxima, samples

    def _choose(
        self,
        graph: Graph,
        context: QuantContext,
        site: Site,
        amax: Tensor,
        samples: list[Tensor],
    ) -> tuple[float, Tensor | None]:
        """The best ``alpha`` and its scales (``None`` when not smoothing is best)."""
        settings = context.settings.quantization
        activation = context.rules.activation_spec(settings.activations_num_bits)
        weight_spec = context.rules.weight_spec(0, settings.weights_num_bits)
        x = torch.cat(samples)
        weights = [reader.weight(graph).detach().to(x.device) for reader in site.readers]
        wmax = torch.stack([w.abs().amax(0) for w in weights]).amax(0)
        reference = [x @ w.T for w in weights]

        def error(scales: Tensor) -> float:
            xq = _minmax_fake_quant(x / scales, activation, None)
            total = 0.0
            for w, ref in zip(weights, reference, strict=True):
                wq = _minmax_fake_quant(w * scales, weight_spec, (1,))
                total += float((xq @ wq.T - ref).pow(2).mean())
            return total

        best_alpha, best_scales = 0.0, None
        best = error(torch.ones_like(amax))
        for alpha in (self.alpha,) if self.alpha is not None else ALPHAS:
            scales = (amax.clamp_min(1e-5) ** alpha / wmax.clamp_min(1e-5) ** (1 - alpha)).clamp(
                1e-5, 1e5
            )
            candidate = error(scales)
            if candidate < best or self.alpha is not None:
                best_alpha, best_scales, best = alpha, scales, candidate
        return best_alpha, best_scales


def _apply(graph: Graph, site: Site, scales: Tensor) -> None:
    gamma, beta = graph.tensors[site.weight_ref], graph.tensors[site.bias_ref]
    set_tensor(graph, site.weight_ref, gamma.detach() / scales.to(gamma.device))
    set_tensor(graph, site.bias_ref, beta.detach() / scales.to(beta.device))
    for reader in site.readers:
        weight = reader.weight(graph).detach()
        set_tensor(graph, reader.weight_ref, weight * scales.to(weight.device))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
