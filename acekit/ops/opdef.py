"""One op, one definition: schema, kernel, type rule, where parsers find it, how it exports.

An :class:`OpDef` is all the kernel and the built-in plugins need to know about an IR op:

- ``schema``: its inputs and typed attributes (the verifier checks nodes against it);
- ``kernel``: what the generated torch module runs for it, called as
  ``kernel(*inputs, **attrs)`` (plus ``training=`` when ``uses_training``);
- ``infer``: its type rule, ``infer(input_types, attrs) -> output types``; without one
  the types come from running the kernel on meta tensors (:func:`acekit.ops.infer_types`);
- ``functions``, ``methods``, ``aten``: the torch callables, Tensor method names and ATen
  ops (``"add"`` for ``aten::add``, ``"mylib::fused"`` for a custom op, ``"add.Tensor"``
  for one overload) that mean this op. The parsers look calls up here; their arguments
  bind to the schema's inputs, then its attributes, in order (a parser may supply its
  own binding for an op whose torch signature differs);
- ``onnx``: how ONNX-consuming targets lower it. Exports trace the generated module with
  torch's ONNX exporter, so by default the kernel's torch code is the lowering; ``onnx``
  is a function with the kernel's signature, run instead of the kernel while exporting,
  for kernels whose torch calls the exporter cannot lower (or lowers poorly);
- ``onnx_types``: the ONNX op types the op exports as, for passes over the exported file
  (the QDQ lowering follows a bias's input scale through ops that move values);
- ``nonnegative``: the op's output is never negative (softmax, ReLU, sigmoid), so a
  quantizer may give it an unsigned range starting at 0 (see ``OpRule.nonnegative``).

Core ops and plugin ops are defined the same way; a plugin registers its definitions
from ``acekit_register_ops`` with ``registry.add_op(OpDef(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from acekit.ir.schema import OpSchema
from acekit.ir.tensor_type import TensorType

KernelFn = Callable[..., Any]
TypeRule = Callable[[Sequence[TensorType], Mapping[str, Any]], Sequence[TensorType]]


def _callables(instance: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    for item in value:
        if not callable(item):
            raise TypeError(f"{attribute.name} must hold callables, got {item!r}")


def _names(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for item in value:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{attribute.name} must hold non-empty strings, got {item!r}")


def _optional_callable(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be callable or None, got {value!r}")


def _as_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def aten_key(name: str) -> str:
    """``"add"`` -> ``"aten::add"``; a qualified ``"mylib::fused"`` stays as it is."""
    return name if "::" in name else f"aten::{name}"


@attrs.frozen
class OpDef:
    """The single definition of an IR op (see the module docstring for each field)."""

    schema: OpSchema = attrs.field(validator=attrs.validators.instance_of(OpSchema))
    kernel: KernelFn | None = attrs.field(default=None, validator=_optional_callable)
    uses_training: bool = False
    infer: TypeRule | None = attrs.field(default=None, validator=_optional_callable)
    functions: tuple[Any, ...] = attrs.field(default=(), converter=_as_tuple, validator=_callables)
    methods: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple, validator=_names)
    aten: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple, validator=_names)
    onnx: KernelFn | None = attrs.field(default=None, validator=_optional_callable)
    onnx_types: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple, validator=_names)
    nonnegative: bool = False

    @property
    def name(self) -> str:
        """The op's name (its schema's)."""
        return self.schema.name

    @property
    def aten_keys(self) -> tuple[str, ...]:
        """The ATen names qualified with their namespace (``aten::add``)."""
        return tuple(aten_key(name) for name in self.aten)

    @property
    def parameters(self) -> tuple[str, ...]:
        """The order torch-style arguments bind in: the inputs, then the attributes."""
        return self.schema.inputs + tuple(
            name for name in self.schema.attributes if name not in self.schema.inputs
        )

    def export_kernel(self) -> KernelFn | None:
        """What the ONNX export runs for the op: the ``onnx`` lowering, else the kernel."""
        return self.onnx if self.onnx is not None else self.kernel
