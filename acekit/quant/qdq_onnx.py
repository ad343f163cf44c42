"""Lowering a quantized Graph to QDQ ONNX: the shared export of ONNX-consuming targets.

The module generated from the graph (the one ``qm(x)`` runs) is exported with torch's
TorchScript-based ONNX exporter, which writes every fake quantization as a
``QuantizeLinear`` / ``DequantizeLinear`` pair. The result is then put in the form
integer runtimes fuse, as the target's :class:`~acekit.quant.rules.QuantRules` say:

* weights are stored as integer initializers read by ``DequantizeLinear`` (no float
  weight, no ``QuantizeLinear`` at run time), clamped to their range first;
* with ``rules.bias_bits``, the bias of a Conv/Gemm (or of the Add after a MatMul)
  whose input and weight are dequantized becomes an integer initializer with scale
  ``s_input * s_weight``, the input scale found through the ops of
  ``rules.bias_scale_through``; without it biases stay float;
* a target's own ``postprocess`` runs on the model (checks, warnings, rewrites);
* the model passes ``onnx.checker``'s full check before it is moved into place
  atomically (a failure leaves no file and the old one intact).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from acekit.fileio import atomic_write
from acekit.ir.graph import Graph, Value
from acekit.ops import OPDEFS
from acekit.quant import qmath
from acekit.quant.rules import QuantRules

#: The opset of the QDQ export unless the target asks for another.
DEFAULT_OPSET = 17
#: Opsets the lowering can write: per-channel QDQ needs 13; torch's TorchScript-based
#: exporter writes up to 20.
OPSETS = range(13, 21)


class QdqExportError(ValueError):
    """The graph cannot be written as QDQ ONNX (an option or a spec the format lacks)."""


def lower_to_qdq_onnx(
    graph: Graph,
    rules: QuantRules,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """``graph`` (quantized, or float where it has no specs) as a QDQ ONNX model.

    Inputs keep the graph's input names; outputs are ``output`` (or ``output_<i>``).
    With ``dynamic_batch`` the symbolic dims of the graph's input and output types (the
    model's free dims, :mod:`acekit.dims`) stay symbolic in the file; without it every
    dim is fixed at the example's size.
    """
    from acekit.runtime.codegen import to_module

    if opset not in OPSETS:
        raise QdqExportError(
            f"QDQ ONNX export needs an opset in {OPSETS.start}..{OPSETS.stop - 1}, got {opset!r}"
        )
    module = to_module(graph, quantize=True, rules=rules, export=True).eval()
    clamp_module_weights(module, graph)
    inputs = tuple(_trace_input(value, free=dynamic_batch) for value in graph.inputs)
    input_names = [value.name for value in graph.inputs]
    many = len(graph.outputs) > 1
    output_names = [f"output_{i}" if many else "output" for i in range(len(graph.outputs))]
    dynamic = {
        name: axes
        for name, value in zip(
            [*input_names, *output_names], [*graph.inputs, *graph.outputs], strict=True
        )
        if dynamic_batch and (axes := _symbolic_axes(value))
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
    if rules.bias_bits is not None:
        quantize_biases(model, bits=rules.bias_bits, through=onnx_ops(rules.bias_scale_through))
    return model


def _trace_input(value: Value, *, free: bool) -> torch.Tensor:
    """A zero input to trace with: the example's sizes, at least 2 where a dim is free
    (the tracer would fold shape arithmetic on a size of 1)."""
    dims = value.type.shape or ()
    known = value.producer.attrs.get("example_shape") if value.producer is not None else None
    if known is None or len(known) != len(dims):
        known = [2] * len(dims)
    shape = [
        d if isinstance(d, int) else (max(2, int(k)) if free else int(k))
        for d, k in zip(dims, known, strict=True)
    ]
    return torch.zeros(shape, dtype=value.type.dtype or torch.float32)


def _symbolic_axes(value: Value) -> dict[int, str]:
    """``{axis: symbol}`` for the symbolic dims of ``value``'s type (ONNX ``dim_param``)."""
    return {i: str(d) for i, d in enumerate(value.type.shape or ()) if isinstance(d, str)}


def export_qdq_onnx(
    graph: Graph,
    path: str | os.PathLike[str],
    rules: QuantRules,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    postprocess: Callable[[onnx.ModelProto], None] | None = None,
) -> Path:
    """Lower ``graph`` (:func:`lower_to_qdq_onnx`), post-process, check, write; return path."""
    model = lower_to_qdq_onnx(graph, rules, opset=opset, dynamic_batch=dynamic_batch)
    if postprocess is not None:
        postprocess(model)
    return write_onnx(model, path)


