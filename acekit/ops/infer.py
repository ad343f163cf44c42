"""Type rules: the types a node's outputs get from its inputs' types and its attributes.

An op's own ``infer`` rule answers when it has one; otherwise the kernel runs on meta
tensors (shapes and dtypes, no data), which every torch kernel supports. Values whose
run-time form is not a tensor (python ints from shape arithmetic) and symbolic sizes are
not guessed: the answer is then ``None`` and the caller runs the graph instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from acekit.ir.graph import Node, Value
from acekit.ir.tensor_type import TensorType
from acekit.ops.opdef import OpDef
from acekit.ops.registry import OPDEFS

_UNKNOWN: Any = object()


def infer_types(node: Node, opdefs: Any = OPDEFS) -> list[TensorType] | None:
    """The output types of ``node``, or ``None`` when they cannot be known statically."""
    opdef: OpDef | None = opdefs.get(node.op)
    if opdef is None:
        return None
    if opdef.infer is not None:
        if any(value.type.shape is None for value in node.inputs):
            return None
        return list(opdef.infer([value.type for value in node.inputs], dict(node.attrs)))
    if opdef.kernel is None:
        return None
    inputs = [_meta(value) for value in node.inputs]
    if any(item is _UNKNOWN for item in inputs):
        return None
    kwargs = dict(node.attrs)
    if opdef.uses_training and kwargs.get("training") is None:
        kwargs["training"] = False
    try:
        result = opdef.kernel(*inputs, **kwargs)
    except Exception:  # any failure means "run the graph instead"
        return None  # a kernel that reads data, asserts on it, or lacks a meta kernel
    results = list(result) if len(node.outputs) > 1 else [result]
    if len(results) != len(node.outputs) or not all(isinstance(r, torch.Tensor) for r in results):
        return None
    return [TensorType.of(r) for r in results]


def _meta(value: Value) -> Any:
    """A stand-in for ``value`` on the meta device, the constant itself, or unknown."""
    producer = value.producer
    if producer is not None and producer.op == "constant" and "ref" not in producer.attrs:
        return producer.attrs.get("value")
    shape, dtype = value.type.shape, value.type.dtype
    if dtype is None or shape is None or not all(isinstance(d, int) for d in shape):
        return _UNKNOWN
    if not shape and not dtype.is_floating_point:
        return _UNKNOWN  # a python int or bool at run time, not a 0-d tensor
    return torch.empty(_ints(shape), dtype=dtype, device="meta")


def _ints(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)
