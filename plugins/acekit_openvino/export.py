"""Writing a quantized Graph for OpenVINO: QDQ ONNX, or OpenVINO IR converted from it.

The suffix of the path chooses: ``.onnx`` writes the QDQ ONNX model of acekit's shared
lowering (:func:`acekit.target.export_qdq_onnx`; OpenVINO reads it directly), ``.xml``
writes IR: ``openvino.convert_model`` turns each activation Q/DQ pair into a
FakeQuantize and keeps the int8 weights with their dequantization, and
``openvino.save_model(..., compress_to_fp16=False)`` writes ``.xml`` and ``.bin`` beside
each other (fp16 compression would round the float scales and biases).

Both formats leave out the weights' zero points (all 0, ONNX's default): OpenVINO turns
a DequantizeLinear zero point into a Subtract on the weights, and its low-precision
transformations then ran those layers in bf16 (measured on ViT-B/16: the patch
Convolution and the out-projection and second MLP Linear of every block).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from acekit.target import (
    Graph,
    OnnxGraphView,
    check_options,
    drop_unused_initializers,
    export_qdq_onnx,
    get_logger,
)
from acekit_openvino.rules import NAME, OPTIONS, quantization_rules
from acekit_openvino.runtime import import_openvino

log = get_logger(__name__)

SUFFIXES = (".xml", ".onnx")


class OpenVINOExportError(ValueError):
    """The output path does not name a format the OpenVINO target writes."""


def export(graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]) -> Path:
    """Write ``graph`` at ``path`` (``.xml``: IR with its ``.bin``; ``.onnx``: QDQ ONNX)."""
    target = Path(path)
    checked = check_options(NAME, OPTIONS, options)
    if target.suffix not in SUFFIXES:
        raise OpenVINOExportError(
            f"cannot tell the format of {target}: the OpenVINO target writes IR to a .xml "
            "path (with its .bin beside it) or QDQ ONNX to a .onnx path"
        )
    rules = quantization_rules(checked)
    opset = int(checked["opset"])
    if target.suffix == ".onnx":
        return export_qdq_onnx(
            graph, target, rules, opset=opset, postprocess=drop_weight_zero_points
        )
    ov = import_openvino("export OpenVINO IR")
    with tempfile.TemporaryDirectory(prefix=".acekit-openvino-", dir=target.parent) as scratch:
        onnx_path = export_qdq_onnx(
            graph,
            Path(scratch) / "model.onnx",
            rules,
            opset=opset,
            postprocess=drop_weight_zero_points,
        )
        model = ov.convert_model(str(onnx_path))
        xml = Path(scratch) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        # The .bin first: an .xml in place always has its weights beside it.
        os.replace(xml.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(xml, target)
    log.debug(f"OpenVINO IR written: {target} and {target.with_suffix('.bin')}")
    return target


def drop_weight_zero_points(model: onnx.ModelProto) -> None:
    """Remove the all-zero int8 zero point of every weight's DequantizeLinear, in place.

    A missing zero point is 0 of the input's type, so the model computes the same; OpenVINO
    then sees symmetric weights and runs the layer in int8 (see the module docstring).
    """
    view = OnnxGraphView(model)
    dropped = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or not node.input[2]:
            continue
        weight = view.constant(node.input[0])
        zero_point = view.constant(node.input[2])
        if weight is None or zero_point is None:
            continue  # an activation's Q/DQ pair
        if zero_point.dtype == np.int8 and not zero_point.any():
            del node.input[2]
            dropped += 1
    drop_unused_initializers(model)
    log.debug(f"OpenVINO export: {dropped} weight zero points left out (all 0)")
