"""Writing a quantized Graph for ONNX Runtime: acekit's shared QDQ lowering, ORT's rules.

The lowering itself (weights as integer initializers, int32 biases with scale
``s_input * s_weight``, ``onnx.checker``, atomic write) is :func:`acekit.target.export_qdq_onnx`
driven by the rules of :mod:`acekit_onnxruntime.rules`. What is ORT's own is a check of
the result: a float layer that ORT would quantize anyway is reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from acekit.target import Graph, OnnxGraphView, check_options, export_qdq_onnx, get_logger

log = get_logger(__name__)


def export_onnx(graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]) -> Path:
    """Write ``graph`` (quantized) as QDQ ONNX at ``path`` atomically; return the path."""
    from acekit_onnxruntime.rules import OPTIONS, quantization_rules

    checked = check_options("onnxruntime", OPTIONS, options)
    rules = quantization_rules(checked)
    opset = int(checked["opset"])
    return export_qdq_onnx(graph, path, rules, opset=opset, postprocess=_warn_float_layers)


def _warn_float_layers(model: onnx.ModelProto) -> None:
    for weight in layers_ort_will_quantize(model):
        log.warning(
            f"ONNX Runtime will run the layer with weight '{weight}' in int8 although it is "
            "kept in float: its input and output are quantized, so ORT (1.20+) quantizes "
            "its weight itself (per tensor). Skip a neighbouring layer too to keep it float."
        )


def layers_ort_will_quantize(model: onnx.ModelProto) -> list[str]:
    """Float-weight Conv/Gemm that ORT's WeightBiasQuantization will quantize anyway.

    ORT quantizes a float initializer weight when the op's input comes from a
    DequantizeLinear and its output leads, through Relu/Clip only, to a QuantizeLinear.
    Returns those weights' names (the model's parameter names).
    """
    view = OnnxGraphView(model)
    through = frozenset({"Transpose", "Reshape", "Flatten", "MaxPool", "Squeeze", "Unsqueeze"})
    found = []
    for node in view.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in view.initializers:
            continue
        if view.dq_scale(node.input[0], through) is None:
            continue
        current = node
        while True:
            readers = view.readers.get(current.output[0], [])
            if len(readers) != 1 or readers[0].op_type not in ("Relu", "Clip", "QuantizeLinear"):
                break
            if readers[0].op_type == "QuantizeLinear":
                found.append(node.input[1])
                break
            current = readers[0]
    return found