def write_onnx(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Check ``model`` with ``onnx.checker`` (full check) and write it at ``path`` atomically."""
    onnx.checker.check_model(model, full_check=True)  # includes strict shape inference
    return atomic_write(path, lambda tmp: onnx.save(model, str(tmp)))


def onnx_ops(ir_ops: Iterable[str]) -> frozenset[str]:
    """The ONNX op types the IR ops ``ir_ops`` export as (their definitions'
    ``onnx_types``; unknown ops are left out)."""
    defs = [OPDEFS.get(name) for name in ir_ops]
    return frozenset(op for opdef in defs if opdef is not None for op in opdef.onnx_types)


def clamp_module_weights(module: torch.nn.Module, graph: Graph) -> None:
    """Give ``module`` (made for export) weights clamped to their integer ranges.

    Scales learned in QAT can leave weights beyond the integer range; the simulation
    clips them, and so must the integer initializers. The module's parameters get new
    tensors: ``graph``'s tensors, which they shared, are not changed. Buffers (frozen
    weights) are clamped by the exported graph itself.
    """
    parameters = dict(module.named_parameters())
    for node in graph.nodes:
        spec = node.output.quant if node.op == "parameter" else None
        ref = str(node.attrs.get("ref"))
        if spec is None or spec.skip or spec.scale is None or ref not in parameters:
            continue
        assert spec.zero_point is not None
        weight = parameters[ref].data
        clamped = qmath.clamp_to_range(
            weight,
            torch.tensor(spec.scale, dtype=weight.dtype),
            torch.tensor(spec.zero_point, dtype=weight.dtype),
            spec.qmin,
            spec.qmax,
            spec.axis,
            spec.block_size,
        )
        module.get_parameter(ref).data = clamped


class OnnxGraphView:
    """Lookups over an ONNX graph for post-processing: constants, producers, readers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.producers = {out: node for node in self.graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a constant, else ``None``."""
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
        """Add ``array`` as an initializer named ``name`` (made unique); return its name."""
        unique, i = name, 1
        while unique in self.initializers:
            unique, i = f"{name}_{i}", i + 1
        tensor = numpy_helper.from_array(array, unique)
        self.graph.initializer.append(tensor)
        self.initializers[unique] = tensor
        return unique

    def dq_scale(self, name: str, through: frozenset[str] = frozenset()) -> np.ndarray | None:
        """The scale of the ``DequantizeLinear`` producing ``name``, through ``through`` ops."""
        producer = self.producers.get(name)
        while producer is not None and producer.op_type in through:
            producer = self.producers.get(producer.input[0])
        if producer is None or producer.op_type != "DequantizeLinear":
            return None
        return self.constant(producer.input[1])


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace ``QuantizeLinear(constant)`` by its integer result; return how many."""
    view = OnnxGraphView(model)
    folded: list[onnx.NodeProto] = []
    for node in view.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        x, scale, zero_point = (view.constant(name) for name in node.input[:3])
        if x is None or scale is None or zero_point is None:
            continue
        axis = _axis(node) if scale.size > 1 else None
        q = qmath.quantize_np(x, scale, zero_point, axis)
        name = view.add_initializer(q, f"{node.input[0]}_quantized")
        _rename_input(view.graph, node.output[0], name)
        folded.append(node)
    for node in folded:
        view.graph.node.remove(node)
    drop_unused_initializers(model)
    return len(folded)


def quantize_biases(
    model: onnx.ModelProto, *, bits: int = 32, through: frozenset[str] = frozenset()
) -> int:
    """Give DQ-fed Conv/Gemm/MatMul a ``bits``-bit bias through DQ; return how many.

    Integer runtimes fuse a quantized linear layer into one kernel when its bias is
    ``DequantizeLinear(int32, s_input * s_weight)``. A MatMul's bias is the constant
    operand of the Add that follows it. ``through`` are the ONNX ops between the
    input's DequantizeLinear and the layer that the runtime looks through.
    """
    view = OnnxGraphView(model)
    done = 0
    for node in list(view.graph.node):
        site = _bias_site(view, node, through)
        if site is None:
            continue
        owner, index, scale = site
        base = owner.input[index]
        bias = view.constant(base)
        assert bias is not None
        step = np.broadcast_to(scale, bias.shape).astype(np.float32).copy()
        q = qmath.quantize_bias_np(bias, step, bits)
        q_name = view.add_initializer(q, f"{base}_quantized")
        s_name = view.add_initializer(step, f"{base}_scale")
        z_name = view.add_initializer(np.zeros_like(q), f"{base}_zero_point")
        out = f"{base}_dequantized_{done}"
        dq = helper.make_node(
            "DequantizeLinear",
            [q_name, s_name, z_name],
            [out],
            name=f"{owner.name or base}_bias_dq",
            axis=0,
        )
        view.graph.node.insert(list(view.graph.node).index(owner), dq)
        owner.input[index] = out
        done += 1
    drop_unused_initializers(model)
    return done


def _bias_site(
    view: OnnxGraphView, node: onnx.NodeProto, through: frozenset[str]
) -> tuple[onnx.NodeProto, int, np.ndarray] | None:
    """``(node holding the bias, input index, bias scale)`` for a quantized linear op."""
    if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    s_input, s_weight = (view.dq_scale(name, through) for name in node.input[:2])
    if s_input is None or s_weight is None or s_input.size != 1:
        return None
    scale = (s_input.reshape(()) * s_weight.reshape(-1)).astype(np.float32)
    if node.op_type == "Gemm" and not _gemm_transposes_weight(node):
        return None
    if node.op_type in ("Conv", "Gemm"):
        bias = view.constant(node.input[2]) if len(node.input) >= 3 else None
        if bias is None or (scale.size != 1 and bias.size != scale.size):
            return None  # no bias, or group-wise weight scales (the bias stays float)
        return node, 2, scale
    readers = view.readers.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    index = 1 if add.input[0] == node.output[0] else 0
    bias = view.constant(add.input[index])
    if bias is None or bias.ndim != 1 or (scale.size != 1 and bias.size != scale.size):
        return None
    return add, index, scale


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


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers and Constant nodes nothing reads any more."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
