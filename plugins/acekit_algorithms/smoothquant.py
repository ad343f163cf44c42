"""``smoothquant``: move activation outliers into the weights (Xiao et al. 2023).

A few channels of a LayerNorm's output are often 10-100x larger than the rest, so one
per-tensor activation scale wastes most of its grid on them. Dividing channel ``j`` of
the activation by ``s_j`` and multiplying input column ``j`` of every linear layer that
reads it by ``s_j`` leaves the function unchanged. With
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` the migration strength ``alpha`` moves
difficulty from activations to weights; it is chosen per site from a grid by the
quantized output error of its readers on calibration data (activations per tensor and
weights per channel, at the settings' bit widths and the target's symmetry, with
min/max ranges), and a site keeps its scales where no ``alpha`` beats leaving it.

Where the division can be folded, nothing is added to the graph: a ``layer_norm`` with
its own weight and bias whose readers are all linear layers (pre-norm blocks) takes it
in its affine weight and bias. Elsewhere (``insert=true``, the default) the division is
a per-channel ``mul`` placed on the branch to the linear readers, as NNCF does: the
LayerNorm of a post-norm block (BERT, MiniLM), whose output also feeds the residual
add, and a GELU output feeding the second MLP layer, which no linear op before it can
absorb. The other readers keep the unscaled tensor. The multiply is one elementwise op
per site at run time. Runs before ``quantize``/``calibrate``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from acekit.ir.graph import Graph, Node, Value
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
    """An activation and the linear layers reading it (as their input).

    ``norm_refs`` are the affine weight and bias of the LayerNorm that produces it when
    the division folds into them; ``None`` means a ``mul`` must be inserted.
    """

    value: Value
    readers: tuple[Layer, ...]
    norm_refs: tuple[str, str] | None

    @property
    def name(self) -> str:
        """The producer's node name, for the log."""
        assert self.value.producer is not None
        return self.value.producer.name


def _own_ref(graph: Graph, node: Node, index: int) -> str | None:
    if len(node.inputs) <= index:
        return None
    producer = node.inputs[index].producer
    if producer is None or producer.op != "parameter" or len(node.inputs[index].users) != 1:
        return None
    ref = producer.attrs.get("ref")
    return ref if isinstance(ref, str) and ref in graph.tensors else None


def sites(graph: Graph, *, insert: bool = True) -> list[Site]:
    """The activations linear layers read: foldable LayerNorm outputs, and (``insert``)
    every other one, smoothed by an inserted ``mul``."""
    linear = {layer.node.name: layer for layer in layers(graph) if layer.node.op == "linear"}
    found = []
    for node in graph.nodes:
        if node.op in ("parameter", "constant"):
            continue
        for value in node.outputs:
            readers = tuple(
                linear[u.node.name]
                for u in value.uses
                if u.index == 0 and u.node.name in linear and linear[u.node.name].node is u.node
            )
            if not readers:
                continue
            refs = _norm_refs(graph, node) if len(readers) == len(value.uses) else None
            if refs is not None or insert:
                found.append(Site(value, readers, refs))
    return found


def _norm_refs(graph: Graph, node: Node) -> tuple[str, str] | None:
    """A LayerNorm's own affine weight and bias refs, when it has them."""
    if node.op != "layer_norm":
        return None
    weight_ref, bias_ref = _own_ref(graph, node, 1), _own_ref(graph, node, 2)
    if weight_ref is None or bias_ref is None:
        return None
    return weight_ref, bias_ref


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


def _weight_fake_quant(w: Tensor, spec: QuantSpec) -> Tensor:
    """A linear weight ``[out, in]`` rounded per output channel, or per block of
    ``spec.block_size`` inputs of each for group-wise scales (min/max ranges)."""
    block = spec.block_size
    if block is None or w.shape[1] % block:
        return _minmax_fake_quant(w, spec, (1,))
    blocks = w.reshape(w.shape[0], -1, block)
    return _minmax_fake_quant(blocks, spec, (2,)).reshape(w.shape)


def _channel_max(x: Tensor) -> Tensor:
    return x.detach().abs().reshape(-1, x.shape[-1]).amax(0)


