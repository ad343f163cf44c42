"""What a converter gets: one TorchScript op call with its arguments bound to entries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from acekit.ir import Value
from acekit_torchscript.context import Builder, Site
from acekit_torchscript.entries import (
    ScalarEntry,
    TensorEntry,
    describe_entry,
    example_of,
    has_scalar,
    has_tensor,
    resolve,
)
from acekit_torchscript.schemas import decode_argument


class UnsupportedError(Exception):
    """Raised by a converter for a call the IR cannot express; the reason is reported."""


@attrs.define
class OpCall:
    """One call of a TorchScript op: ``kind`` (``aten::relu`` for ``relu_`` too), the
    arguments bound to entries by name, and the results on the example inputs."""

    builder: Builder
    site: Site
    kind: str
    schema: torch._C.FunctionSchema
    args: list[Any]
    results: list[Any]
    #: Whether the module running the op is in training mode (``module.training``).
    training: bool = False
    #: Finds a parameter or buffer of the module running the op, by attribute name.
    lookup: Callable[[str], TensorEntry | None] | None = None
    #: The name a torch.nn layer running the op gives its node (``layers_0_conv``).
    layer_name: str | None = None
    _index: dict[str, int] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self._index = {argument.name: i for i, argument in enumerate(self.schema.arguments)}

    @property
    def op_name(self) -> str:
        """The op's name without namespace (``relu``)."""
        return self.kind.partition("::")[2]

    @property
    def names(self) -> list[str]:
        """The argument names, in schema order."""
        return [argument.name for argument in self.schema.arguments]

    def has(self, name: str) -> bool:
        """Whether the op has an argument called ``name``."""
        return name in self._index and self._index[name] < len(self.args)

    def arg(self, name: str) -> Any:
        """The entry bound to argument ``name``."""
        if not self.has(name):
            raise UnsupportedError(f"{self.kind} has no argument {name!r}")
        return resolve(self.args[self._index[name]])

    def is_none(self, name: str) -> bool:
        """Whether argument ``name`` is absent or ``None``."""
        return not self.has(name) or self.arg(name) is None

    def is_dynamic(self, name: str) -> bool:
        """Whether argument ``name`` holds something the graph computes."""
        entry = self.arg(name)
        return has_tensor(entry) or has_scalar(entry)

    def static(self, name: str) -> Any:
        """Argument ``name`` as a static value in IR form (tuples, dtype names).

        Numbers computed from shapes take their example value: an attribute is fixed.
        """
        entry = self.arg(name)
        if has_tensor(entry) or isinstance(entry, torch.Tensor):
            raise UnsupportedError(
                f"argument {name!r} is {describe_entry(entry)}, it must be a constant"
            )
        return decode_argument(self.schema.arguments[self._index[name]], example_of(entry))

    def module_tensor(self, name: str) -> TensorEntry | None:
        """The parameter or buffer ``name`` of the module running the op, if it has one."""
        return None if self.lookup is None else self.lookup(name)

    def example(self, name: str) -> Any:
        """The example value of argument ``name``."""
        return example_of(self.arg(name))

    def tensor(self, name_or_entry: str | Any) -> Value:
        """The IR value of an argument (constants become ``constant`` nodes)."""
        entry = self.arg(name_or_entry) if isinstance(name_or_entry, str) else name_or_entry
        return self.value_of(entry)

    def value_of(self, entry: Any) -> Value:
        """The IR value of ``entry`` (see :meth:`Builder.value`)."""
        entry = resolve(entry)
        if isinstance(entry, list | tuple) and any(
            isinstance(resolve(item), TensorEntry) for item in entry
        ):
            raise UnsupportedError("a list of tensors cannot be one op input")
        return self.builder.value(entry, self.site)

    def sized(self, name: str) -> tuple[tuple[int, ...] | None, Value | None]:
        """An int-list argument: ``(attribute, None)`` when static, else ``(None, pack)``."""
        entry = self.arg(name)
        if isinstance(entry, ScalarEntry):
            entry = [entry]
        if has_scalar(entry):
            return None, self.builder.pack(list(entry), self.site)
        value = self.static(name)
        return (tuple(value) if isinstance(value, tuple | list) else (value,)), None

    def emit(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: Mapping[str, Any] | None = None,
        *,
        results: Sequence[Any] | None = None,
        name: str | None = None,
    ) -> list[TensorEntry]:
        """Add an IR node for this call; by default its results are the call's results."""
        return self.builder.emit(
            op, inputs, attrs, self.site, self.results if results is None else results, name=name
        )
