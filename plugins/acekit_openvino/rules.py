"""How to quantize for OpenVINO's CPU plugin (see docs/targets.md for the sources).

OpenVINO reads Q/DQ (ONNX) or FakeQuantize (IR) and its low-precision transformations
(LPT) move them onto the ops oneDNN runs in INT8. Its scheme, from the CPU plugin's
LPT documentation and NNCF's CPU hardware configuration (``cpu.json``):

* Activations are **unsigned** 8-bit per tensor (``q8_a``; oneDNN's VNNI kernels
  multiply u8 by s8); asymmetric here, which LPT handles with a zero-point
  compensation folded into the bias.
* Weights are **signed** 8-bit, symmetric, per output channel (``q8_w_sym``), with the
  narrow range ``[-127, 127]`` NNCF uses.
* Inputs quantized: Convolution, GroupConvolution, MatMul (both inputs, so attention's
  two matmuls run in INT8) and average pooling. A conv's output is quantized after the
  ReLU that follows it, so oneDNN writes u8 directly (conv + ReLU + requantize in one
  kernel) and the residual Add of a ResNet reads two quantized inputs, as NNCF places
  them. Linear layers give a float output: GELU, LayerNorm and the transformer's
  residual stream stay float (quantizing them is what costs NNCF's ViT fidelity).
* A MatMul's activation inputs have zero point 0: signed symmetric (s8) where the tensor
  can be negative (attention's q, k, v), unsigned from 0 (u8) where it cannot (the
  softmax; the op definitions say which tensors are never negative). LPT folds no
  activation zero point into an int8 MatMul: with one, the dequantization ``Subtract``
  stays in front and OpenVINO runs the attention in bf16 (measured on
  all-MiniLM-L6-v2). NNCF makes these inputs symmetric too (``ModelType.TRANSFORMER``:
  MatMuls without a constant input, signed or not from the statistics).
* Max pooling, reshape and transpose commute with quantization: the tensor is
  quantized above them and they run on u8.
* Biases stay float: LPT adds them after the integer accumulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acekit.target import (
    DEFAULT_OPSET,
    OPSETS,
    Granularity,
    OpRule,
    QuantRules,
    QuantSpec,
    TargetOption,
    check_options,
)

NAME = "openvino"

#: Target options this target reads (``deployment.target_options``).
OPTIONS: Mapping[str, TargetOption] = {
    "opset": TargetOption(
        name="opset",
        help=f"ONNX opset of the QDQ ONNX (and of the ONNX the IR is converted from), "
        f"{OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})",
        default=DEFAULT_OPSET,
        kind=int,
        minimum=OPSETS.start,
        maximum=OPSETS.stop - 1,
    )
}

_CONVS = frozenset({"conv1d", "conv2d", "conv3d"})
_CONV = OpRule(activations=(0,), weight=1, weight_axis=0, output=True)
_OPS: Mapping[str, OpRule] = {
    "conv1d": _CONV,
    "conv2d": _CONV,
    "conv3d": _CONV,
    "linear": OpRule(activations=(0,), weight=1, weight_axis=0),
    "matmul": OpRule(
        activations=(0, 1),
        activation=QuantSpec(bits=8, signed=True, symmetric=True),
        nonnegative=QuantSpec(bits=8, signed=False, symmetric=False),
    ),
    "adaptive_avg_pool2d": OpRule(activations=(0,), output=True),
    # A ResNet's residual Add reads its shortcut quantized, as NNCF places it: the block
    # output then has one FakeQuantize that the next conv and the next Add share, and
    # the CPU plugin fuses the Add into the conv as an int8 sum. Read unrounded, the
    # shortcut got a dequantize of its own that OpenVINO ran as a bf16 snippet with
    # f32/bf16 reorders (24 of them in resnet50, 38 % slower than NNCF). An Add none of
    # whose inputs a conv computes (a transformer's residual stream) stays float.
    "add": OpRule(activations=(0, 1), epilogue_of=_CONVS),
}


def quantization_rules(options: Mapping[str, Any]) -> QuantRules:
    """The OpenVINO CPU scheme (u8 activations x s8 per-channel weights)."""
    check_options(NAME, OPTIONS, options)
    return QuantRules(
        activation=QuantSpec(bits=8, signed=False, symmetric=False),
        weight=QuantSpec(
            bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0
        ),
        ops=_OPS,
        activation_bits=(8,),
        weight_bits=(2, 3, 4, 5, 6, 7, 8),
        absorbed=frozenset({"relu", "relu6", "hardtanh"}),
        passthrough=frozenset(
            {
                "max_pool1d",
                "max_pool2d",
                "reshape",
                "permute",
                "transpose",
                "contiguous",
                # Attention's packed q, k, v: quantized once at the in-projection's output
                # (as NNCF places it), so no FakeQuantize stands alone after the split.
                "unflatten",
                "unsqueeze",
                "squeeze",
                "unbind",
                "select",
            }
        ),
        reason="u8 activations x s8 symmetric per-channel weights (oneDNN VNNI kernels)",
    )
