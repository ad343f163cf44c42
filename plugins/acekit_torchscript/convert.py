"""Schema-driven conversion of a TorchScript op call to an IR node.

IR op names follow PyTorch's functional names, and so do their inputs and attributes,
which makes most conversions mechanical: the IR schema's inputs are taken from the
aten arguments of the same name (``self`` is the IR's ``input``), its attributes from
the static arguments of the same name. A parameter that is both (``reshape``'s
``shape``, ``select``'s ``index``) is an attribute when static and an input (a ``pack``
for int lists) when the graph computes it. An aten argument the IR op has no place for
is fine when it holds its default (or never changes the result, like
``cudnn_enabled``); otherwise the call cannot be expressed and is reported with the
argument named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from acekit.ir import OPS, OpSchema, Value
from acekit.ops import OPDEFS
from acekit_torchscript.calls import OpCall, UnsupportedError
from acekit_torchscript.entries import resolve

#: aten arguments that select an implementation and never change the result.
IGNORED_ARGUMENTS: Final = frozenset(
    {"cudnn_enabled", "cudnn_enable", "benchmark", "deterministic", "allow_tf32", "non_blocking"}
)

#: IR input names spelled differently in aten schemas.
_INPUT_ALIASES: Final = {"input": ("input", "self")}


def ir_schema(op: str) -> OpSchema:
    """The IR schema of ``op``; a missing op is reported as unsupported."""
    schema = OPS.get(op)
    if schema is None:
        raise UnsupportedError(f"the IR has no op {op!r}")
    return schema


def has_op(op: str) -> bool:
    """Whether the IR knows ``op`` (the table grows as plugins register ops)."""
    return op in OPS


def _argument_for(call: OpCall, ir_name: str, renames: Mapping[str, str]) -> str | None:
    for aten_name, target in renames.items():
        if target == ir_name and call.has(aten_name):
            return aten_name
    for candidate in _INPUT_ALIASES.get(ir_name, (ir_name,)):
        if call.has(candidate) and candidate not in renames:
            return candidate
    return None


def _inputs(
    call: OpCall, schema: OpSchema, renames: Mapping[str, str], used: set[str]
) -> list[Value | None]:
    if schema.variadic:
        for name in call.names:
            entry = call.arg(name)
            if isinstance(entry, list | tuple):
                used.add(name)
                return [call.value_of(item) for item in entry]
        raise UnsupportedError(f"{call.kind} has no list of tensors for IR op {schema.name!r}")
    inputs: list[Value | None] = []
    for ir_name in schema.inputs:
        aten_name = _argument_for(call, ir_name, renames)
        if aten_name is None or aten_name in used or call.is_none(aten_name):
            inputs.append(None)
            continue
        if ir_name in schema.attributes:
            if not call.is_dynamic(aten_name):
                inputs.append(None)  # static: an attribute, set below
                continue
            used.add(aten_name)
            if isinstance(call.arg(aten_name), list | tuple):
                inputs.append(call.sized(aten_name)[1])
            else:
                inputs.append(call.tensor(aten_name))
            continue
        used.add(aten_name)
        inputs.append(call.tensor(aten_name))
    return inputs


def fill_missing(call: OpCall, schema: OpSchema, inputs: list[Value | None]) -> list[Value]:
    """Trailing missing optional inputs are left out; one before a given input becomes a
    ``constant{value=None}`` (the IR's spelling of an absent optional input)."""
    inputs = list(inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    required = len(schema.inputs) - schema.optional_inputs
    if not schema.variadic and len(inputs) < required:
        missing = schema.inputs[len(inputs)]
        raise UnsupportedError(f"IR op {schema.name!r} needs input {missing!r}, which is None")
    return [
        value if value is not None else call.builder.constant(None, call.site) for value in inputs
    ]


def is_default(call: OpCall, name: str, value: Any) -> bool:
    """Whether static ``value`` is argument ``name``'s default in the aten schema."""
    argument = call.schema.arguments[call.names.index(name)]
    if not argument.has_default_value():
        return False
    default = argument.default_value
    if isinstance(value, tuple):
        if isinstance(default, list | tuple):
            return value == tuple(default)
        return all(item == default for item in value)
    return bool(value == default)


def convert_to(
    call: OpCall,
    op: str,
    *,
    renames: Mapping[str, str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    skip: frozenset[str] = frozenset(),
    drop_defaults: frozenset[str] = frozenset(),
) -> list[Any]:
    """Convert ``call`` to IR op ``op`` by matching argument names to the IR schema.

    ``renames`` maps aten argument names to IR names (``train`` -> ``training``),
    ``attrs`` adds attributes computed by the caller, ``skip`` names aten arguments
    the caller has dealt with, ``drop_defaults`` names attributes left out when they
    hold the aten default (``alpha=1``).
    """
    renames = renames or {}
    schema = ir_schema(op)
    used: set[str] = set(skip)
    inputs = fill_missing(call, schema, _inputs(call, schema, renames, used))
    attributes: dict[str, Any] = dict(attrs or {})
    for name in call.names:
        if name in used or not call.has(name):
            continue
        target = renames.get(name, name)
        if target in attributes:
            continue
        if target in schema.attributes:
            value = call.static(name)
            if value is not None and not (name in drop_defaults and is_default(call, name, value)):
                attributes[target] = value
            continue
        if name in IGNORED_ARGUMENTS:
            continue
        entry = resolve(call.arg(name))
        value = call.static(name)
        if entry is None or is_default(call, name, value):
            continue
        raise UnsupportedError(
            f"argument {name}={value!r} has no counterpart in IR op {op!r} "
            f"(attributes: {', '.join(schema.attributes) or 'none'})"
        )
    count = schema.outputs if schema.outputs is not None else len(call.results)
    results = list(call.results) + [None] * (count - len(call.results))
    return call.emit(op, inputs, attributes, results=results[:count])


def convert_same_name(call: OpCall) -> list[Any]:
    """Convert ``ns::<name>`` to the IR op whose definition lists it (``aten::bmm`` is
    ``matmul``, a plugin's ``mylib::fused`` its own op), else ``aten::<op>`` to the IR op
    of the same name, if the IR has one."""
    namespace, _, name = call.kind.partition("::")
    opdef = OPDEFS.for_aten(namespace, name, call.schema.overload_name)
    if opdef is not None and namespace != "aten":
        # A library's own op binds in order, as in the FX parser: its arguments need not
        # be named like the IR's (``x`` for ``input``).
        renames = dict(zip(call.names, opdef.parameters, strict=False))
        return convert_to(call, opdef.name, renames=renames)
    if opdef is not None:
        return convert_to(call, opdef.name)
    if namespace != "aten":
        raise UnsupportedError(f"no converter for {call.kind}")
    return convert_to(call, name)
