"""Calls symbolic tracing cannot look into, captured with torch.export and inlined.

``torch.fx.wrap``-ed functions (torchvision's Swin attention) and modules marked as
leaves appear as one opaque call in the FX graph. They are exported on their example
arguments (so shape-dependent Python runs with the example's shapes, which the inlined
ops are then specialised to) and their ATen ops are converted in place of the call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.export import ExportedProgram

from acekit.ir import Value
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.converter import Converter
from acekit_fx.export import convert_program, export_dynamic, functional
from acekit_fx.handlers import lookup
from acekit_fx.naming import describe_target, sanitize
from acekit_fx.values import ConstTensor


class _Call(torch.nn.Module):
    """``fn(*args, **kwargs)`` with the tensor arguments taken from ``forward``'s inputs."""

    def __init__(self, fn: Any, args: Any, kwargs: Any, slots: list[tuple[str, Any]]) -> None:
        super().__init__()
        if isinstance(fn, torch.nn.Module):
            self.inner = fn
            self._fn = None
        else:
            self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._slots = slots

    def forward(self, *tensors: torch.Tensor) -> Any:
        args = list(self._args)
        kwargs = dict(self._kwargs)
        for (where, key), tensor in zip(self._slots, tensors, strict=True):
            if where == "args":
                args[key] = tensor
            else:
                kwargs[key] = tensor
        fn = self.inner if self._fn is None else self._fn
        return fn(*args, **kwargs)


def _export_call(
    cx: NodeContext,
    fx_node: torch.fx.Node,
    module: torch.nn.Module | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    dynamic: bool = True,
) -> tuple[ExportedProgram, _Call, list[Any], list[torch.Tensor], bool]:
    """Export the call on its example arguments.

    Returns (program, wrapper, bound tensors, examples, whether some dim is dynamic);
    with ``dynamic`` the dims that follow the model's free input dims stay symbolic.
    """
    concrete_args = list(cx.concrete_args)
    concrete_kwargs = dict(cx.concrete_kwargs)
    slots: list[tuple[str, Any]] = []
    bound_tensors: list[Any] = []
    examples: list[torch.Tensor] = []
    free: list[dict[int, int]] = []
    places: list[tuple[str, Any, Any, Any, Any]] = [
        ("args", i, args[i], concrete_args[i], fx_node.args[i]) for i in range(len(args))
    ] + [
        ("kwargs", name, kwargs[name], concrete_kwargs[name], fx_node.kwargs[name])
        for name in kwargs
    ]
    for where, slot, bound, value, fx_arg in places:
        if isinstance(value, torch.Tensor):
            slots.append((where, slot))
            bound_tensors.append(bound)
            examples.append(value)
            free.append(cx.converter.free_dims_of(fx_arg, value) if dynamic else {})
        elif isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
            raise Unsupported("a call taking a list of tensors cannot be inlined")
    fn: Any = module if module is not None else fx_node.target
    wrapper = _Call(fn, concrete_args, concrete_kwargs, slots).eval()
    # Plain functions called alike (Swin's attention, block after block) export alike.
    signature = None if module is not None else _signature(fn, concrete_args, concrete_kwargs)
    key = None if signature is None else (signature, tuple(tuple(sorted(f.items())) for f in free))
    cached = cx.converter.export_cache.get(key) if key is not None else None
    if cached is not None:
        return cached, wrapper, bound_tensors, examples, any(free)
    try:
        # Dims that follow the model's free input dims stay symbolic inside the call.
        program = export_dynamic(wrapper, examples, free, varargs=True)
    except Exception as error:
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else ""
        raise Unsupported(
            f"torch.fx cannot look into {describe_target(fx_node, module)} and torch.export "
            f"could not capture it: {type(error).__name__}: {first_line}"
        ) from None
    program = functional(program)
    if key is not None:
        cx.converter.export_cache[key] = program
    return program, wrapper, bound_tensors, examples, any(free)


