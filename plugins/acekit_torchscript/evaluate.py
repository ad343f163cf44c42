"""Running one TorchScript node on concrete values (the example inputs' values).

Tensor ops and most scalar ops run through ``torch.ops`` with the exact overload the
node matched. Ops over TorchScript's generic containers (``t[]``, ``Dict``, ``str``)
cannot be called from Python that way, so they have Python implementations here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from acekit_torchscript.schemas import functional_name, operator


class CannotEvaluateError(RuntimeError):
    """A node whose op cannot be run from Python."""


def _getitem(args: Sequence[Any]) -> Any:
    return args[0][args[1]]


def _set_item(args: Sequence[Any]) -> Any:
    args[0][args[1]] = args[2]
    return args[0]


def _slice(args: Sequence[Any]) -> Any:
    start, end, step = [*args[1:], None, None, 1][:3]
    return args[0][start:end:step]


def _append(args: Sequence[Any]) -> Any:
    args[0].append(args[1])
    return args[0]


def _extend(args: Sequence[Any]) -> None:
    args[0].extend(args[1])


def _insert(args: Sequence[Any]) -> None:
    args[0].insert(args[1], args[2])


def _pop(args: Sequence[Any]) -> Any:
    return args[0].pop(args[1]) if len(args) > 1 else args[0].pop()


def _format(args: Sequence[Any]) -> str:
    return str(args[0]).format(*args[1:])


def _range_length(args: Sequence[Any]) -> int:
    low, high, step = args
    return max(0, math.ceil((high - low) / step))


def _derive_index(args: Sequence[Any]) -> int:
    index, start, step = args
    return int(start + index * step)


def _concat(args: Sequence[Any]) -> Any:
    if isinstance(args[0], str):
        return args[0] + str(args[1])
    return list(args[0]) + list(args[1])


def _dict_get(args: Sequence[Any]) -> Any:
    return args[0].get(args[1], args[2] if len(args) > 2 else None)


#: Container ops that move entries around: they run on the entries themselves, so a
#: list of graph tensors stays a list of graph tensors. Each applies when the first
#: argument is a list, tuple, dict or string.
STRUCTURAL_OPS: dict[str, Callable[[Sequence[Any]], Any]] = {
    "aten::__getitem__": _getitem,
    "aten::_set_item": _set_item,
    "aten::slice": _slice,
    "aten::len": lambda args: len(args[0]),
    "aten::append": _append,
    "aten::extend": _extend,
    "aten::insert": _insert,
    "aten::pop": _pop,
    "aten::clear": lambda args: args[0].clear(),
    "aten::reverse": lambda args: args[0].reverse(),
    "aten::list": lambda args: list(args[0]),
    "aten::copy": lambda args: type(args[0])(args[0]),
    "aten::add": _concat,
    "aten::keys": lambda args: list(args[0].keys()),
    "aten::values": lambda args: list(args[0].values()),
    "aten::items": lambda args: list(args[0].items()),
    "aten::get": _dict_get,
}

#: Ops on containers, strings and numbers that TorchScript declares generically and
#: so cannot be called through ``torch.ops``: they run on example values.
VALUE_OPS: dict[str, Callable[[Sequence[Any]], Any]] = {
    "aten::eq": lambda args: args[0] == args[1],
    "aten::ne": lambda args: args[0] != args[1],
    "aten::__contains__": lambda args: args[1] in args[0],
    "aten::count": lambda args: args[0].count(args[1]),
    "aten::index": lambda args: args[0].index(args[1]),
    "aten::sorted": lambda args: sorted(args[0]),
    "aten::startswith": lambda args: str(args[0]).startswith(args[1]),
    "aten::endswith": lambda args: str(args[0]).endswith(args[1]),
    "aten::join": lambda args: str(args[0]).join(args[1]),
    "prim::min": lambda args: min(args[0]) if len(args) == 1 else min(args),
    "prim::max": lambda args: max(args[0]) if len(args) == 1 else max(args),
    "aten::format": _format,
    "aten::str": lambda args: str(args[0]),
    "aten::warn": lambda args: None,
    "aten::__range_length": _range_length,
    "aten::__derive_index": _derive_index,
}

_CONTAINER_TYPES = (list, tuple, dict, str)
#: Value ops that run in Python whatever their arguments.
_ALWAYS_PYTHON = frozenset(
    {"aten::format", "aten::warn", "aten::str", "aten::__range_length", "aten::__derive_index"}
)


def structural_op(name: str, args: Sequence[Any]) -> Callable[[Sequence[Any]], Any] | None:
    """The implementation of a container op moving ``args``' entries, if ``name`` is one."""
    impl = STRUCTURAL_OPS.get(name)
    if impl is not None and args and isinstance(args[0], _CONTAINER_TYPES):
        return impl
    return None


def value_op(name: str, args: Sequence[Any]) -> Callable[[Sequence[Any]], Any] | None:
    """The Python implementation of a generic op on example values, if it has one."""
    impl = VALUE_OPS.get(name)
    if impl is None:
        return None
    if name in _ALWAYS_PYTHON or (args and isinstance(args[0], _CONTAINER_TYPES)):
        return impl
    return None


def _coerce(argument: torch._C.Argument, value: Any) -> Any:
    # Numbers stand for the 0-dim tensors of traced shape arithmetic (NumToTensor).
    if str(argument.type) == "Tensor" and isinstance(value, bool | int | float):
        return torch.tensor(value)
    return value


def evaluate(
    node: torch._C.Node,
    schema: torch._C.FunctionSchema | None,
    args: Sequence[Any],
    *,
    functional: bool = False,
) -> list[Any]:
    """The results of ``node`` applied to concrete ``args``, one per node output.

    With ``functional``, an in-place op runs as its out-of-place twin (``relu`` for
    ``relu_``), so that neither the example tensors nor the model's are modified.
    """
    kind = str(node.kind())
    impl = structural_op(kind, args) or value_op(kind, args)
    if impl is not None:
        result = impl(args)
    elif schema is None:
        raise CannotEvaluateError(f"{kind} has no operator schema")
    else:
        name = functional_name(schema.name) if functional else schema.name
        try:
            op = operator(name, schema.overload_name)
        except (AttributeError, RuntimeError) as error:
            raise CannotEvaluateError(
                f"{name}.{schema.overload_name} cannot be called from Python: {error}"
            ) from error
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for argument, value in zip(schema.arguments, args, strict=False):
            value = _coerce(argument, value)
            if argument.kwarg_only:
                keywords[argument.name] = value
            else:
                positional.append(value)
        result = op(*positional, **keywords)
    return results_of(node, result)


def results_of(node: torch._C.Node, result: Any) -> list[Any]:
    """An op's return value as one item per node output."""
    count = node.outputsSize()
    if count == 0:
        return []
    if count == 1:
        return [result]
    return list(result)
