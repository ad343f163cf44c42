"""W4A16 storage: 4-bit weights as ONNX ``int4`` initializers read by ``DequantizeLinear``.

The simulation quantizes linear weights to 4 bits (values in ``[-7, 7]``) with one
scale per block of ``block_size`` input values of each output channel (the target
option, 128 by default), or per output channel where the input dimension is not a
multiple of it. The shared lowering writes a group-wise weight as one row per block,
``DQ(int8 [O*K/B, B], axis 0) -> Reshape [O, K]``; TensorRT runs INT4 weights only in
block-quantized form (opset 21), so each weight becomes ``DequantizeLinear(int4 [O,
K], scale [O, K/B], axis=1, block_size=B)``, and a per-channel one the same with one
block spanning the input dimension. Both are exactly the simulated grid.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from acekit.target import OnnxGraphView, drop_unused_initializers


def collapse_blocks(model: onnx.ModelProto) -> int:
    """Turn ``DQ(one row per block) -> Reshape [O, K]`` into a blocked DQ; return how many.

    Only a DequantizeLinear of a constant ``[O*K/B, B]`` integer weight with one scale
    per row, read by nothing but a Reshape to a constant ``[O, K]``, is rewritten.
    """
    view = OnnxGraphView(model)
    dead: list[onnx.NodeProto] = []
    for node in list(view.graph.node):
        found = _block_reshape(view, node)
        if found is None:
            continue
        reshape, (rows, cols) = found
        q = view.constant(node.input[0])
        scale, zero = view.constant(node.input[1]), view.constant(node.input[2])
        assert q is not None and scale is not None and zero is not None
        block = q.shape[1]
        base = node.input[0]
        node.input[0] = view.add_initializer(q.reshape(rows, cols), f"{base}_blocks")
        grid = (rows, cols // block)
        node.input[1] = view.add_initializer(scale.reshape(grid), f"{base}_block_scale")
        node.input[2] = view.add_initializer(zero.reshape(grid), f"{base}_block_zero")
        _set_attributes(node, axis=1, block_size=block)
        for reader in view.readers.get(reshape.output[0], []):
            for i, name in enumerate(reader.input):
                if name == reshape.output[0]:
                    reader.input[i] = node.output[0]
        dead.append(reshape)
    for reshape in dead:
        view.graph.node.remove(reshape)
    if dead:
        del model.graph.value_info[:]  # the weights' recorded shapes changed
    drop_unused_initializers(model)
    return len(dead)


def _block_reshape(
    view: OnnxGraphView, node: onnx.NodeProto
) -> tuple[onnx.NodeProto, tuple[int, int]] | None:
    if node.op_type != "DequantizeLinear" or len(node.input) < 3:
        return None
    q = view.constant(node.input[0])
    scale = view.constant(node.input[1])
    readers = view.readers.get(node.output[0], [])
    if q is None or scale is None or q.ndim != 2 or scale.size != q.shape[0] or len(readers) != 1:
        return None
    if _attribute(node, "axis", 1) != 0 or readers[0].op_type != "Reshape":
        return None
    shape = view.constant(readers[0].input[1])
    if shape is None or shape.size != 2:
        return None
    rows, cols = (int(d) for d in shape)
    if rows * cols != q.size or cols % q.shape[1]:
        return None
    return readers[0], (rows, cols)


def to_int4(model: onnx.ModelProto) -> int:
    """Store every int8 weight of a 4-bit DequantizeLinear as int4 blocks; return how many.

    A blocked DequantizeLinear keeps its blocks; a per-channel one gets one block
    spanning the input dimension.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight = initializers.get(node.input[0])
        scale = initializers.get(node.input[1])
        zero = initializers.get(node.input[2])
        if weight is None or scale is None or zero is None or weight.data_type != TensorProto.INT8:
            continue
        q = numpy_helper.to_array(weight)
        if q.ndim != 2 or q.min() < -8 or q.max() > 7:
            continue
        scales = numpy_helper.to_array(scale).astype(np.float32)
        block_size = _attribute(node, "block_size", 0)
        if block_size:
            block_axis, new_scale = _attribute(node, "axis", 1), scales
        else:
            axis = _attribute(node, "axis", 1)
            block_axis = 1 - axis  # the input dimension: one block spans it
            block_size = int(q.shape[block_axis])
            block_shape = list(q.shape)
            block_shape[block_axis] = 1
            new_scale = np.broadcast_to(
                scales.reshape([-1 if i == axis else 1 for i in range(2)]), block_shape
            ).astype(np.float32)
        names = (f"{weight.name}_int4", f"{weight.name}_int4_scale", f"{weight.name}_int4_zero")
        model.graph.initializer.extend(
            [
                helper.make_tensor(names[0], TensorProto.INT4, list(q.shape), q.ravel().tolist()),
                numpy_helper.from_array(np.ascontiguousarray(new_scale), names[1]),
                helper.make_tensor(
                    names[2],
                    TensorProto.INT4,
                    list(new_scale.shape),
                    [0] * int(new_scale.size),
                ),
            ]
        )
        node.input[0], node.input[1], node.input[2] = names
        _set_attributes(node, axis=block_axis, block_size=block_size)
        done += 1
    del model.graph.value_info[:]  # recorded as float/int8 by the exporter
    drop_unused_initializers(model)
    return done


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(helper.get_attribute_value(attribute))
    return default


def _set_attributes(node: onnx.NodeProto, **values: int) -> None:
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in values.items())
