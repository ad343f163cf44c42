"""Writing a quantized Graph for OpenVINO: QDQ ONNX, or OpenVINO IR converted from it.

The suffix of the path chooses: ``.onnx`` writes the QDQ ONNX model of acekit's shared
lowering (:func:`acekit.target.export_qdq_onnx`; OpenVINO reads it directly), ``.xml``
writes IR: ``openvino.convert_model`` turns each activation Q/DQ pair into a
FakeQuantize and keeps the int8 weights with their dequantization, and
``openvino.save_model(..., compress_to_fp16=False)`` writes ``.xml`` and ``.bin`` beside
each other (fp16 compression would round the float scales and biases).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acekit.target import Graph, check_options, export_qdq_onnx, get_logger
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
        return export_qdq_onnx(graph, target, rules, opset=opset)
    ov = import_openvino("export OpenVINO IR")
    with tempfile.TemporaryDirectory(prefix=".acekit-openvino-", dir=target.parent) as scratch:
        onnx_path = export_qdq_onnx(graph, Path(scratch) / "model.onnx", rules, opset=opset)
        model = ov.convert_model(str(onnx_path))
        xml = Path(scratch) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        # The .bin first: an .xml in place always has its weights beside it.
        os.replace(xml.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(xml, target)
    log.debug(f"OpenVINO IR written: {target} and {target.with_suffix('.bin')}")
    return target
