"""How to quantize for ONNX Runtime's CPU provider (see docs/onnxruntime.md for why).

* Activations are **unsigned** 8-bit, asymmetric, per tensor. On x86 ORT fuses QDQ
  Conv/MatMul into integer kernels only for u8 activations: its s8 path leaves half the
  convs of a ResNet in float, and its s8 x s8 kernels are slower than float. VNNI's
  instruction multiplies u8 by s8.
* Weights are **signed** 8-bit (or narrower, stored in int8), symmetric, per output
  channel. On x86 CPUs without VNNI, u8 x s8 products can saturate the 16-bit
  intermediate of the AVX2/AVX-512BW kernels, so weights use 7 bits there
  (ORT's ``reduce_range``) unless the options say otherwise.
* Conv takes quantized inputs and weights and gives a quantized output, placed after a
  following ReLU/ReLU6 (``DQ -> Conv -> Relu -> Q`` becomes one ``QLinearConv``; a Q
  between Conv and ReLU costs about 12 %). Linear takes a quantized input and weight and
  gives a float output (``QGemm`` / ``MatMulIntegerToFloat``): what follows it in a
  transformer (GELU, residual add, LayerNorm) runs fastest and most accurately in float.
  MatMul between two activations (attention) takes quantized inputs, float output.
* Softmax, GELU, LayerNorm and average pooling stay float: ORT's integer versions are
  slower. Max pooling, reshape and transpose pass quantization through: the tensor is
  quantized above them, so ORT runs them on u8 (a separate scale after a max pool
  leaves it float, with layout conversions around it).

The measurements behind each rule are in docs/onnxruntime-qdq.md.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import cache
from pathlib import Path
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

#: Target options this target reads (``deployment.target_options``).
OPTIONS: Mapping[str, TargetOption] = {
    option.name: option
    for option in (
        TargetOption(
            name="activation_type",
            help="uint8 (default) or int8 activations",
            default="uint8",
            choices=("uint8", "int8"),
        ),
        TargetOption(
            name="weight_reduce_range",
            help="7-bit weights: 'auto' (default: on x86 without VNNI), true or false",
            default="auto",
            kind=None,
            choices=("auto", True, False),
        ),
        TargetOption(
            name="block_size",
            help="group-wise weight scales: one per block of this many input values of "
            "each output channel (16, 32, 64, 128 or 256; default: one per channel)",
            kind=int,
            choices=(16, 32, 64, 128, 256),
        ),
        TargetOption(
            name="block_symmetric",
            help="group-wise weights symmetric (zero point 0); default false: one zero "
            "point per block (ORT dequantizes the blocks, a zero point costs nothing)",
            default=False,
            kind=bool,
        ),
        TargetOption(
            name="opset",
            help=f"ONNX opset of the export, {OPSETS.start}..{OPSETS.stop - 1} "
            f"(default {DEFAULT_OPSET})",
            default=DEFAULT_OPSET,
            kind=int,
            minimum=OPSETS.start,
            maximum=OPSETS.stop - 1,
        ),
    )
}

_CONV = OpRule(activations=(0,), weight=1, weight_axis=0, output=True, bias=2)
_OPS: Mapping[str, OpRule] = {
    "conv1d": _CONV,
    "conv2d": _CONV,
    "conv3d": _CONV,
    "linear": OpRule(activations=(0,), weight=1, weight_axis=0, bias=2),
    "matmul": OpRule(activations=(0, 1)),
    # A CNN's head: DQ -> GlobalAveragePool -> Q becomes QLinearGlobalAveragePool, and
    # the ReLU -> Q before it lets ORT fuse the last residual Add as well.
    "adaptive_avg_pool2d": OpRule(activations=(0,), output=True),
}


#: IR ops that move values without changing them; ORT moves Q/DQ across them.
_VALUE_MOVING = frozenset(
    {
        "max_pool1d",
        "max_pool2d",
        "reshape",
        "flatten",
        "unflatten",
        "permute",
        "transpose",
        "contiguous",
        "squeeze",
        "unsqueeze",
    }
)


@cache
def cpu_has_vnni() -> bool:
    """Whether this CPU has AVX-512 VNNI or AVX-VNNI (u8 x s8 dot products)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text(errors="replace")
    return "avx512_vnni" in flags or "avx_vnni" in flags


def is_x86() -> bool:
    """Whether this machine is x86-64 (where ORT's u8/s8 kernel choices apply)."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def quantization_rules(options: Mapping[str, Any]) -> QuantRules:
    """The ORT CPU scheme for this machine, adjusted by ``options``."""
    checked = check_options("onnxruntime", OPTIONS, options)
    activation_type = checked["activation_type"]
    reduce = checked["weight_reduce_range"]
    if reduce == "auto":
        reduce = is_x86() and not cpu_has_vnni()
    signed = activation_type == "int8"
    block = checked.get("block_size")
    activation = QuantSpec(bits=8, signed=signed, symmetric=False)
    weight = QuantSpec(
        bits=7 if reduce else 8,
        signed=True,
        symmetric=True,
        granularity=Granularity.PER_CHANNEL,
        axis=0,
    )
    why = "u8 activations x s8 per-channel weights"
    if signed:
        why = "s8 activations (as the options ask; on x86 ORT fuses fewer ops than with u8)"
    elif cpu_has_vnni():
        why += " (VNNI: ORT's integer kernels run u8 x s8 at 4x the float multiply rate)"
    elif reduce:
        why += ", 7-bit weights (no VNNI: avoids saturating the 16-bit intermediates)"
    if block is not None:
        kind = "symmetric" if checked["block_symmetric"] else "affine"
        why += f"; {kind} weight scales per block of {block} inputs (the options ask)"
    return QuantRules(
        activation=activation,
        weight=weight,
        ops=_OPS,
        activation_bits=(8,),
        weight_bits=(2, 3, 4, 5, 6, 7, 8),
        absorbed=frozenset({"relu", "relu6", "hardtanh"}),
        passthrough=frozenset(
            {"max_pool1d", "max_pool2d", "reshape", "permute", "transpose", "contiguous"}
        ),
        # QLinearConv / QGemm add an int32 bias with scale s_input * s_weight; ORT finds
        # the input's scale through the ops that move values without changing them.
        bias_bits=32,
        bias_scale_through=_VALUE_MOVING,
        storage_bits=(8,),
        weight_block_size=None if block is None else int(block),
        weight_block_symmetric=bool(checked["block_symmetric"]),
        reason=why,
    )
