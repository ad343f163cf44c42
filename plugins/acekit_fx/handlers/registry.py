"""The tables mapping FX targets to handlers, and the lookup the converter uses.

Which torch callables, Tensor methods and ATen ops mean an IR op is part of the op's
definition (:class:`acekit.ops.OpDef`), looked up in :data:`acekit.ops.OPDEFS`; a call
of one of them binds its arguments to the op's inputs and attributes
(:mod:`acekit_fx.handlers.generic`), unless this plugin lowers the op with its own
handler (:func:`lowers`: defaults, varargs, dtype arguments, computed sizes). The tables
here hold the rest: calls that are not one op (``addmm``, ``x.t()``, ``zeros``), ATen
overloads whose arguments differ from the torch function's, and modules.

A handler is called as ``handler(cx, *args, **kwargs)`` with the node's arguments as
bound values (``handler(cx, module, *args, **kwargs)`` for ``call_module``), so its
Python signature mirrors the torch function it stands for and binds positional and
keyword arguments the same way. It returns what the node is bound to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.fx

from acekit.ops import OPDEFS, OpDef

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)

FUNCTIONS: dict[Any, Handler] = {}
METHODS: dict[str, Handler] = {}
MODULES: dict[type, Handler] = {}
ATEN: dict[str, Handler] = {}
#: This plugin's handlers of IR ops, by op name, for the calls the op's definition lists.
LOWERINGS: dict[str, Handler] = {}
#: Handlers for functions of optional packages, by (module, attribute name), moved into
#: FUNCTIONS once that module is imported: a model calling the function has imported
#: it, and importing it here would cost every parse (torchvision imports torch._dynamo).
_OPTIONAL_FUNCTIONS: dict[tuple[str, str], Handler] = {}


def function(*targets: Any) -> Callable[[H], H]:
    """Register a handler for ``call_function`` nodes calling any of ``targets``."""

    def decorate(handler: H) -> H:
        for target in targets:
            FUNCTIONS[target] = handler
        return handler

    return decorate


def lowers(*ops: str) -> Callable[[H], H]:
    """Register the handler of the calls the definitions of ``ops`` list (their torch
    callables, Tensor methods and ATen ops), in place of the generic binding."""

    def decorate(handler: H) -> H:
        for op in ops:
            LOWERINGS[op] = handler
        return handler

    return decorate


def optional_function(module_name: str, attribute: str) -> Callable[[H], H]:
    """Register a handler for ``module_name.attribute`` of an optional package.

    Nothing is imported: the function is looked up once ``module_name`` has been
    imported (by the model that calls it).
    """

    def decorate(handler: H) -> H:
        _OPTIONAL_FUNCTIONS[(module_name, attribute)] = handler
        return handler

    return decorate


def method(*names: str) -> Callable[[H], H]:
    """Register a handler for ``call_method`` nodes (``x.view(...)``) of these names."""

    def decorate(handler: H) -> H:
        for name in names:
            METHODS[name] = handler
        return handler

    return decorate


def module(*types: type) -> Callable[[H], H]:
    """Register a handler for ``call_module`` nodes of these module classes."""

    def decorate(handler: H) -> H:
        for cls in types:
            MODULES[cls] = handler
        return handler

    return decorate


def aten(*names: str) -> Callable[[H], H]:
    """Register a handler for ATen ops: ``"conv2d"`` (every overload) or ``"add.Tensor"``."""

    def decorate(handler: H) -> H:
        for name in names:
            ATEN[name] = handler
        return handler

    return decorate


def lookup(node: torch.fx.Node, module: Any = None) -> Handler | None:
    """The handler for an FX node, or ``None`` when the IR has no op for it."""
    _ensure_loaded()
    target = node.target
    if node.op == "call_module":
        for cls in type(module).__mro__:
            if cls in MODULES:
                return MODULES[cls]
        return None
    if node.op == "call_method":
        name = str(target)
        found = _method(name)
        if found is None and name.endswith("_") and not name.endswith("__"):
            found = _method(name[:-1])  # x.add_(y): the functional op, rebound after
        return found
    if node.op != "call_function":
        return None
    if isinstance(target, torch._ops.OpOverload):
        packet = target.overloadpacket.__name__
        found = aten_handler(target.namespace, packet, target._overloadname)
        if found is None and packet.endswith("_") and not packet.startswith("_"):
            found = aten_handler(target.namespace, packet[:-1], "")
        return found
    if isinstance(target, torch._ops.OpOverloadPacket):  # torch.ops.mylib.op(x) under FX
        return aten_handler(target._qualified_op_name.partition("::")[0], target.__name__, "")
    if _OPTIONAL_FUNCTIONS:
        _register_imported_optionals()
    try:
        found = FUNCTIONS.get(target)
    except TypeError:  # unhashable target
        found = None
    if found is None:
        found = _handler_of(OPDEFS.for_function(target))
    if found is None:
        # dynamo may record Tensor methods as functions: torch.Tensor.view(x, ...)
        method_name = getattr(target, "__name__", None)
        if isinstance(method_name, str) and getattr(torch.Tensor, method_name, None) is target:
            found = _method(method_name)
    return found


def _method(name: str) -> Handler | None:
    return METHODS.get(name) or _handler_of(OPDEFS.for_method(name))


def aten_handler(namespace: str, packet: str, overload: str) -> Handler | None:
    """The handler of ATen-style op ``namespace::packet.overload``, or ``None``.

    An explicit ATen handler (this plugin's, for arguments that differ from the torch
    function's) wins over the op the definitions name.
    """
    _ensure_loaded()
    if namespace == "aten":
        found = ATEN.get(f"{packet}.{overload}") or ATEN.get(packet)
        if found is not None:
            return found
    return _handler_of(OPDEFS.for_aten(namespace, packet, overload))


def _handler_of(opdef: OpDef | None) -> Handler | None:
    if opdef is None:
        return None
    from acekit_fx.handlers.generic import generic_handler

    return LOWERINGS.get(opdef.name) or generic_handler(opdef)


def _register_imported_optionals() -> None:
    for module_name, attribute in [key for key in _OPTIONAL_FUNCTIONS if key[0] in sys.modules]:
        handler = _OPTIONAL_FUNCTIONS.pop((module_name, attribute))
        target = getattr(sys.modules[module_name], attribute, None)
        if target is not None:
            FUNCTIONS[target] = handler


_HANDLER_MODULES = ("torch_ops", "indexing", "modules", "attention", "aten", "generic")


def _ensure_loaded() -> None:
    # The handler modules fill the tables when imported (by name: the package exports
    # decorators called `aten` and `module`, which shadow the submodules).
    import importlib

    for name in _HANDLER_MODULES:
        importlib.import_module(f"acekit_fx.handlers.{name}")
