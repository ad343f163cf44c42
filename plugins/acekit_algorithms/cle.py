"""``cle``: cross-layer equalization with high-bias absorption (Nagel et al. 2019).

For two layers joined by a positively homogeneous activation (``relu(x / s) =
relu(x) / s`` for ``s > 0``), dividing output channel ``i`` of the first layer (weight
and bias) by ``s_i`` and multiplying input channel ``i`` of the second by ``s_i`` leaves
the model's function unchanged. With ``s_i = sqrt(r1_i / r2_i)`` (``r`` the channel's
weight range) both channels end with the range ``sqrt(r1_i * r2_i)``: per-tensor and
per-channel grids then lose less to channels with tiny ranges. Depthwise-separable
nets, whose depthwise channels differ by orders of magnitude, are the classic case.
Pairs are equalized repeatedly so chains of three or more layers settle.

High-bias absorption then moves the part of a ReLU's input that never goes below
``c_i >= 0`` (the per-channel minimum seen on the calibration data) out of the first
layer's bias and into the second layer's bias: ``relu(y - c) + c = relu(y)`` wherever
``y >= c``. It is exact where the second layer sees no zero padding (padding would read
0 where the original read ``c``); pairs with padding keep their biases.

Runs before ``quantize``/``calibrate`` on the float graph.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from acekit.ir.graph import Graph, Node, Value
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult
from acekit.quant.context import current_context
from acekit_algorithms.layers import (
    CalibrationReader,
    Layer,
    calibration_batches,
    layers,
    no_data_reason,
    stream,
)

log = get_logger(__name__)

#: Activations with ``f(x / s) = f(x) / s`` for ``s > 0``: scaling passes through them.
HOMOGENEOUS = frozenset({"relu", "leaky_relu"})
#: Ops between two layers that keep channels where they are and commute with a positive
#: per-channel scale (and, without padding, with subtracting a per-channel constant).
CHANNEL_PRESERVING = frozenset(
    {"max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"}
)


@attrs.frozen(eq=False)
class Pair:
    """Two layers equalizable across their shared channels."""

    first: Layer
    second: Layer
    #: Whether the only op between them is a ReLU (high bias can be absorbed).
    relu: Node | None
    #: Whether a constant per-channel shift passes exactly from the first to the second.
    absorbable: bool


def _flatten_keeps_channels(node: Node) -> bool:
    shape = node.inputs[0].type.shape
    return shape is not None and len(shape) >= 2 and all(d == 1 for d in shape[2:])


def _zero_padding(node: Node) -> bool:
    padding = node.attrs.get("padding", 0)
    values = padding if isinstance(padding, tuple | list) else (padding,)
    return all(p == 0 for p in values)


def _second_layer(
    value: Value, by_node: dict[str, Layer]
) -> tuple[Layer, Node | None, bool] | None:
    """Follow ``value`` through single-reader activations and pools to the next layer."""
    relu: Node | None = None
    absorbable = True
    while True:
        if len(value.users) != 1 or value in value.users[0].inputs[1:]:
            return None
        user = value.users[0]
        layer = by_node.get(user.name)
        if layer is not None:
            return layer, relu, absorbable and _zero_padding(user)
        if user.op in HOMOGENEOUS and relu is None:
            relu = user if user.op == "relu" else None
            absorbable = absorbable and user.op == "relu"
        elif user.op in CHANNEL_PRESERVING:
            absorbable = absorbable and _zero_padding(user)
        elif not (user.op == "flatten" and _flatten_keeps_channels(user)):
            return None
        value = user.outputs[0]


def _input_axis(layer: Layer, weight: Tensor) -> int | None:
    """The weight axis of the layer's input channels: 1, 0 for depthwise, None otherwise."""
    if layer.groups == 1:
        return 1
    if weight.shape[1] == 1 and layer.groups == weight.shape[0]:
        return 0
    return None


def pairs(graph: Graph) -> list[Pair]:
    """The equalizable layer pairs of ``graph``, in execution order."""
    by_node = {layer.node.name: layer for layer in layers(graph)}
    found = []
    for layer in by_node.values():
        if layer.groups != 1 and _input_axis(layer, layer.weight(graph)) is None:
            continue
        nxt = _second_layer(layer.output_value, by_node)
        if nxt is None:
            continue
        second, relu, absorbable = nxt
        w2 = second.weight(graph)
        axis = _input_axis(second, w2)
        if axis is None or w2.shape[axis] != layer.weight(graph).shape[0]:
            continue
        found.append(Pair(layer, second, relu, absorbable))
    return found


def _channel_ranges(weight: Tensor, axis: int) -> Tensor:
    return weight.detach().abs().transpose(0, axis).reshape(weight.shape[axis], -1).amax(1)


