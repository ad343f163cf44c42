"""How to quantize for TensorRT's explicit quantization (see docs/tensorrt.md for sources).

TensorRT builds an INT8 (or FP8) engine from an ONNX model whose QuantizeLinear /
DequantizeLinear pairs say exactly which tensors are quantized ("explicit
quantization"). Its rules, and where each comes from:

* Activations are **signed** 8-bit, symmetric, zero point 0, per tensor: TensorRT
  supports only symmetric signed INT8 Q/DQ (TensorRT developer guide, "Explicit
  Quantization"; ModelOpt sets ``ActivationSymmetric``).
* Weights are signed 8-bit, symmetric, per output channel (axis 0 of Conv and Linear
  weights, axis 1 of ConvTranspose's ``[Cin, Cout, ...]``), as ModelOpt's
  ``QDQOpTypePerChannelSupportToAxis``.
* Q/DQ go on the *inputs* of Conv/ConvTranspose/Gemm/MatMul and never on their
  outputs: TensorRT fuses ``DQ -> Conv -> BN -> ReLU`` (and the next op's ``Q``) into
  one kernel, and an output Q/DQ between a conv and its activation breaks that fusion
  (ModelOpt's ``OpTypesToExcludeOutputQuantization`` lists every op). Attention's two
  matmuls take quantized inputs like any MatMul; Softmax, LayerNorm and GELU stay float.
* A residual Add whose one input a conv computes gets its *other* input quantized, so
  TensorRT fuses the Add into that conv's epilogue (ModelOpt's
  ``build_non_residual_input_map``); when both inputs come from convs the deeper one is
  fused. Adds of transformer residual streams stay float.
* Biases stay float (TensorRT adds them in the conv epilogue; ModelOpt sets
  ``QuantizeBias=False``).
* Max pooling and the classifier's global average pool take quantized inputs (they run
  in INT8), as ModelOpt quantizes them; the conv after a pool quantizes its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acekit.target import (
    Granularity,
    OpRule,
    QuantRules,
    QuantSpec,
    Scalar,
    TargetOption,
    TargetOptionError,
    check_options,
)

NAME = "tensorrt"
#: The modes TensorRT's explicit quantization runs, with the opset each needs.
MODES: Mapping[str, int] = {"int8": 13, "fp8": 19, "int4_weight_only": 21}
#: The opset written unless the options ask for another (or the mode needs more).
DEFAULT_OPSET = 17
#: W4A16's group size along K: ModelOpt's ``int4_awq`` and TensorRT's INT4 weight-only
#: examples use 128.
DEFAULT_BLOCK_SIZE = 128
#: Block sizes offered: powers of two that tile the K dimension of tensor-core GEMMs.
BLOCK_SIZES = (32, 64, 128, 256)

#: Target options this target reads (``deployment.target_options``).
OPTIONS: Mapping[str, TargetOption] = {
    option.name: option
    for option in (
        TargetOption(
            name="mode",
            help="int8 (default), fp8 (E4M3, Hopper and newer GPUs) or int4_weight_only "
            "(W4A16: 4-bit weights of Linear layers, float activations)",
            default="int8",
            choices=tuple(MODES),
        ),
        TargetOption(
            name="block_size",
            help="int4_weight_only only: input values per weight scale along K "
            f"({', '.join(map(str, BLOCK_SIZES))}; default {DEFAULT_BLOCK_SIZE})",
            kind=int,
            choices=BLOCK_SIZES,
        ),
        TargetOption(
            name="opset",
            help="ONNX opset of the export, 13..21 (default 17, or the mode's minimum: "
            "fp8 needs 19, int4_weight_only 21)",
            kind=int,
            minimum=13,
            maximum=21,
        ),
    )
}

_CONV = OpRule(activations=(0,), weight=1, weight_axis=0)
_CONV_TRANSPOSE = OpRule(activations=(0,), weight=1, weight_axis=1)
_LINEAR = OpRule(activations=(0,), weight=1, weight_axis=0)
_EPILOGUE_OPS = frozenset({"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"})

_INT8_OPS: Mapping[str, OpRule] = {
    "conv1d": _CONV,
    "conv2d": _CONV,
    "conv3d": _CONV,
    "conv_transpose1d": _CONV_TRANSPOSE,
    "conv_transpose2d": _CONV_TRANSPOSE,
    "linear": _LINEAR,
    "matmul": OpRule(activations=(0, 1)),
    "add": OpRule(activations=(0, 1), epilogue_of=_EPILOGUE_OPS),
    # Max pooling takes a quantized input (TensorRT runs it in INT8 and fuses it after
    # the conv), as ModelOpt places it; the conv after it quantizes the pool's output.
    "max_pool1d": OpRule(activations=(0,)),
    "max_pool2d": OpRule(activations=(0,)),
    # The classifier's global pool: quantized at its input so that the pool and the
    # Gemm after it run in INT8 (ModelOpt quantizes GlobalAveragePool the same way).
    "adaptive_avg_pool2d": OpRule(activations=(0,)),
}

#: W4A16: only the weights of linear layers, 4-bit; activations stay float.
_WEIGHT_ONLY_OPS: Mapping[str, OpRule] = {"linear": OpRule(activations=(), weight=1)}


def validate_options(options: Mapping[str, Any]) -> dict[str, Scalar]:
    """``options`` checked, with ``mode`` and ``opset`` filled in; one error names the key.

    Beyond the schema: the opset must be one the mode can be written in, and
    ``block_size`` (group-wise weight scales) exists only in ``int4_weight_only`` mode
    (TensorRT runs block-quantized weights only as INT4).
    """
    checked = check_options(NAME, OPTIONS, options)
    mode = str(checked["mode"])
    if mode == "int4_weight_only":
        checked.setdefault("block_size", DEFAULT_BLOCK_SIZE)
        if checked["block_size"] is None:
            checked["block_size"] = DEFAULT_BLOCK_SIZE
    elif checked.get("block_size") is not None:
        raise TargetOptionError(
            f"mode {mode!r} has per-channel weight scales only: TensorRT runs group-wise "
            "(block) scales for INT4 weights (set target_options.mode = "
            "'int4_weight_only' or remove block_size)",
            target=NAME,
            option="block_size",
        )
    needed = MODES[mode]
    opset = checked.get("opset")
    if opset is None:
        checked["opset"] = max(DEFAULT_OPSET, needed)
    elif int(opset) < needed:
        raise TargetOptionError(
            f"opset {opset} is too old for mode {mode!r}: it needs opset >= {needed} "
            f"(set target_options.opset = {needed} or higher)",
            target=NAME,
            option="opset",
        )
    return checked


def quantization_rules(options: Mapping[str, Any]) -> QuantRules:
    """The TensorRT scheme for the mode ``options`` choose."""
    checked = validate_options(options)
    mode = checked["mode"]
    symmetric = QuantSpec(bits=8, signed=True, symmetric=True)
    if mode == "int4_weight_only":
        return QuantRules(
            activation=symmetric,
            weight=QuantSpec(
                bits=4, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0
            ),
            ops=_WEIGHT_ONLY_OPS,
            activation_bits=(8,),
            storage_bits=(8,),  # int8 containers in the lowering; the export packs int4
            weight_bits=(2, 3, 4, 5, 6, 7, 8),  # wider requests are narrowed to 4
            weight_block_size=int(checked["block_size"]),
            # Weight-only GEMMs at small batch are bound by reading the weights: 4-bit
            # weights read 8x fewer bytes than float32 ones (an estimate).
            mac_costs={4: 0.125, 8: 0.25},
            reason=(
                f"W4A16: 4-bit symmetric weights of linear layers in blocks of "
                f"{checked['block_size']} along K, float activations"
            ),
        )
    return QuantRules(
        activation=symmetric,
        weight=QuantSpec(
            bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, axis=0
        ),
        ops=_INT8_OPS,
        activation_bits=(8,),
        weight_bits=(8,) if mode == "fp8" else (2, 3, 4, 5, 6, 7, 8),
        absorbed=frozenset({"relu", "relu6", "hardtanh"}),
        reason=(
            "s8 symmetric activations x s8 per-channel weights, Q/DQ on op inputs "
            "(TensorRT explicit quantization)"
            if mode == "int8"
            else "FP8 E4M3 activations and per-channel weights (TensorRT on Hopper and newer)"
        ),
    )