@attrs.frozen
class SmoothQuant(CalibrationReader, Pass):
    """Scale outlier channels of linear inputs down and the weights reading them up."""

    name: ClassVar[str] = "smoothquant"
    summary: ClassVar[str] = "migrate activation outliers of linear inputs into the weights"
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
    #: Where the division cannot be folded into a LayerNorm, insert a ``mul`` for it.
    insert: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def run(self, graph: Graph) -> PassResult:
        """Smooth every eligible site; stats: ``smoothed``, ``inserted`` and the spreads."""
        context = current_context(self.name)
        found = sites(graph, insert=self.insert)
        reason = no_data_reason(context)
        if reason is None and not any(node.op == "layer_norm" for node in graph.nodes):
            # The outlier channels SmoothQuant is for come out of transformers' LayerNorms;
            # a multiply inserted into a CNN's classifier only costs speed.
            reason = "no LayerNorm in the graph (SmoothQuant is for transformer linear layers)"
        if reason is None and not found:
            reason = (
                "no linear layer reads an activation"
                if self.insert
                else "no LayerNorm with its own weight and bias feeds only linear layers"
            )
        if reason is not None:
            log.info(f"SmoothQuant: did nothing: {reason}")
            return PassResult(graph, False, {"smoothed": 0, "inserted": 0})
        maxima, samples = self._measure(graph, context, found)
        smoothed, inserted, spread_before, spread_after = 0, 0, [], []
        for site in found:
            amax = maxima[site.value.name]
            spread = float(amax.max() / amax.median().clamp_min(1e-12))
            if spread < self.outlier_ratio:
                log.info(
                    f"SmoothQuant: '{site.name}' left as is: channel max spread "
                    f"{spread:.3g} < outlier_ratio {self.outlier_ratio}"
                )
                continue
            alpha, scales = self._choose(graph, context, site, amax, samples[site.value.name])
            if scales is None:
                log.info(f"SmoothQuant: '{site.name}' left as is: no alpha lowers the error")
                continue
            _apply(graph, site, scales)
            after = amax / scales
            spread_before.append(spread)
            spread_after.append(float(after.max() / after.median().clamp_min(1e-12)))
            how = "folded into the LayerNorm" if site.norm_refs else "a multiply inserted"
            log.info(
                f"SmoothQuant: '{site.name}' alpha={alpha}: channel max spread "
                f"{spread:.3g} -> {spread_after[-1]:.3g} ({len(site.readers)} linear readers, "
                f"{how})"
            )
            smoothed += 1
            inserted += site.norm_refs is None
        if smoothed == 0:
            log.info(
                f"SmoothQuant: did nothing: none of the {len(found)} linear inputs has outlier "
                f"channels it can smooth (spread >= outlier_ratio {self.outlier_ratio} and an "
                "alpha that lowers the error)"
            )
        norms = sum(site.norm_refs is not None for site in found)
        log.info(
            f"SmoothQuant: {smoothed - inserted} of {norms} LayerNorms smoothed",
            pass_name=self.name,
        )
        if self.insert:
            log.info(
                f"SmoothQuant: {inserted} of {len(found) - norms} other linear inputs smoothed "
                "by an inserted multiply",
                pass_name=self.name,
            )
        return PassResult(
            graph,
            smoothed > 0,
            {
                "smoothed": smoothed,
                "inserted": inserted,
                "spread_before": _mean(spread_before),
                "spread_after": _mean(spread_after),
            },
        )

    def _measure(
        self, graph: Graph, context: QuantContext, found: list[Site]
    ) -> tuple[dict[str, Tensor], dict[str, list[Tensor]]]:
        maxima: dict[str, Tensor] = {}
        samples: dict[str, list[Tensor]] = {site.value.name: [] for site in found}
        values = [site.value for site in found]
        for index, seen in enumerate(
            stream(graph, context, values, quantize=False, batches=self.batches)
        ):
            for value in values:
                x = seen[value.name]
                m = _channel_max(x)
                name = value.name
                maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)
                if index < 2:
                    samples[name].append(x.reshape(-1, x.shape[-1]))
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
        x = torch.cat(samples)
        weight_spec = context.rules.weight_spec(
            0, settings.weights_num_bits, per_channel=int(x.shape[-1])
        )
        weights = [reader.weight(graph).detach().to(x.device) for reader in site.readers]
        wmax = torch.stack([w.abs().amax(0) for w in weights]).amax(0)
        reference = [x @ w.T for w in weights]

        def error(scales: Tensor) -> float:
            xq = _minmax_fake_quant(x / scales, activation, None)
            total = 0.0
            for w, ref in zip(weights, reference, strict=True):
                wq = _weight_fake_quant(w * scales, weight_spec)
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
    if site.norm_refs is not None:
        weight_ref, bias_ref = site.norm_refs
        gamma, beta = graph.tensors[weight_ref], graph.tensors[bias_ref]
        set_tensor(graph, weight_ref, gamma.detach() / scales.to(gamma.device))
        set_tensor(graph, bias_ref, beta.detach() / scales.to(beta.device))
    else:
        _insert_division(graph, site, scales)
    for reader in site.readers:
        weight = reader.weight(graph).detach()
        set_tensor(graph, reader.weight_ref, weight * scales.to(weight.device))


def _insert_division(graph: Graph, site: Site, scales: Tensor) -> None:
    """``x -> mul(x, 1/s) -> linear readers``; the other readers keep reading ``x``."""
    first = site.readers[0].node
    for reader in site.readers[1:]:
        if reader.node.is_before(first):
            first = reader.node
    like = site.readers[0].weight(graph)
    inverse = (1.0 / scales).to(dtype=like.dtype, device=like.device)
    factor = graph.add_parameter(
        graph.unique_name(f"{site.name}_smoothing"),
        inverse,
        subgraph=first.subgraph,
        trainable=False,
    )
    smoothed = graph.add_node(
        "mul",
        [site.value, factor],
        name=f"{site.name}_smoothed",
        subgraph=first.subgraph,
        source_name=first.source_name,
        types=[site.value.type],
        before=first,
    ).output
    for reader in site.readers:
        reader.node.set_input(0, smoothed)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