def _signature(fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A key equal for calls of ``fn`` that export to the same program, else ``None``."""

    def describe(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype, value.device.type)
        if isinstance(value, list | tuple):
            return (type(value).__name__, tuple(describe(v) for v in value))
        if value is None or isinstance(value, bool | int | float | str | torch.dtype):
            return value
        raise TypeError("not a plain value")

    try:
        return (id(fn), describe(args), describe(sorted(kwargs.items())))
    except TypeError:
        return None


def check_call(
    cx: NodeContext,
    fx_node: torch.fx.Node,
    module: torch.nn.Module | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Raise :class:`Unsupported` when the call, once exported, uses ops the IR lacks.

    For a call whose inputs could not be converted: it cannot be inlined, but the user
    should still hear about what inside it is unsupported, in the same run.
    """
    program = _export_call(cx, fx_node, module, args, kwargs, dynamic=False)[0]
    unknown = [
        describe_target(node)
        for node in program.graph.nodes
        if node.op == "call_function" and lookup(node) is None
    ]
    if unknown:
        inner = ", ".join(dict.fromkeys(unknown))
        raise Unsupported(f"captured with torch.export, it uses ops the IR does not know: {inner}")


def inline_call(
    parent: Converter,
    cx: NodeContext,
    fx_node: torch.fx.Node,
    module: torch.nn.Module | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Convert an opaque call by exporting it on its example arguments.

    Dims that follow the model's free input dims are exported dynamic; when that needs
    ops the IR lacks, the call is exported again at the example's sizes (the dims are
    then reported as fixed by the model, at this call).
    """
    before = set(parent.graph.nodes) if parent.shadow else None
    try:
        return _inline(parent, cx, fx_node, module, args, kwargs, dynamic=True)
    except _DynamicUnsupported:
        assert before is not None
        # Drop what the dynamic attempt added; parameter nodes stay (they are reused).
        added = [n for n in parent.graph.nodes if n not in before and n.op != "parameter"]
        for node in reversed(added):
            parent.graph.erase(node)
        return _inline(parent, cx, fx_node, module, args, kwargs, dynamic=False)


class _DynamicUnsupported(Exception):
    """The call exported with dynamic dims uses ops the IR lacks."""


def _inline(
    parent: Converter,
    cx: NodeContext,
    fx_node: torch.fx.Node,
    module: torch.nn.Module | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    dynamic: bool,
) -> Any:
    program, wrapper, bound_tensors, examples, is_dynamic = _export_call(
        cx, fx_node, module, args, kwargs, dynamic=dynamic
    )
    module_path = str(fx_node.target) if module is not None else ""
    child = Converter(
        parent.graph,
        parent.root_name,
        log_nodes=False,
        prefix=sanitize(fx_node.name),
        parent=parent,
        subgraph=cx.subgraph,
    )
    # The user knows the call, not the ATen ops inside: report the call, naming them.
    child.unsupported = []
    user_inputs = [b if isinstance(b, Value | ConstTensor) else cx.value(b) for b in bound_tensors]

    def ref_of(target: str) -> str:
        inner = target.removeprefix("inner.")
        return f"{module_path}.{inner}" if module_path else inner

    def tensor_of(target: str) -> torch.Tensor | None:
        try:
            return wrapper.get_parameter(target)
        except AttributeError:
            pass
        try:
            return wrapper.get_buffer(target)
        except AttributeError:
            return None

    leaves, structure = convert_program(
        child,
        program,
        examples,
        graph_inputs=False,
        user_inputs=user_inputs,
        ref_of=ref_of,
        tensor_of=tensor_of,
    )
    if child.unsupported and is_dynamic:
        raise _DynamicUnsupported()
    if child.unsupported:
        inner = ", ".join(dict.fromkeys(op.op for op in child.unsupported))
        raise Unsupported(f"captured with torch.export, it uses ops the IR does not know: {inner}")
    result = _nest(leaves, structure)
    if isinstance(result, Value) and result.producer is not None:
        producer = result.producer
        if producer.name.startswith(child.prefix + "_") and len(producer.outputs) == 1:
            # The last inlined node stands for the call: it takes the call's name.
            parent.graph.rename(producer, parent.graph.unique_name(sanitize(fx_node.name)))
        cx.final = producer
    return result


def _nest(leaves: list[Any], structure: Any) -> Any:
    if structure is None:
        return leaves[0]
    if isinstance(structure, int):
        return leaves[structure]
    kind, items = structure
    if kind == "tuple":
        return tuple(_nest(leaves, item) for item in items)
    if kind == "list":
        return [_nest(leaves, item) for item in items]
    if kind == "dict":
        return {key: _nest(leaves, item) for key, item in items}
    return items
