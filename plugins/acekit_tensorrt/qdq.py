"""Rewrites of an exported QDQ ONNX model into the form TensorRT's explicit quantization wants.

torch's exporter writes every fake quantization as ``QuantizeLinear`` /
``DequantizeLinear`` with full 8-bit ranges. TensorRT needs:

* scales and zero points that are initializers, not ``Identity`` outputs (the exporter
  shares equal initializers through ``Identity``);
* no ``Min``/``Max`` clamp in front of an activation's ``QuantizeLinear``: the exporter
  adds one to keep the symmetric range ``[-127, 127]``; TensorRT's INT8 is ``[-128,
  127]`` and the extra elementwise ops would break its conv fusions (only inputs below
  ``-127.5`` steps differ, by one step);
* for FP8, ``float8e4m3fn`` zero points with the scale set for E4M3's largest value 448.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acekit.target import drop_unused_initializers

#: E4M3's largest finite value (ONNX ``float8e4m3fn``).
FP8_MAX = 448.0
#: The symmetric INT8 grid's largest value.
INT8_MAX = 127.0


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _rename_uses(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _remove(model: onnx.ModelProto, dead: list[onnx.NodeProto]) -> None:
    ids = {id(node) for node in dead}
    keep = [node for node in model.graph.node if id(node) not in ids]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def inline_identities(model: onnx.ModelProto) -> int:
    """Make readers of ``Identity(initializer)`` read the initializer; return how many."""
    initializers = _initializers(model)
    graph_outputs = {out.name for out in model.graph.output}
    dead = [
        node
        for node in model.graph.node
        if node.op_type == "Identity"
        and node.input[0] in initializers
        and node.output[0] not in graph_outputs
    ]
    for node in dead:
        _rename_uses(model, node.output[0], node.input[0])
    _remove(model, dead)
    return len(dead)


def drop_activation_clamps(model: onnx.ModelProto) -> int:
    """Remove the exporter's ``Max -> Min`` before activation ``QuantizeLinear``; return how many.

    Only a clamp whose bounds are the quantizer's own symmetric range (``±127 * scale``)
    and whose result only that ``QuantizeLinear`` reads is removed.
    """
    initializers = _initializers(model)
    producers = _producers(model)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    def constant(name: str) -> np.ndarray | None:
        init = initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

    dead: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        scale = constant(node.input[1])
        low_op = producers.get(node.input[0])
        if scale is None or scale.size != 1 or low_op is None or low_op.op_type != "Min":
            continue
        high_op = producers.get(low_op.input[0])
        if high_op is None or high_op.op_type != "Max":
            continue
        high, low = constant(low_op.input[1]), constant(high_op.input[1])
        bound = INT8_MAX * float(scale.reshape(()))
        if high is None or low is None or high.size != 1 or low.size != 1:
            continue
        if not (np.isclose(float(high), bound) and np.isclose(float(low), -bound)):
            continue
        if readers.get(low_op.output[0]) != 1 or readers.get(high_op.output[0]) != 1:
            continue
        node.input[0] = high_op.input[0]
        dead += [low_op, high_op]
    _remove(model, dead)
    drop_unused_initializers(model)
    return len(dead) // 2


def to_fp8(model: onnx.ModelProto) -> int:
    """Turn symmetric INT8 Q/DQ into FP8 E4M3 Q/DQ with the same range; return how many.

    The scale becomes ``amax / 448`` for the ``amax = 127 * scale`` the INT8 grid was
    calibrated to, zero points ``float8e4m3fn`` zeros, and int8 weight initializers the
    E4M3 values nearest to the same real values (``q * 127 / 448`` in the new scale).
    """
    initializers = _initializers(model)
    ratio = INT8_MAX / FP8_MAX
    changed = 0
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = initializers.get(node.input[2])
        if zero is None or not (zero.data_type == TensorProto.INT8 or node.input[2] in done):
            continue
        names = [node.input[1], node.input[2]]
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is not None:
            names.append(node.input[0])
        for name in names:
            if name in done:
                continue
            tensor = initializers[name]
            values = numpy_helper.to_array(tensor).astype(np.float32)
            if name == node.input[1]:
                tensor.CopyFrom(numpy_helper.from_array(values * np.float32(ratio), name))
            else:  # the zero point (all zeros) or the weight, as E4M3
                tensor.CopyFrom(
                    helper.make_tensor(
                        name,
                        TensorProto.FLOAT8E4M3FN,
                        list(tensor.dims),
                        (values / np.float32(ratio)).ravel().tolist(),
                    )
                )
            done.add(name)
        changed += 1
    # The exporter recorded the quantized tensors as int8; shape inference redoes them.
    del model.graph.value_info[:]
    return changed


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """Store 2-D weights pre-transposed: ``DQ(W) -> Transpose`` becomes ``DQ(W.T)``.

    torch exports a Linear on 3-D inputs as ``MatMul(x, Transpose(W))``; TensorRT (like
    ModelOpt's output) wants the DequantizeLinear directly on the MatMul's weight input.
    Only weights read by nothing but that Transpose are changed. Returns how many.
    """
    initializers = _initializers(model)
    producers = _producers(model)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dead: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or _perm(node) != [1, 0]:
            continue
        dq = producers.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers:
            continue
        if readers.get(dq.output[0]) != 1 or readers.get(dq.input[0]) != 1:
            continue
        weight = initializers[dq.input[0]]
        array = numpy_helper.to_array(weight)
        if array.ndim != 2:
            continue
        weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array.T), weight.name))
        if any(a.name == "block_size" for a in dq.attribute):
            # A blocked DQ's scale and zero point have the weight's layout: transpose them.
            for name in dq.input[1:3]:
                grid = initializers[name]
                flipped = np.ascontiguousarray(numpy_helper.to_array(grid).T)
                grid.CopyFrom(numpy_helper.from_array(flipped, grid.name))
        _flip_axis(dq)
        _rename_uses(model, node.output[0], dq.output[0])
        dead.append(node)
    _remove(model, dead)
    if dead:
        del model.graph.value_info[:]  # the weights' recorded shapes changed
    return len(dead)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return None


def _flip_axis(node: onnx.NodeProto) -> None:
    """Set a 2-D quantizer's ``axis`` to the other dimension (it defaults to 1).

    A blocked quantizer's ``axis`` is the blocked dimension, which flips the same way.
    """
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    kept = [a for a in node.attribute if a.name != "axis"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("axis", 1 - (axis % 2))])
