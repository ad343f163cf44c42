"""Shapes, attributes and indexing: ``x.shape[0]``, ``x.size(1)``, ``x[:, 0]``, ``t[2]``.

Shape arithmetic stays in the graph as IR ops (``shape``, ``gather``, ``eq``, ``assert``)
for a cleanup pass to fold; tuples of values (a multi-output op) are indexed directly,
without a node; tensor indexing becomes ``select``/``slice``/``unsqueeze`` steps, or
``index`` for indexing with tensors.
"""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.fx

from acekit.ir import Value
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers.registry import function, lowers, method
from acekit_fx.values import ConstTensor


@method("size")
def convert_size(cx: NodeContext, input: Any, dim: Any = None) -> Value:
    """``x.size()`` or ``x.size(d)``: a ``shape`` node."""
    axis = cx.static(dim, "dim")
    attrs = {} if axis is None else {"dim": int(axis)}
    return cx.out("shape", [cx.tensor(input)], attrs)


@lowers("dim")
def convert_dim(cx: NodeContext, input: Any) -> Value:
    """``x.dim()``: the rank, a ``dim`` node."""
    return cx.out("dim", [cx.tensor(input)])


@lowers("numel")
def convert_numel(cx: NodeContext, input: Any) -> Value:
    """``x.numel()``."""
    return cx.out("numel", [cx.tensor(input)])


@function(builtins.len)
def convert_len(cx: NodeContext, obj: Any) -> Any:
    """``len(x)``: the first size of a tensor, or the length of a tuple of values."""
    if isinstance(obj, Value) and isinstance(cx.concrete(obj), torch.Tensor):
        return cx.out("shape", [obj], {"dim": 0})
    if isinstance(obj, tuple | list):
        return len(obj)
    raise Unsupported("len() of a value computed by the graph")


@function(torch.sym_sum)
def convert_sym_sum(cx: NodeContext, terms: Any) -> Any:
    """``torch.sym_sum([a, b])``, dynamo's sum of symbolic sizes: a chain of ``add`` nodes."""
    values = [t for t in terms if isinstance(t, Value)]
    constant = sum(t for t in terms if not isinstance(t, Value))
    if not values:
        return constant
    rest = [*values[1:], *([constant] if constant else [])]
    total = values[0]
    # Intermediate sums are helpers; the last add is the node that stands for sym_sum.
    for term in rest[:-1]:
        total = cx.helper("add", [total, cx.value(term)]).output
    return cx.out("add", [total, cx.value(rest[-1])]) if rest else total


@lowers("assert")
def convert_assert(cx: NodeContext, condition: Any, message: Any = "") -> None:
    """``torch._assert(cond, msg)``: an ``assert`` node (no result)."""
    cx.emit(
        "assert",
        [cx.value(condition)],
        {"message": str(cx.static(message, "message"))},
        num_outputs=0,
    )
    return None


@function(torch.fx._symbolic_trace._assert_is_none)
def convert_assert_is_none(cx: NodeContext, value: Any, message: Any = "") -> None:
    """FX's own check that an argument it was given as ``None`` stayed ``None``.

    It guards the trace (``concrete_args``), not the model: the IR keeps no node for it.
    """
    return None


@function(builtins.getattr)
def convert_getattr(cx: NodeContext, obj: Any, name: Any, *default: Any) -> Any:
    """Attributes of tensors: ``shape`` and ``ndim`` are ops; ``dtype``/``device`` constants."""
    attr = cx.static(name, "attribute name")
    if type(obj).__module__ == "torch.return_types":  # x.max(1).values
        return getattr(obj, attr)
    if not isinstance(obj, Value):
        raise Unsupported(f"attribute {attr!r} of a value computed by the graph")
    if attr == "shape":
        return cx.out("shape", [obj])
    if attr == "ndim":
        return cx.out("dim", [obj])
    if attr in ("T", "mT", "mH", "H"):
        rank = obj.type.rank or 0
        dims = (
            tuple(range(rank))[::-1]
            if attr in ("T", "H")
            else (*range(rank - 2), rank - 1, rank - 2)
        )
        return cx.out("permute", [obj], {"dims": tuple(dims)})
    if attr == "data":
        return cx.out("detach", [obj])
    if attr in ("dtype", "device", "is_cuda", "requires_grad", "layout", "is_floating_point"):
        # Facts about the example tensor: the traced program was specialised on them.
        return cx.result
    raise Unsupported(f"tensor attribute {attr!r}")


