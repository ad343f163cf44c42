"""Names and places: IR node names, subgraph paths and source locations of FX nodes."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import torch
import torch.fx

_STACK_FRAME_RE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_IDENTIFIER_RE = re.compile(r"[^0-9A-Za-z_]+")


def subgraph_path(root: str, module_path: str) -> str:
    """``Root/a/b`` for the module at dotted path ``a.b`` (``Root`` for the root)."""
    parts = [p for p in module_path.split(".") if p]
    return "/".join([root, *parts])


def parent_path(module_path: str) -> str:
    """The dotted path of the module that holds ``module_path`` (``''`` for top level)."""
    return module_path.rpartition(".")[0]


# With the separator: torchvision (``.../site-packages/torchvision``) is model code, not torch.
_SKIPPED_DIRS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(__file__) + os.sep)


def source_location(stack_trace: str | None) -> str | None:
    """``file:line`` of the innermost frame of an FX node's stack trace in the user's code.

    Frames in torch itself and in this plugin are tracing machinery, not the model.
    """
    if not stack_trace:
        return None
    for match in reversed(list(_STACK_FRAME_RE.finditer(stack_trace))):
        filename = match.group("file")
        if not filename.startswith(_SKIPPED_DIRS):
            return f"{filename}:{match.group('line')}"
    return None


def sanitize(name: str) -> str:
    """A node name made of letters, digits and ``_`` (what FX names already are)."""
    cleaned = _IDENTIFIER_RE.sub("_", name).strip("_") or "node"
    return f"_{cleaned}" if cleaned[0].isdigit() else cleaned


def generic_base(node: torch.fx.Node) -> str | None:
    """The target's own name when FX named the node after it (``getitem_3`` -> ``getitem``).

    ``None`` for nodes FX named after something of the user's: a module path, a
    placeholder, an attribute.
    """
    target = node.target
    if node.op == "call_method":
        base = str(target)
    elif node.op == "call_function":
        if isinstance(target, torch._ops.OpOverload):
            base = target.overloadpacket.__name__
        else:
            base = getattr(target, "__name__", "")
    else:
        return None
    if base and re.fullmatch(re.escape(base) + r"(_\d+)?", node.name):
        return base
    return None


def describe_target(node: torch.fx.Node, module: Any = None) -> str:
    """How errors name what an FX node calls: ``torch.fft.fft``, ``Tensor.scatter_``, ..."""
    target = node.target
    if node.op == "call_module":
        cls = type(module) if module is not None else None
        if cls is None:
            return f"module {target}"
        prefix = "torch.nn" if cls.__module__.startswith("torch.nn.") else cls.__module__
        return f"{prefix}.{cls.__qualname__}"
    if node.op == "call_method":
        return f"Tensor.{target}"
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(target)
    public = _public_names().get(id(target))
    if public is not None:
        return public
    module_name = getattr(target, "__module__", None) or ""
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", str(target))
    module_name = {"_operator": "operator"}.get(module_name, module_name)
    return f"{module_name}.{qualname}" if module_name else str(qualname)


@functools.cache
def _public_names() -> dict[int, str]:
    """``id(fn) -> 'torch.fft.fft'`` for torch's public functions (builtins name themselves
    ``torch._C._fft.fft_fft`` or ``_VariableFunctionsClass.sort``)."""
    names: dict[int, str] = {}
    namespaces = {
        "torch.special": torch.special,
        "torch.linalg": torch.linalg,
        "torch.fft": torch.fft,
        "torch.nn.functional": torch.nn.functional,
        "torch": torch,
    }
    for prefix, namespace in namespaces.items():
        for attr in dir(namespace):
            if attr.startswith("_"):
                continue
            obj = getattr(namespace, attr, None)
            if callable(obj) and not isinstance(obj, type):
                names[id(obj)] = f"{prefix}.{attr}"
    return names
