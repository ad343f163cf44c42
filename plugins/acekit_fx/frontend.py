"""What every way into the parser shares: module scopes, the graph's outputs, the checks."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree

from acekit import parsing
from acekit.ir import Graph, Value
from acekit_fx.context import NodeContext
from acekit_fx.converter import Converter
from acekit_fx.errors import fx_remedies
from acekit_fx.handlers.modules import is_torch_leaf
from acekit_fx.values import POISON, ConstTensor

_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}


def _leaf_type_name(kind: Any) -> bool:
    """Whether a module type (a class, or its qualified name as export writes it) is a layer."""
    if isinstance(kind, type):
        return is_torch_leaf(kind)
    text = str(kind)
    module, _, name = text.rpartition(".")
    return module.startswith("torch.nn.modules.") and name not in _CONTAINERS


def stack_scope(fx_node: torch.fx.Node, *, call_module_target: bool = True) -> str:
    """The dotted path of the module an FX node belongs to, from its ``nn_module_stack``.

    A node computed by a torch.nn layer itself (a ``conv2d`` inside ``conv``) belongs to
    the module holding that layer, as a ``call_module`` node would.
    """
    stack = fx_node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    path = normalise_module_path(str(path))
    if fx_node.op == "call_module" and call_module_target and path == str(fx_node.target):
        return path.rpartition(".")[0]
    if _leaf_type_name(kind):
        return path.rpartition(".")[0]
    return path


_DYNAMO_PREFIX = re.compile(r"^L\[['\"]self['\"]\]\.?|^L__self__[._]?")
_ITEM = re.compile(r"\[['\"]?([^'\"\]]+)['\"]?\]")


def normalise_module_path(path: str) -> str:
    """``L['self'].layers[0]._modules['fc']`` (dynamo) -> ``layers.0.fc``."""
    path = _DYNAMO_PREFIX.sub("", path)
    path = re.sub(r"(^|\.)_(modules|parameters|buffers)\[", "[", path)
    path = _ITEM.sub(lambda m: "." + m.group(1), path)
    return path.strip(".")


def encode_outputs(bound: Any) -> tuple[list[Any], Any]:
    """Flat result leaves and the ``structure`` attribute that nests them again."""
    return parsing.encode_outputs(
        bound, lambda item: isinstance(item, Value | ConstTensor) or item is POISON
    )


def structure_from_spec(spec: pytree.TreeSpec, counter: list[int]) -> Any:
    """The ``structure`` attribute for outputs flattened along a pytree spec (export)."""
    if spec.is_leaf():
        counter[0] += 1
        return counter[0] - 1
    nested = spec.children() if callable(getattr(spec, "children", None)) else spec.children_specs
    children = [structure_from_spec(child, counter) for child in nested]
    if spec.type in (tuple, list) or _is_namedtuple(spec.type):
        return ("list" if spec.type is list else "tuple", tuple(children))
    if spec.type is type(None):
        return ("const", None)
    keys = spec.context if isinstance(spec.context, list | tuple) else list(spec.context or [])
    return ("dict", tuple((str(k), c) for k, c in zip(keys, children, strict=True)))


def _is_namedtuple(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def finish(
    graph: Graph,
    converter: Converter,
    model_name: str,
    leaves: list[Any],
    structure: Any,
    output_cx: NodeContext | None = None,
) -> Graph:
    """Raise for unsupported ops; else set the outputs and verify the graph."""
    if converter.unsupported:
        unsupported = converter.unsupported
        raise parsing.UnsupportedOpsError(model_name, unsupported, fx_remedies(unsupported))
    values: list[Value] = []
    consts: dict[int, Any] = {}
    for leaf in leaves:
        if isinstance(leaf, ConstTensor):
            leaf = converter.materialise(leaf, consts)
        assert isinstance(leaf, Value), f"unexpected output {leaf!r}"
        values.append(leaf)
    return parsing.set_outputs(graph, values, structure)
