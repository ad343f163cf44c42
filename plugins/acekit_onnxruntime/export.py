"""Lowering a quantized Graph to QDQ ONNX that ONNX Runtime runs in integer kernels.

The module generated from the graph is exported with torch's TorchScript-based ONNX
exporter, which writes every fake quantization as a ``QuantizeLinear`` /
``DequantizeLinear`` pair. The result is then put in the form ORT's QDQ fusion expects:

* weights are stored as integer initializers read by ``DequantizeLinear`` (no float
  weight, no ``QuantizeLinear`` at run time);
* the bias of a Conv/Gemm whose input and weight are dequantized becomes an int32
  initializer with scale ``s_input * s_weight`` (what ``QLinearConv`` consumes);
* the model passes ``onnx.checker``'s full check before it is moved into place.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from acekit.fileio import atomic_write
from acekit.ir.graph import Graph
from acekit.logging import get_logger
from acekit.runtime.codegen import to_module
from acekit.runtime.fake_quant import clamp_weights

DEFAULT_OPSET = 17

log = get_logger(__name__)


def export_onnx(graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]) -> Path:
    """Write ``graph`` (quantized) as QDQ ONNX at ``path`` atomically; return the path."""
    opset = int(options.get("opset", DEFAULT_OPSET))
    module = to_module(graph, quantize=True).eval()
    _clamp_weights(module, graph)
    inputs = tuple(_example(value) for value in graph.inputs)
    input_names = [value.name for value in graph.inputs]
    output_names = [
        f"output_{i}" if len(graph.outputs) > 1 else "output" for i in range(len(graph.outputs))
    ]
    # The symbolic dims of the graph's types are the model's free dims (acekit.dims).
    dynamic = {
        name: axes
        for name, value in zip(
            [*input_names, *output_names], [*graph.inputs, *graph.outputs], strict=True
        )
        if (axes := _symbolic_axes(value.type))
    }
    with tempfile.TemporaryDirectory(prefix="acekit-onnx-") as scratch:
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
    fold_weight_quantization(model)
    quantize_biases(model)
    for weight in layers_ort_will_quantize(model):
        log.warning(
            f"ONNX Runtime will run the layer with weight '{weight}' in int8 although it is "
            "kept in float: its input and output are quantized, so ORT (1.20+) quantizes "
            "its weight itself (per tensor). Skip a neighbouring layer too to keep it float."
        )
    onnx.checker.check_model(model, full_check=True)  # includes strict shape inference
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


def _clamp_weights(module: torch.nn.Module, graph: Graph) -> None:
    """Give ``module`` (made for export) weights clamped to their integer ranges.

    Scales learned in QAT can leave weights beyond the integer range; the simulation
    clips them, and so must the integer initializers. The module's parameters get new
    tensors: ``graph``'s tensors, which they shared, are not changed.
    """
    specs = {
        str(node.attrs["ref"]): node.output.quant
        for node in graph.nodes
        if node.op == "parameter"
        and node.output.quant is not None
        and not node.output.quant.skip
        and node.output.quant.scale is not None
    }
    # Buffers (frozen weights) are clamped by the exported graph itself (fake_quant).
    parameters = dict(module.named_parameters())
    specs = {ref: spec for ref, spec in specs.items() if ref in parameters}
    tensors = {ref: parameters[ref].data for ref in specs}
    clamp_weights(tensors, specs)
    for ref, tensor in tensors.items():
        module.get_parameter(ref).data = tensor


def _example(value: Any) -> torch.Tensor:
    """A zero input to trace with: the example's sizes, at least 2 where symbolic (the
    tracer would fold shape arithmetic on a size of 1)."""
    type_ = value.type
    known = value.producer.attrs.get("example_shape") if value.producer is not None else None
    dims = type_.shape or ()
    if known is None or len(known) != len(dims):
        known = [2] * len(dims)
    shape = [d if isinstance(d, int) else max(2, int(k)) for d, k in zip(dims, known, strict=True)]
    dtype = type_.dtype or torch.float32
    return torch.zeros(shape, dtype=dtype)


def _symbolic_axes(type_: Any) -> dict[int, str]:
    """``{axis: symbol}`` for the symbolic dims of ``type_`` (ONNX ``dim_param``)."""
    return {i: str(d) for i, d in enumerate(type_.shape or ()) if isinstance(d, str)}


class _Model:
    """Lookups over an ONNX graph: initializers, constants and producers by name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.producers = {out: node for node in self.graph.node for out in node.output}

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Identity":
            # The exporter shares equal initializers (zero biases) through Identity.
            return self.constant(node.input[0])
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        unique, i = name, 1
        while unique in self.initializers:
            unique, i = f"{name}_{i}", i + 1
        tensor = numpy_helper.from_array(array, unique)
        self.graph.initializer.append(tensor)
        self.initializers[unique] = tensor
        return unique


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear(constant)`` by its integer result; return how many."""
    lookup = _Model(model)
    folded: list[onnx.NodeProto] = []
    for node in lookup.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        values = [lookup.constant(name) for name in node.input]
        if any(v is None for v in values) or len(values) < 3:
            continue
        x, scale, zero_point = values[0], values[1], values[2]
        assert x is not None and scale is not None and zero_point is not None
        axis = _axis(node)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        info = np.iinfo(zero_point.dtype)
        q = np.clip(np.round(x / scale) + zero_point.astype(np.int64), info.min, info.max)
        name = lookup.add_initializer(q.astype(zero_point.dtype), f"{node.input[0]}_quantized")
        _rename_input(lookup.graph, node.output[0], name)
        folded.append(node)
    for node in folded:
        lookup.graph.node.remove(node)
    _drop_unused_initializers(model)
    return len(folded)


def quantize_biases(model: onnx.ModelProto) -> int:
    """Give DQ-fed Conv/Gemm/MatMul an int32 bias through DQ; return how many.

    ORT fuses a quantized linear layer into one integer kernel only when its bias is
    ``DequantizeLinear(int32, s_input * s_weight)``; a float bias leaves it in float.
    A MatMul's bias is the constant operand of the Add that follows it.
    """
    lookup = _Model(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in lookup.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    done = 0
    for node in list(lookup.graph.node):
        site = _bias_site(lookup, consumers, node)
        if site is None:
            continue
        owner, index, scale = site
        base = owner.input[index]
        bias = lookup.constant(base)
        assert bias is not None
        scale = np.broadcast_to(scale, bias.shape).astype(np.float32).copy()
        q = np.clip(np.round(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        q_name = lookup.add_initializer(q, f"{base}_quantized")
        s_name = lookup.add_initializer(scale, f"{base}_scale")
        z_name = lookup.add_initializer(np.zeros_like(q), f"{base}_zero_point")
        out = f"{base}_dequantized_{done}"
        dq = helper.make_node(
            "DequantizeLinear",
            [q_name, s_name, z_name],
            [out],
            name=f"{owner.name or base}_bias_dq",
            axis=0,
        )
        lookup.graph.node.insert(list(lookup.graph.node).index(owner), dq)
        owner.input[index] = out
        done += 1
    _drop_unused_initializers(model)
    return done


def _bias_site(
    lookup: _Model, consumers: dict[str, list[onnx.NodeProto]], node: onnx.NodeProto
) -> tuple[onnx.NodeProto, int, np.ndarray] | None:
    """``(node holding the bias, input index, bias scale)`` for a quantized linear op."""
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    scales = [_dq_scale(lookup, name) for name in node.input[:2]]
    if scales[0] is None or scales[1] is None or scales[0].size != 1:
        return None
    scale = (scales[0].reshape(()) * scales[1].reshape(-1)).astype(np.float32)
    if node.op_type == "Gemm" and not _gemm_transposes_weight(node):
        return None
    if node.op_type in ("Conv", "Gemm"):
        if len(node.input) < 3 or lookup.constant(node.input[2]) is None:
            return None
        return node, 2, scale
    readers = consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    index = 1 if add.input[0] == node.output[0] else 0
    bias = lookup.constant(add.input[index])
    if bias is None or bias.ndim != 1 or (scale.size != 1 and bias.size != scale.size):
        return None
    return add, index, scale


#: ONNX ops that move values without changing them (ORT moves Q/DQ across them).
_VALUE_MOVING = frozenset({"Transpose", "Reshape", "Flatten", "MaxPool", "Squeeze", "Unsqueeze"})


def _dq_scale(lookup: _Model, name: str) -> np.ndarray | None:
    """The scale of the DequantizeLinear behind ``name``, through value-moving ops."""
    producer = lookup.producers.get(name)
    while producer is not None and producer.op_type in _VALUE_MOVING:
        producer = lookup.producers.get(producer.input[0])
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    return lookup.constant(producer.input[1])


def layers_ort_will_quantize(model: onnx.ModelProto) -> list[str]:
    """Float-weight Conv/Gemm that ORT's WeightBiasQuantization will quantize anyway.

    ORT quantizes a float initializer weight when the op's input comes from a
    DequantizeLinear and its output leads, through Relu/Clip only, to a QuantizeLinear.
    Returns those weights' names (the model's parameter names).
    """
    lookup = _Model(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in lookup.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in lookup.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in lookup.initializers:
            continue
        if _dq_scale(lookup, node.input[0]) is None:
            continue
        current = node
        while True:
            readers = consumers.get(current.output[0], [])
            if len(readers) != 1 or readers[0].op_type not in ("Relu", "Clip", "QuantizeLinear"):
                break
            if readers[0].op_type == "QuantizeLinear":
                found.append(node.input[1])
                break
            current = readers[0]
    return found


def _is_dq(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear"


def _gemm_transposes_weight(node: onnx.NodeProto) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return bool(attrs.get("transB", 0)) and not attrs.get("transA", 0)


def _axis(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "axis":
            return int(helper.get_attribute_value(attribute))
    return 1


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
