"""W4A16 storage: 4-bit weights as ONNX ``int4`` initializers read by ``DequantizeLinear``.

The simulation quantizes linear weights to 4 bits per output channel (values in
``[-7, 7]``, held in int8 containers after export). TensorRT runs INT4 weights only in
block-quantized form, so each weight is written as ``DequantizeLinear(int4, scale,
axis, block_size)`` with one block spanning the whole input dimension: the same grid
as per-channel, in the block layout (opset 21).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def to_int4(model: onnx.ModelProto) -> int:
    """Store every int8 weight of a 4-bit DequantizeLinear as int4 blocks; return how many."""
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
        axis = _axis(node)
        block_axis = 1 - axis  # the input dimension: blocks run along it
        scales = numpy_helper.to_array(scale).astype(np.float32)
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
                    names[2], TensorProto.INT4, block_shape, [0] * int(np.prod(block_shape))
                ),
            ]
        )
        node.input[0], node.input[1], node.input[2] = names
        del node.attribute[:]
        node.attribute.extend(
            [
                helper.make_attribute("axis", block_axis),
                helper.make_attribute("block_size", int(q.shape[block_axis])),
            ]
        )
        done += 1
    del model.graph.value_info[:]  # recorded as float/int8 by the exporter
    used = {name for n in model.graph.node for name in n.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return done


def _axis(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "axis":
            return int(helper.get_attribute_value(attribute))
    return 1
