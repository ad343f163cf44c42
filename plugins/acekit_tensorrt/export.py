"""Writing a quantized Graph as the QDQ ONNX TensorRT's explicit quantization builds from.

The graph is lowered to QDQ ONNX by torch's exporter, then put in TensorRT's form
(:mod:`acekit_tensorrt.qdq`): scales as initializers, no clamps before activation
quantizers, weights as int8 initializers read by ``DequantizeLinear`` (INT8 mode),
float weights with FP8 Q/DQ pairs (FP8 mode) or int4 initializers (W4A16). Biases stay
float: TensorRT adds them in the conv epilogue. The model passes ``onnx.checker``'s full
check before it is moved into place.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import torch

from acekit.fileio import atomic_write
from acekit.ir.graph import Graph
from acekit.logging import get_logger
from acekit.runtime.codegen import to_module
from acekit.runtime.fake_quant import clamp_weights
from acekit_onnxruntime.export import fold_weight_quantization
from acekit_tensorrt.int4 import to_int4
from acekit_tensorrt.qdq import (
    drop_activation_clamps,
    fold_weight_transposes,
    inline_identities,
    to_fp8,
)
from acekit_tensorrt.rules import check_options

#: The opset the graph is lowered at; FP8/INT4 models are converted up from it.
LOWERING_OPSET = 17

log = get_logger(__name__)


def export_onnx(graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]) -> Path:
    """Write ``graph`` (quantized) as TensorRT QDQ ONNX at ``path`` atomically; return it."""
    mode, opset = check_options(options)
    model = lower(graph, min(opset, LOWERING_OPSET))
    inline_identities(model)
    dropped = drop_activation_clamps(model)
    transposed = fold_weight_transposes(model)
    log.debug(f"TensorRT export: removed {dropped} activation clamps, {transposed} transposes")
    if opset > LOWERING_OPSET:
        model = onnx.version_converter.convert_version(model, opset)
    if mode == "fp8":
        to_fp8(model)
    else:
        fold_weight_quantization(model)
    if mode == "int4_weight_only":
        to_int4(model)
    onnx.checker.check_model(model, full_check=True)
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


def lower(graph: Graph, opset: int) -> onnx.ModelProto:
    """``graph`` as ONNX with one Q/DQ pair per quantized tensor (batch axis dynamic)."""
    module = to_module(graph, quantize=True).eval()
    _clamp_weights(module, graph)
    inputs = tuple(_example(value.type) for value in graph.inputs)
    input_names = [value.name for value in graph.inputs]
    output_names = [
        f"output_{i}" if len(graph.outputs) > 1 else "output" for i in range(len(graph.outputs))
    ]
    dynamic = {
        name: {0: "batch"} for name, x in zip(input_names, inputs, strict=True) if x.dim() > 0
    }
    with tempfile.TemporaryDirectory(prefix="acekit-tensorrt-") as scratch:
        raw = Path(scratch) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                str(raw),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        model = onnx.load(str(raw))
    model.graph.name = graph.name
    return model


def _clamp_weights(module: torch.nn.Module, graph: Graph) -> None:
    """Give ``module`` weights clamped to their integer ranges (new tensors, graph untouched)."""
    specs = {
        str(node.attrs["ref"]): node.output.quant
        for node in graph.nodes
        if node.op == "parameter"
        and node.output.quant is not None
        and not node.output.quant.skip
        and node.output.quant.scale is not None
    }
    parameters = dict(module.named_parameters())
    specs = {ref: spec for ref, spec in specs.items() if ref in parameters}
    tensors = {ref: parameters[ref].data for ref in specs}
    clamp_weights(tensors, specs)
    for ref, tensor in tensors.items():
        module.get_parameter(ref).data = tensor


def _example(type_: Any) -> torch.Tensor:
    shape = [d if isinstance(d, int) else 1 for d in (type_.shape or ())]
    return torch.zeros(shape, dtype=type_.dtype or torch.float32)
