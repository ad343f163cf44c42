"""The generic lowering of a call to the op its definition maps it to.

A call listed in an op's definition (``functions``, ``methods``, ``aten``) binds like the
op's torch function: positional arguments fill the schema's inputs, then its attributes,
in order; keyword arguments go by name. Inputs become IR values (a static int list that
is also an attribute, like ``reshape``'s shape, stays an attribute; a computed one is a
``pack`` input), attributes parse-time constants of their declared kind. ``inplace``
flags are ignored (the IR is functional; the converter rebinds in-place results) and so
is any other argument left at ``None``; anything else the op has no place for is
reported, naming the argument.
"""

from __future__ import annotations

from typing import Any

import torch

from acekit.ir import AttrSpec, Value
from acekit.ops import OpDef
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers.registry import Handler

#: Keyword arguments that never change the result of a functional op.
_IGNORED = frozenset({"inplace"})
#: One handler per definition (by identity: a redefined op gets a new one).
_HANDLERS: dict[int, tuple[OpDef, Handler]] = {}


def generic_handler(opdef: OpDef) -> Handler:
    """The handler binding calls to ``opdef``'s schema."""
    cached = _HANDLERS.get(id(opdef))
    if cached is not None and cached[0] is opdef:
        return cached[1]

    def handler(cx: NodeContext, *args: Any, **kwargs: Any) -> Any:
        return bind_op(cx, opdef, args, kwargs)

    handler.__name__ = f"convert_{opdef.name}"
    _HANDLERS[id(opdef)] = (opdef, handler)
    return handler


def bind_op(cx: NodeContext, opdef: OpDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Emit ``opdef``'s node for a call with ``args`` and ``kwargs``; returns its output(s)."""
    schema = opdef.schema
    if schema.variadic:
        raise Unsupported(
            f"IR op {opdef.name!r} takes a variable number of inputs: its parser handler "
            "must say which arguments they are"
        )
    bound = _bind(opdef, args, kwargs)
    inputs: list[Value | None] = []
    attrs: dict[str, Any] = {}
    for name in schema.inputs:
        argument = bound.get(name)
        spec = schema.attributes.get(name)
        if argument is None or spec is None:
            inputs.append(None if argument is None else cx.value(argument))
        elif spec.kind == "ints":
            static, packed = cx.sized(argument, name)
            inputs.append(packed)
            if static is not None:
                attrs[name] = static
        elif isinstance(argument, Value):
            inputs.append(argument)
        else:
            inputs.append(None)
            attrs[name] = _attribute(cx, spec, argument, name)
    for name, spec in schema.attributes.items():
        if name in bound and name not in schema.inputs:
            attrs[name] = _attribute(cx, spec, bound[name], name)
    values = _fill(cx, opdef, inputs)
    if schema.outputs == 1:
        return cx.out(opdef.name, values, attrs)
    count = len(cx.result) if schema.outputs is None else schema.outputs
    return cx.emit(opdef.name, values, attrs, num_outputs=count).outputs


def _bind(opdef: OpDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Argument name -> value, as the op's torch function would bind them."""
    parameters = opdef.parameters
    if len(args) > len(parameters):
        raise Unsupported(
            f"IR op {opdef.name!r} takes at most {len(parameters)} arguments "
            f"({', '.join(parameters)}), got {len(args)}"
        )
    bound = dict(zip(parameters, args, strict=False))
    for key, value in kwargs.items():
        if key in parameters:
            if key in bound:
                raise Unsupported(f"argument {key!r} of {opdef.name!r} given twice")
            bound[key] = value
        elif value is not None and key not in _IGNORED:
            raise Unsupported(
                f"argument {key}={value!r} has no counterpart in IR op {opdef.name!r} "
                f"(parameters: {', '.join(parameters)})"
            )
    return bound


def _attribute(cx: NodeContext, spec: AttrSpec, argument: Any, name: str) -> Any:
    """A parse-time constant in the form the attribute's kind holds."""
    if spec.kind == "ints":
        return None if argument is None else cx.ints(argument, name)
    value = cx.static(argument, name)
    if value is None:
        return None
    if spec.kind == "float":
        return float(value)
    if spec.kind == "int":
        return int(value)
    if spec.kind == "bool":
        return bool(value)
    if spec.kind == "dtype":
        return cx.dtype(value) if isinstance(value, torch.dtype) else value
    if spec.kind == "floats":
        return tuple(float(v) for v in value)
    return tuple(value) if isinstance(value, list) else value


def _fill(cx: NodeContext, opdef: OpDef, inputs: list[Value | None]) -> list[Value]:
    """Trailing absent inputs left out, absent ones before a given input ``None``
    constants; a required input that is absent is reported."""
    while inputs and inputs[-1] is None:
        inputs.pop()
    schema = opdef.schema
    required = len(schema.inputs) - schema.optional_inputs
    if len(inputs) < required:
        raise Unsupported(f"IR op {opdef.name!r} needs input {schema.inputs[len(inputs)]!r}")
    return [cx.none() if value is None else value for value in inputs]
