"""Typed access to the parts of ``torch._C`` whose type stubs are missing or wrong.

TorchScript's Python bindings have methods the stubs do not declare (``getattr`` on a
C++ module, ``findAllNodes`` on a graph) and declare some results with the wrong type
(``Node.sourceRange()`` returns a string). Keeping every such call here keeps the rest
of the plugin checked.
"""

from __future__ import annotations

from typing import Any, cast

import torch


def module_attr(module: torch._C.ScriptModule, name: str) -> Any:
    """Attribute ``name`` of a TorchScript module (submodule, tensor or Python value)."""
    return cast(Any, module).getattr(name)


def module_has_attr(module: torch._C.ScriptModule, name: str) -> bool:
    """Whether a TorchScript module has attribute ``name``."""
    return bool(cast(Any, module).hasattr(name))


def class_name(module: torch._C.ScriptModule) -> str:
    """The unqualified class name of a TorchScript module (``Conv2d``)."""
    return str(cast(Any, module._type()).name())


def find_nodes(graph: torch._C.Graph, kind: str) -> list[torch._C.Node]:
    """Every node of ``kind`` in ``graph``, nested blocks included."""
    return list(cast(Any, graph).findAllNodes(kind, True))


def source_text(node: torch._C.Node) -> str:
    """What ``node.sourceRange()`` gives: a traced node's Python stack, or a scripted
    node's highlighted source (empty when there is none)."""
    try:
        return str(cast(Any, node).sourceRange())
    except RuntimeError:
        return ""
