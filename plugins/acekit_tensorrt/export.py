"""Writing a quantized Graph as the QDQ ONNX TensorRT's explicit quantization builds from.

The graph is lowered by acekit's shared QDQ export (:func:`acekit.target.export_qdq_onnx`:
int8 weight initializers read by ``DequantizeLinear``, float biases since the rules set
no ``bias_bits``, ``onnx.checker``, atomic write), then put in TensorRT's form
(:mod:`acekit_tensorrt.qdq`): scales as initializers, no clamps before activation
quantizers, 2-D weights stored pre-transposed; FP8 E4M3 types in ``fp8`` mode, int4
blocks (group-wise scales along K) in ``int4_weight_only`` mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from acekit.target import OPSETS, Graph, export_qdq_onnx, get_logger
from acekit_tensorrt.int4 import collapse_blocks, to_int4
from acekit_tensorrt.qdq import (
    drop_activation_clamps,
    fold_weight_transposes,
    inline_identities,
    to_fp8,
)
from acekit_tensorrt.rules import quantization_rules, validate_options

log = get_logger(__name__)


def export_onnx(graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]) -> Path:
    """Write ``graph`` (quantized) as TensorRT QDQ ONNX at ``path`` atomically; return it."""
    checked = validate_options(options)
    mode, opset = str(checked["mode"]), int(checked["opset"])
    lowering = min(opset, OPSETS.stop - 1)  # torch's exporter writes up to this opset

    def postprocess(model: onnx.ModelProto) -> None:
        inline_identities(model)
        clamps = drop_activation_clamps(model)
        if opset > lowering:
            model.CopyFrom(onnx.version_converter.convert_version(model, opset))
        # Blocked DequantizeLinear exists from opset 21 (int4 mode): after the conversion.
        blocks = collapse_blocks(model) if mode == "int4_weight_only" else 0
        transposes = fold_weight_transposes(model)
        log.debug(
            f"TensorRT export: removed {clamps} activation clamps, {transposes} transposes; "
            f"{blocks} group-wise weights"
        )
        if mode == "fp8":
            to_fp8(model)
        elif mode == "int4_weight_only":
            to_int4(model)

    rules = quantization_rules(checked)
    return export_qdq_onnx(graph, path, rules, opset=lowering, postprocess=postprocess)
