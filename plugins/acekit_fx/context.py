"""What an op handler gets: the FX node being converted and the tools to emit IR for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from acekit.ir import Node, TensorType, Value, dtype_name
from acekit.parsing import type_of
from acekit.runtime import get_kernel
from acekit_fx.values import ConstTensor

if TYPE_CHECKING:
    from acekit_fx.converter import Converter


_SAME: Any = object()


class Unsupported(Exception):
    """Raised by a handler: the node cannot be expressed in the IR (the reason says why)."""


class NodeContext:
    """The conversion of one FX node.

    ``result`` is the node's concrete output on the example inputs; the final node a
    handler emits (:meth:`emit`) takes its name from the FX node and its types from
    ``result``; helper nodes (:meth:`helper`) are named after their op and typed by
    running their kernel.
    """

    def __init__(
        self,
        converter: Converter,
        fx_node: torch.fx.Node,
        subgraph: str,
        location: str | None,
        result: Any,
        concrete: dict[int, Any],
    ) -> None:
        self.converter = converter
        self.fx_node = fx_node
        self.subgraph = subgraph
        self.location = location
        self.result = result
        self._concrete = concrete
        self.final: Node | None = None
        #: The FX node's arguments as example values (what the interpreter ran it on).
        self.concrete_args: Any = ()
        self.concrete_kwargs: Any = {}

    @property
    def graph(self) -> Any:
        """The IR graph being built."""
        return self.converter.graph

    # -- emitting ------------------------------------------------------------------------

    def emit(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        *,
        num_outputs: int | None = None,
        result: Any = _SAME,
    ) -> Node:
        """Emit the node that stands for the FX node (its name, its result's types).

        ``result`` overrides the concrete result when the node computes only part of
        what the FX node returned (the first result of ``native_layer_norm``).
        """
        if num_outputs is None:
            num_outputs = 1
        results = self._split(self.result if result is _SAME else result, num_outputs)
        node = self._add(op, inputs, attrs, self.converter.ir_name(self.fx_node, op), results)
        self.final = node
        return node

    def out(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        *,
        result: Any = _SAME,
    ) -> Value:
        """:meth:`emit` for a one-output op; returns the output value."""
        return self.emit(op, inputs, attrs, result=result).output

    def helper(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None = None,
        *,
        num_outputs: int = 1,
    ) -> Node:
        """Emit an intermediate node (named after its op), computing its value by its kernel."""
        attrs = dict(attrs or {})
        kernel = get_kernel(op)
        kwargs = dict(attrs)
        if kernel.uses_training and kwargs.get("training") is None:
            kwargs["training"] = False
        with torch.no_grad():
            result = kernel.fn(*(self.concrete(v) for v in inputs), **kwargs)
        results = self._split(result, num_outputs)
        return self._add(op, inputs, attrs, op, results)

    def _add(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict[str, Any] | None,
        name: str,
        results: Sequence[Any],
    ) -> Node:
        node = self.graph.add_node(
            op,
            list(inputs),
            dict(attrs or {}),
            name=self.converter.prefixed(name),
            subgraph=self.subgraph,
            source_name=self.fx_node.name,
            source_location=self.location,
            num_outputs=len(results),
            types=[type_of(r) for r in results],
        )
        for value, result in zip(node.outputs, results, strict=True):
            self._concrete[id(value)] = result
        return node

    @staticmethod
    def _split(result: Any, num_outputs: int) -> list[Any]:
        if num_outputs == 1:
            return [result]
        if num_outputs == 0:
            return []
        items = list(result) if isinstance(result, tuple | list) else [result]
        if len(items) != num_outputs:
            raise Unsupported(f"expected {num_outputs} results, the op returned {len(items)}")
        return items

    # -- reading inputs ----------------------------------------------------------------------

    def concrete(self, bound: Any) -> Any:
        """The concrete example value of a bound value."""
        if isinstance(bound, Value | ConstTensor):
            if isinstance(bound, ConstTensor):
                return bound.tensor
            try:
                return self._concrete[id(bound)]
            except KeyError:
                raise Unsupported(f"no example value for %{bound.name}") from None
        if isinstance(bound, tuple | list):
            return type(bound)(self.concrete(b) for b in bound)
        return bound

    def value(self, bound: Any) -> Value:
        """``bound`` as an IR value: constants become ``constant`` nodes, int lists ``pack``."""
        if isinstance(bound, Value):
            return bound
        if isinstance(bound, ConstTensor):
            return self.converter.materialise(bound, self._concrete)
        if bound is None or isinstance(bound, bool | int | float):
            return self._constant(bound)
        if isinstance(bound, tuple | list | torch.Size) and all(
            isinstance(v, int | Value) and not isinstance(v, bool) for v in bound
        ):
            attrs, extra = self.sized(bound, "int list")
            if extra is not None:
                return extra
            return self._constant(attrs)
        raise Unsupported(f"cannot use {bound!r} ({type(bound).__name__}) as an op input")

    def tensor(self, bound: Any, what: str = "input") -> Value:
        """``bound`` as an IR value that must be a tensor (not a python scalar)."""
        if isinstance(bound, Value | ConstTensor):
            return self.value(bound)
        raise Unsupported(f"{what} must be a tensor, got {bound!r}")

    def optional(self, bound: Any) -> Value | None:
        """``None`` stays ``None`` (a trailing optional input is left out)."""
        return None if bound is None else self.value(bound)

    def none(self) -> Value:
        """A ``constant{value=None}``: a missing optional input in the middle of the inputs."""
        return self._constant(None)

    def _constant(self, value: Any) -> Value:
        node = self.graph.add_node(
            "constant",
            [],
            {"value": value},
            name=self.converter.prefixed("constant"),
            subgraph=self.subgraph,
            source_name=self.fx_node.name,
            source_location=self.location,
            types=[type_of(value)],
        )
        self._concrete[id(node.output)] = value
        return node.output

    # -- attributes --------------------------------------------------------------------------

    def static(self, bound: Any, what: str) -> Any:
        """A parse-time constant; a value computed by the graph raises :class:`Unsupported`."""
        if isinstance(bound, Value):
            raise Unsupported(f"{what} is computed by the graph, it must be a constant")
        if isinstance(bound, ConstTensor):
            tensor = bound.tensor
            return tensor.item() if tensor.numel() == 1 else tensor.tolist()
        if isinstance(bound, tuple | list):
            return type(bound)(self.static(b, what) for b in bound)
        return bound

    def ints(self, bound: Any, what: str, *, length: int | None = None) -> tuple[int, ...]:
        """An int tuple attribute; a single int is repeated ``length`` times (or kept)."""
        value = self.static(bound, what)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,) * (length or 1)
        if isinstance(value, tuple | list | torch.Size):
            return tuple(int(v) for v in value)
        raise Unsupported(f"{what} must be an int or a tuple of ints, got {value!r}")

    def sized(self, items: Any, what: str) -> tuple[tuple[int, ...] | None, Value | None]:
        """An int-list parameter: ``(attribute, None)`` when static, else ``(None, pack)``.

        ``items`` may also be a single shape value (``y.shape``), used as it is.
        """
        if isinstance(items, Value):
            return None, items
        if isinstance(items, int) and not isinstance(items, bool):
            items = (items,)
        if not isinstance(items, tuple | list | torch.Size):
            raise Unsupported(f"{what} must be a list of ints, got {items!r}")
        flat = [self.static(i, what) if isinstance(i, ConstTensor) else i for i in items]
        if not any(isinstance(i, Value) for i in flat):
            return tuple(int(i) for i in flat), None
        template = tuple(None if isinstance(i, Value) else int(i) for i in flat)
        dynamic = [i for i in flat if isinstance(i, Value)]
        node = self.helper("pack", dynamic, {"values": template})
        return None, node.output

    @staticmethod
    def dtype(dtype: Any) -> str | None:
        """The IR name of a torch dtype (``'f32'``), or ``None``."""
        return None if dtype is None else dtype_name(dtype)

    # -- parameters ------------------------------------------------------------------------

    def module_tensor(self, module: torch.nn.Module, path: str, attr: str) -> Value | None:
        """A parameter or buffer of the module at ``path`` as a ``parameter`` node."""
        tensor = getattr(module, attr, None)
        if tensor is None:
            return None
        ref = f"{path}.{attr}" if path else attr
        value = self.converter.tensor_value(
            ref,
            tensor,
            owner=module,
            leaf=attr,
            subgraph=self.subgraph,
            source_name=self.fx_node.name,
        )
        self._concrete[id(value)] = tensor
        return value

    def unsupported(self, reason: str) -> Unsupported:
        """An :class:`Unsupported` to raise."""
        return Unsupported(reason)

    def type_of(self, bound: Any) -> TensorType:
        """The IR type of a bound value."""
        return bound.type if isinstance(bound, Value) else type_of(self.concrete(bound))