@function(operator.getitem)
def convert_getitem(cx: NodeContext, obj: Any, index: Any) -> Any:
    """``obj[index]`` on tuples of values, shape values and tensors."""
    if isinstance(obj, tuple | list):
        if isinstance(index, Value):
            raise Unsupported("indexing a tuple with a value computed by the graph")
        return obj[cx.static(index, "index")]
    if isinstance(obj, ConstTensor):
        obj = cx.value(obj)
    if not isinstance(obj, Value):
        raise Unsupported(f"indexing {type(obj).__name__}")
    if not isinstance(cx.concrete(obj), torch.Tensor):
        return _gather(cx, obj, index)
    return index_tensor(cx, obj, index)


def _gather(cx: NodeContext, obj: Value, index: Any) -> Value:
    key = cx.static(index, "index into a shape")
    if isinstance(key, slice):
        encoded: Any = ("slice", key.start, key.stop, key.step)
    elif isinstance(key, int) and not isinstance(key, bool):
        encoded = key
    else:
        raise Unsupported(f"index {key!r} into a shape")
    return cx.out("gather", [obj], {"index": encoded})


def index_tensor(cx: NodeContext, tensor: Value, index: Any) -> Value:
    """Tensor indexing as IR steps; the last step stands for the FX node."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(_is_tensor_index(cx, item) for item in items):
        return _advanced(cx, tensor, items)
    rank = tensor.type.rank
    if rank is None:
        raise Unsupported("indexing a tensor of unknown rank")
    consuming = sum(1 for item in items if item is not None and item is not Ellipsis)
    steps: list[tuple[str, dict[str, Any], list[Value]]] = []
    dim = 0
    for item in items:
        if item is Ellipsis:
            dim += rank - consuming
        elif item is None:
            steps.append(("unsqueeze", {"dim": dim}, []))
            dim += 1
        elif isinstance(item, slice):
            step = _slice_step(cx, item, dim)
            if step is not None:
                steps.append(step)
            dim += 1
        elif isinstance(item, Value):
            steps.append(("select", {"dim": dim}, [item]))
        elif isinstance(item, int) and not isinstance(item, bool):
            steps.append(("select", {"dim": dim, "index": item}, []))
        else:
            raise Unsupported(f"index {item!r}")
    if not steps:
        return cx.out("identity", [tensor])
    current = tensor
    for i, (op, attrs, extra) in enumerate(steps):
        if i == len(steps) - 1:
            current = cx.out(op, [current, *extra], attrs)
        else:
            current = cx.helper(op, [current, *extra], attrs).output
    return current


def _slice_step(
    cx: NodeContext, item: slice, dim: int
) -> tuple[str, dict[str, Any], list[Value]] | None:
    start, stop, step = item.start, item.stop, item.step
    if isinstance(step, Value):
        raise Unsupported("a slice step computed by the graph")
    step = 1 if step is None else int(cx.static(step, "slice step"))
    if start is None and stop is None and step == 1:
        return None
    attrs: dict[str, Any] = {"dim": dim, "step": step}
    extra: list[Value] = []
    if isinstance(stop, Value):
        extra = [cx.value(0 if start is None else start), stop]
    elif isinstance(start, Value):
        extra = [start]
        attrs["end"] = None if stop is None else int(cx.static(stop, "slice end"))
    else:
        attrs["start"] = None if start is None else int(cx.static(start, "slice start"))
        attrs["end"] = None if stop is None else int(cx.static(stop, "slice end"))
    return ("slice", attrs, extra)


def _is_tensor_index(cx: NodeContext, item: Any) -> bool:
    if isinstance(item, ConstTensor):
        return True
    if isinstance(item, Value):
        return isinstance(cx.concrete(item), torch.Tensor)
    return isinstance(item, list)


def _advanced(cx: NodeContext, tensor: Value, items: list[Any]) -> Value:
    positions: list[int] = []
    indices: list[Value] = []
    for position, item in enumerate(items):
        if item is Ellipsis and position == len(items) - 1:
            break
        if isinstance(item, slice) and (item.start, item.stop, item.step) == (None, None, None):
            continue
        if not _is_tensor_index(cx, item):
            raise Unsupported("indexing that mixes tensors with ints, partial slices or None")
        if isinstance(item, list):
            item = ConstTensor(torch.tensor(item), "index", cx.subgraph, cx.location)
        positions.append(position)
        indices.append(cx.value(item))
    return cx.out("index", [tensor, *indices], {"positions": tuple(positions)})


@function(operator.setitem)
def convert_setitem(cx: NodeContext, obj: Any, index: Any, value: Any) -> Any:
    """``x[i] = v`` on a tensor the graph computes: an in-place write the IR cannot express."""
    raise Unsupported("in-place assignment into a tensor computed by the graph (x[i] = v)")