def _shape_along(scale: Tensor, weight: Tensor, axis: int) -> Tensor:
    shape = [1] * weight.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def _equalize(graph: Graph, pair: Pair) -> None:
    w1, w2 = pair.first.weight(graph).detach(), pair.second.weight(graph).detach()
    axis2 = _input_axis(pair.second, w2)
    assert axis2 is not None
    r1, r2 = _channel_ranges(w1, 0), _channel_ranges(w2, axis2)
    ok = (r1 > 0) & (r2 > 0)
    scale = torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, 1.0)), torch.ones_like(r1))
    pair.first.scale_outputs(graph, scale)
    pair.second.set_weight(graph, w2 * _shape_along(scale, w2, axis2))


def spread(graph: Graph, layer: Layer) -> float:
    """How unequal a layer's output-channel weight ranges are: max over mean."""
    ranges = _channel_ranges(layer.weight(graph), 0)
    return float(ranges.max() / ranges.mean().clamp_min(1e-12))


def _absorb(graph: Graph, pair: Pair, low: Tensor) -> float:
    """Move ``c = max(0, low)`` from the first bias to the second; returns ``mean(c)``."""
    c = low.clamp_min(0).to(pair.first.weight(graph).device)
    first_bias = pair.first.bias(graph)
    if first_bias is None or not bool((c > 0).any()):
        return 0.0
    w2 = pair.second.weight(graph).detach()
    if _input_axis(pair.second, w2) == 0:  # depthwise: channel i feeds output i alone
        moved = c * w2.reshape(w2.shape[0], -1).sum(1)
    else:
        moved = w2.reshape(w2.shape[0], w2.shape[1], -1).sum(2) @ c
    pair.first.add_to_bias(graph, -c)
    pair.second.add_to_bias(graph, moved)
    return float(c.mean())


@attrs.frozen
class CrossLayerEqualization(CalibrationReader, Pass):
    """Equalize the weight ranges of layer pairs across ReLUs; absorb high biases."""

    name: ClassVar[str] = "cle"
    summary: ClassVar[str] = "cross-layer equalization and high-bias absorption (before ptq)"
    stage: ClassVar[str] = "before-calibration"

    #: Rounds over all pairs (chains of three or more layers need several).
    iterations: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    absorb_high_bias: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    #: Calibration batches measured for high-bias absorption (default: ``stats_steps``).
    batches: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )

    def run(self, graph: Graph) -> PassResult:
        """Equalize every pair, then absorb; stats: ``pairs``, ``absorbed``, spreads."""
        calibrated = any(
            v.quant is not None and v.quant.scale is not None
            for n in graph.nodes
            for v in n.outputs
        )
        found = [] if calibrated else pairs(graph)
        if not found:
            why = (
                "the graph is calibrated already (run cle before ptq)"
                if calibrated
                else "no conv/linear pair joined by a ReLU-like activation"
            )
            log.info(f"Cross-layer equalization: did nothing: {why}")
            return PassResult(graph, False, {"pairs": 0})
        equalized = {id(p.first.node) for p in found} | {id(p.second.node) for p in found}
        touched = [layer for layer in layers(graph) if id(layer.node) in equalized]
        before = sum(spread(graph, layer) for layer in touched) / len(touched)
        for _ in range(self.iterations):
            for pair in found:
                _equalize(graph, pair)
        after = sum(spread(graph, layer) for layer in touched) / len(touched)
        absorbed, note = self._absorb_all(graph, found)
        log.info(
            f"Cross-layer equalization: {len(found)} layer pairs, channel range spread "
            f"(max/mean) {before:.3g} -> {after:.3g}; {note}",
            pass_name=self.name,
        )
        return PassResult(
            graph,
            True,
            {
                "pairs": len(found),
                "absorbed": absorbed,
                "spread_before": before,
                "spread_after": after,
            },
        )

    def _absorb_all(self, graph: Graph, found: list[Pair]) -> tuple[int, str]:
        candidates = [p for p in found if p.relu is not None and p.absorbable and p.first.has_bias]
        if not self.absorb_high_bias:
            return 0, "high-bias absorption off"
        context = current_context(self.name)
        reason = no_data_reason(context)
        if reason is None and not candidates:
            reason = "no pair with a ReLU and an unpadded second layer"
        if reason is not None:
            return 0, f"no high bias absorbed: {reason}"
        lows: dict[str, Tensor] = {}
        values = [p.first.output_value for p in candidates]
        for seen in stream(
            graph,
            context,
            values,
            quantize=False,
            batches=calibration_batches(context, self.batches),
        ):
            for value in values:
                low = _channel_min(seen[value.name])
                lows[value.name] = (
                    low if value.name not in lows else torch.minimum(lows[value.name], low)
                )
        moved = [_absorb(graph, p, lows[p.first.output_value.name].cpu()) for p in candidates]
        absorbed = sum(1 for m in moved if m > 0)
        return absorbed, f"high bias absorbed in {absorbed} of {len(candidates)} pairs"


def _channel_min(output: Tensor) -> Tensor:
    if output.dim() == 2:
        return output.amin(0)
    return output.transpose(0, 1).reshape(output.shape[1], -1).amin(1)
