"""Symbolic tracing with module scopes and stack traces, and what to say when it fails."""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.fx

# With the separator: torchvision's files (``.../torchvision/...``) are the user's side.
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
#: The parser's own files: a trace failure is located in the user's code, not here.
_OWN_DIR = os.path.dirname(__file__) + os.sep


@attrs.frozen
class TraceFailure:
    """Where symbolic tracing stopped: the module being traced, the user's line, why."""

    module_path: str
    location: str | None
    reason: str
    error: BaseException
    #: Attribute paths (from the model) of the failing module's direct submodules that
    #: trace on their own: the parts that can be quantized while the rest stays float.
    traceable_parts: tuple[str, ...] = ()


class _Tracer(torch.fx.Tracer):
    """``torch.fx.Tracer`` recording stack traces, with extra leaf module types."""

    def __init__(self, leaf_modules: Sequence[type]) -> None:
        super().__init__()
        self.record_stack_traces = True
        self._extra_leaves = tuple(leaf_modules)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if self._extra_leaves and isinstance(m, self._extra_leaves):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def symbolic_trace(
    model: torch.nn.Module, num_inputs: int, leaf_modules: Sequence[type] = ()
) -> torch.fx.GraphModule | TraceFailure:
    """Trace ``model`` called with ``num_inputs`` positional inputs.

    Parameters of ``forward`` beyond those get their default values (``concrete_args``).
    Returns the GraphModule, or a :class:`TraceFailure` saying where tracing stopped.
    """
    tracer = _Tracer(leaf_modules)
    concrete_args = _defaults_beyond(model, num_inputs)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args or None)
    except Exception as error:
        return _failure(model, error)
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


def _defaults_beyond(model: torch.nn.Module, num_inputs: int) -> dict[str, Any]:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    extra = positional[num_inputs:] + [
        p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    return {p.name: p.default for p in extra if p.default is not inspect.Parameter.empty}


def _failure(model: torch.nn.Module, error: BaseException) -> TraceFailure:
    """The module whose ``forward`` raised and the user's line, from the traceback."""
    names = {id(module): name for name, module in model.named_modules()}
    module_path = ""
    location = None
    frames = list(traceback.walk_tb(error.__traceback__))
    for frame, line in frames:
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            module_path = names[id(owner)]
        filename = frame.f_code.co_filename
        if not filename.startswith((_TORCH_DIR, _OWN_DIR)):
            location = f"{filename}:{line}"
    reason = f"{type(error).__name__}: {error}".strip()
    failing = model.get_submodule(module_path) if module_path else model
    parts = tuple(
        ".".join(p for p in (module_path, name) if p) for name in traceable_children(failing)
    )
    return TraceFailure(module_path, location, reason.splitlines()[0], error, parts)


def traceable_children(module: torch.nn.Module) -> list[str]:
    """The names of ``module``'s direct submodules that symbolic tracing captures alone.

    Only submodules with parameters that are not torch.nn's own layers count: those are
    the parts (a detector's backbone) worth quantizing while the untraceable rest (its
    pre- and post-processing) stays float. Called after a failure only: it traces each.
    """
    names = []
    for name, child in module.named_children():
        if type(child).__module__.startswith("torch.nn") or not any(
            True for _ in child.parameters()
        ):
            continue
        concrete_args = _defaults_beyond(child, _required_positional(child))
        try:
            _Tracer(()).trace(child, concrete_args=concrete_args or None)
        except Exception:  # any failure means "not on its own"; the reason is not asked
            continue
        names.append(name)
    return names


def _required_positional(module: torch.nn.Module) -> int:
    """How many positional parameters of ``module.forward`` have no default."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


class _ShapeInterpreter(torch.fx.Interpreter):
    """Runs a GraphModule, noting the shape of every tensor result by node name."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.shapes[n.name] = tuple(result.shape)
        return result


def shadow_shapes(gm: torch.fx.GraphModule, inputs: Sequence[Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor node of ``gm`` on ``inputs`` (the free dims resized).

    Compared with the example's shapes, they say which dims of a value follow the free
    input dims, which an opaque call exported with torch.export must declare dynamic.
    Empty when the model cannot run at those sizes (it fixes a free dim; the graph's
    typing reports where).
    """
    interpreter = _ShapeInterpreter(gm)
    try:
        with torch.no_grad():
            interpreter.run(*inputs)
    except Exception:
        return {}
    return interpreter.shapes
