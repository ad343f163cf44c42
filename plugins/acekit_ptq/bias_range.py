"""Weight scales wide enough that every quantized bias fits its integer range.

Integer runtimes add a layer's bias to the accumulator as an integer on the grid
``s_input * s_weight``. A channel whose weights are tiny beside its bias (gMLP's spatial
gate: weights ~1e-6, bias 1) needs more steps than ``bias_bits`` hold, and the bias
saturates: the layer's output is wrong by the clipped part, in ``qm(x)`` and the runtime
alike. Widening that channel's weight scale until the bias fits costs the weights a little
resolution where they are all but zero anyway (what ONNX Runtime's own quantizer does).
"""

from __future__ import annotations

import attrs
import torch

from acekit.ir.graph import Graph, Node, Value
from acekit.quant import qmath
from acekit.quant.rules import QuantRules

#: The bias may use this fraction of the integer range: headroom for bias correction.
_HEADROOM = 0.5


def widen_weight_scales_for_bias(graph: Graph, rules: QuantRules) -> list[str]:
    """Widen the per-channel weight scales whose bias would overflow; the layers changed.

    Needs calibrated scales on the layers' inputs and weights; layers whose input, weight
    or bias is not known (not quantized, computed at run time) are left as they are.
    """
    if rules.bias_bits is None:
        return []
    _, qmax = qmath.integer_range(rules.bias_bits, signed=True)
    changed = []
    for node in graph.nodes:
        rule = rules.ops.get(node.op)
        if rule is None or rule.weight is None or rule.bias is None:
            continue
        if rule.bias >= len(node.inputs) or rule.weight >= len(node.inputs):
            continue
        s_input = _input_scale(node.inputs[rule.activations[0]], rules)
        weight = node.inputs[rule.weight]
        bias = _held(graph, node.inputs[rule.bias])
        spec = weight.quant
        if s_input is None or bias is None or spec is None or spec.scale is None or spec.skip:
            continue
        scales = torch.tensor(spec.scale, dtype=torch.float64)
        needed = bias.detach().abs().double().reshape(-1) / (s_input * qmax * _HEADROOM)
        if scales.numel() not in (1, needed.numel()) or bool((needed <= scales).all()):
            continue
        widened = torch.maximum(scales, needed if scales.numel() > 1 else needed.max())
        weight.quant = attrs.evolve(spec, scale=tuple(widened.tolist()))
        changed.append(node.name)
    return changed


def _input_scale(value: Value, rules: QuantRules) -> float | None:
    """The per-tensor scale ``value`` carries, looking through the rules' ops (as the
    simulation's bias rounding does)."""
    while value.quant is None or value.quant.scale is None or value.quant.skip:
        producer = value.producer
        if producer is None or producer.op not in rules.bias_scale_through:
            return None
        if not producer.inputs:
            return None
        value = producer.inputs[0]
    scale = value.quant.scale
    return float(scale[0]) if len(scale) == 1 else None


def _held(graph: Graph, value: Value) -> torch.Tensor | None:
    """The tensor a ``parameter`` node holds, else ``None``."""
    producer: Node | None = value.producer
    if producer is None or producer.op != "parameter":
        return None
    tensor = graph.tensors.get(str(producer.attrs.get("ref")))
    return tensor if isinstance(tensor, torch.Tensor) else None
