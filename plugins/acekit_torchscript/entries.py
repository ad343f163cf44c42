"""What a TorchScript value stands for while the walker runs a graph.

Every TorchScript value the walker meets is bound to an *entry*:

- :class:`TensorEntry`: a tensor the IR graph computes (an IR :class:`~acekit.ir.Value`)
  together with its value on the example inputs;
- :class:`ScalarEntry`: a Python number computed from tensor shapes (``x.size(0) // 2``),
  with its value for the example inputs and the IR op that computes it, written only
  if an op of the graph reads it (conditions use the example value);
- :class:`ModuleEntry`: a submodule reached through ``prim::GetAttr``, with its path;
- anything else is a *static* Python value known before the graph runs: numbers,
  strings, ``None``, dtypes, devices, constant tensors, and lists, tuples and dicts of
  entries (which are static only when everything inside them is).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import torch

from acekit.ir import Value
from acekit_torchscript.jit import class_name

if TYPE_CHECKING:
    from acekit_torchscript.context import Site


_CONTAINERS = frozenset(
    {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}
)


@attrs.define(eq=False)
class TensorEntry:
    """A tensor computed by the IR graph and its value on the example inputs.

    ``replaced_by`` is set when an in-place op gave the tensor a new value: every later
    read must see the new one (see :func:`resolve`). ``view_of`` is set on a slice or a
    select of another tensor (``x[2:4]``, ``x[:, 0]``): the tensor it views and the
    ``slice`` (``select``) attributes, so a write into the view can become a
    ``slice_scatter`` (``select_scatter``) of the tensor it views.
    """

    value: Value
    example: torch.Tensor
    replaced_by: TensorEntry | None = None
    view_of: tuple[TensorEntry, dict[str, Any]] | None = None


@attrs.define(eq=False)
class ScalarEntry:
    """A number the graph computes from shapes: ``op(*inputs, **attrs)`` in the IR.

    ``example`` is its value for the example inputs; ``value`` the IR value, once an
    op that reads it made the walker write the node.
    """

    example: Any
    op: str
    inputs: tuple[Any, ...]
    attrs: dict[str, Any]
    site: Site
    value: Value | None = None


@attrs.frozen(eq=False)
class ModuleEntry:
    """A (sub)module of the parsed model, by its attribute path from the root."""

    path: tuple[str, ...]
    module: torch._C.ScriptModule

    @property
    def type_name(self) -> str:
        """The class name the module had in Python (``Conv2d``)."""
        return class_name(self.module)

    @property
    def qualified_type(self) -> str:
        """The TorchScript class name with mangling removed (``__torch__.torch.nn...``)."""
        name = str(self.module._type().qualified_name())
        return ".".join(part for part in name.split(".") if not part.startswith("___torch_mangle"))

    @property
    def is_torch_layer(self) -> bool:
        """Whether this is one of torch.nn's own layers (``Conv2d``; not a container)."""
        return (
            self.qualified_type.startswith("__torch__.torch.nn.modules.")
            and self.type_name not in _CONTAINERS
        )

    @property
    def scope(self) -> tuple[str, ...]:
        """The module path its nodes belong to: a torch.nn layer's nodes belong to the
        module holding it, as the fx parser places a ``call_module`` node."""
        return self.path[:-1] if self.is_torch_layer else self.path


@attrs.define(eq=False)
class UnknownEntry:
    """The result of a node that could not be converted: the walk goes on (to find every
    unsupported op at once) with its example value, but no IR node computes it."""

    example: Any = None


class _Missing:
    """The type of :data:`MISSING_RESULT`."""

    def __repr__(self) -> str:
        return "<missing result>"


#: A result an IR op does not produce (the indices of a max pooling): reading it is an
#: unsupported use.
MISSING_RESULT = _Missing()


def resolve(entry: Any) -> Any:
    """``entry``, or the newest value of a tensor an in-place op replaced."""
    while isinstance(entry, TensorEntry) and entry.replaced_by is not None:
        entry = entry.replaced_by
    return entry


def walk(entry: Any) -> Iterator[Any]:
    """``entry`` and everything nested in its lists, tuples and dicts."""
    entry = resolve(entry)
    yield entry
    if isinstance(entry, list | tuple):
        for item in entry:
            yield from walk(item)
    elif isinstance(entry, dict):
        for key, item in entry.items():
            yield from walk(key)
            yield from walk(item)


def is_static(entry: Any) -> bool:
    """Whether ``entry`` is known without running the graph (nothing the graph computes)."""
    return not any(
        isinstance(e, TensorEntry | ScalarEntry | ModuleEntry | UnknownEntry) for e in walk(entry)
    )


def has_unknown(entry: Any) -> bool:
    """Whether ``entry`` holds the result of a node that could not be converted."""
    return any(isinstance(e, UnknownEntry) for e in walk(entry))


def has_tensor(entry: Any) -> bool:
    """Whether ``entry`` holds a tensor computed by the graph."""
    return any(isinstance(e, TensorEntry) for e in walk(entry))


def has_scalar(entry: Any) -> bool:
    """Whether ``entry`` holds a number computed by the graph."""
    return any(isinstance(e, ScalarEntry) for e in walk(entry))


def example_of(entry: Any) -> Any:
    """The value ``entry`` has when the model runs on the example inputs."""
    entry = resolve(entry)
    if isinstance(entry, TensorEntry | ScalarEntry | UnknownEntry):
        return entry.example
    if isinstance(entry, ModuleEntry):
        return entry.module
    if isinstance(entry, list):
        return [example_of(item) for item in entry]
    if isinstance(entry, tuple):
        return tuple(example_of(item) for item in entry)
    if isinstance(entry, dict):
        return {example_of(k): example_of(v) for k, v in entry.items()}
    return entry


def describe_entry(entry: Any) -> str:
    """A short text for messages."""
    entry = resolve(entry)
    if isinstance(entry, TensorEntry):
        return f"%{entry.value.name}"
    if isinstance(entry, ScalarEntry):
        return f"a number computed by {entry.op} ({entry.example!r} here)"
    if isinstance(entry, ModuleEntry):
        return f"module {'.'.join(entry.path) or '<root>'}"
    if isinstance(entry, torch.Tensor):
        return f"constant tensor {tuple(entry.shape)}"
    return repr(entry)
