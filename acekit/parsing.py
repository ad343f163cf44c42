"""What every parser plugin shares: its errors, value types, outputs and eval mode.

The kernel knows no parser; parser plugins (``acekit_fx``, ``acekit_torchscript``, a
third party's) import these so that they report errors, type values, write constant
tensors and encode outputs the same way.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch

from acekit.api import ParseError
from acekit.ir import Graph, TensorType, Value
from acekit.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "DATA_DEPENDENT",
    "ModelRaisedError",
    "UnsupportedOp",
    "UnsupportedOpsError",
    "add_tensor_constant",
    "encode_outputs",
    "eval_mode",
    "free_ref",
    "set_outputs",
    "shape_source",
    "type_of",
    "unsupported_op_remedies",
]


# -- errors ---------------------------------------------------------------------------------------


@attrs.frozen
class UnsupportedOp:
    """One node of the source model the IR cannot express, with where it comes from."""

    #: The op as the source names it: ``Tensor.scatter``, ``nn.LSTM``, ``aten::lgamma``.
    op: str
    #: The node as the source representation names it (``scatter``, ``%x.3``).
    node: str
    #: The subgraph path of the module the node belongs to.
    subgraph: str
    #: ``file:line`` of the user's source, when known.
    location: str | None
    #: Why it cannot be converted, when more is known than "no such IR op".
    reason: str = ""

    def describe(self) -> str:
        """One line: op, node, module path, source line and reason."""
        where = f" at {self.location}" if self.location else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.op} (node '{self.node}', in '{self.subgraph}'{where}){why}"


class UnsupportedOpsError(ParseError):
    """The model uses ops the IR does not know; ``ops`` lists every one found in one go.

    The message ends with what to do: the parser's own ``remedies`` (another parser, a
    leaf module) among the ones every parser shares (:func:`unsupported_op_remedies`).
    """

    def __init__(
        self, model_name: str, ops: Sequence[UnsupportedOp], remedies: Sequence[str] = ()
    ) -> None:
        self.model_name = model_name
        self.ops = tuple(ops)
        self.remedies = tuple(unsupported_op_remedies(self.ops, remedies))
        counts = Counter(op.op for op in self.ops)
        summary = ", ".join(
            f"{name} ({count} nodes)" if count > 1 else name for name, count in counts.items()
        )
        lines = [f"- {op.describe()}" for op in self.ops]
        lines += ["What to do:", *(f"- {remedy}" for remedy in self.remedies)]
        super().__init__(
            f"model {model_name!r} uses {len(counts)} op(s) the IR does not support: "
            f"{summary}\n" + "\n".join(lines)
        )

    @property
    def op_names(self) -> list[str]:
        """The distinct unsupported ops, in the order first met."""
        return list(dict.fromkeys(op.op for op in self.ops))


#: Words a parser puts in an :class:`UnsupportedOp`'s reason (spelled with this constant)
#: when the op reads tensor values into Python (``if x.sum() > 0``, ``x.item()``): no
#: rewrite into IR ops helps, and the remedies say so first.
DATA_DEPENDENT = "tensor data"


def unsupported_op_remedies(
    ops: Sequence[UnsupportedOp], parser_remedies: Sequence[str] = ()
) -> list[str]:
    """What a user can do about ``ops``: the parser's own ``parser_remedies`` amid the
    ones every parser shares (control flow on tensor data first: no parser takes it)."""
    remedies = []
    if any(DATA_DEPENDENT in op.reason for op in ops):
        remedies.append(
            "control flow on tensor values (`if x.sum() > 0:`, `x.item()`) gives no single "
            "graph: compute both branches and pick with torch.where"
        )
    remedies += [
        *parser_remedies,
        "rewrite the lines above with ops the IR has (docs/ir-ops.md lists them), or move "
        "them out of the model into pre- or post-processing",
        "to make it an IR op, add it through a plugin: a schema (acekit_register_ops), a "
        "kernel and a parser or pass that emits it (docs/writing-a-plugin.md#ops-of-your-own)",
    ]
    return remedies


class ModelRaisedError(ParseError):
    """The model raised an exception while running on the example inputs."""


# -- values and nodes -----------------------------------------------------------------------------


def type_of(example: Any) -> TensorType:
    """The IR type of an example value: tensors, and the Python numbers shapes are made of."""
    if isinstance(example, torch.Tensor):
        return TensorType.of(example)
    if isinstance(example, bool):
        return TensorType(torch.bool, ())
    if isinstance(example, int):
        return TensorType(torch.int64, ())
    if isinstance(example, float):
        return TensorType(torch.get_default_dtype(), ())
    if isinstance(example, tuple | list) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in example
    ):
        return TensorType(torch.int64, (len(example),))
    return TensorType()


def free_ref(graph: Graph, ref: str) -> str:
    """``ref``, or ``ref_1``, ``ref_2`` ...: the first name ``graph.tensors`` does not hold.

    A name that ``nn.Module`` itself defines (a constant export named ``to``) is taken
    too: the generated module could not register a buffer under it.
    """
    if ref not in graph.tensors and not _module_attribute(ref):
        return ref
    for index in itertools.count(1):
        if f"{ref}_{index}" not in graph.tensors:
            return f"{ref}_{index}"
    raise AssertionError("unreachable")


def _module_attribute(ref: str) -> bool:
    return hasattr(torch.nn.Module, ref.rpartition(".")[2])


def add_tensor_constant(
    graph: Graph,
    ref: str,
    tensor: torch.Tensor,
    *,
    name: str,
    subgraph: str,
    source_name: str,
    location: str | None,
) -> Value:
    """A ``constant`` node holding ``tensor`` (stored as it is under ``graph.tensors[ref]``)."""
    graph.tensors[ref] = tensor
    node = graph.add_node(
        "constant",
        [],
        {"ref": ref},
        name=name,
        subgraph=subgraph,
        source_name=source_name,
        source_location=location,
        types=[TensorType.of(tensor)],
    )
    return node.output


def shape_source(value: Value) -> Value | None:
    """The tensor a number or shape computed by the graph was read from (through
    ``shape``, ``numel`` or ``dim``, the first found going up), or ``None``.

    A tensor made from a computed size (a ``full``) takes that tensor's device.
    """
    pending = [value]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        node = current.producer
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op in ("shape", "numel", "dim") and node.inputs:
            return node.inputs[0]
        pending.extend(v for v in node.inputs if v is not None)
    return None


# -- outputs --------------------------------------------------------------------------------------


def encode_outputs(
    result: Any,
    is_leaf: Callable[[Any], bool],
    resolve: Callable[[Any], Any] = lambda item: item,
) -> tuple[list[Any], Any]:
    """The flat leaves of what ``forward`` returned, and the ``structure`` nesting them.

    ``is_leaf`` says which items are results (tensors); every item is passed through
    ``resolve`` first. Tuples, lists and dicts nest; anything else is a ``("const", item)``.
    The structure is ``None`` for a single result returned as it is.
    """
    leaves: list[Any] = []

    def encode(item: Any) -> Any:
        item = resolve(item)
        if is_leaf(item):
            leaves.append(item)
            return len(leaves) - 1
        if isinstance(item, tuple | list):
            kind = "list" if isinstance(item, list) else "tuple"
            return (kind, tuple(encode(i) for i in item))
        if isinstance(item, dict):
            return ("dict", tuple((str(k), encode(v)) for k, v in item.items()))
        return ("const", item)

    structure = encode(result)
    return leaves, (None if structure == 0 else structure)


def set_outputs(graph: Graph, values: Sequence[Value], structure: Any) -> Graph:
    """Write the ``output`` node (with its ``structure``) and verify the graph."""
    node = graph.set_outputs(list(values))
    if structure is not None:
        node.attrs["structure"] = structure
    graph.verify()
    return graph


# -- the model's mode -----------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Parse in eval mode, saying so when the model is training; every submodule gets
    its own mode back afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    if model.training:
        log.info(
            f"The model '{name}' is in training mode: parsing it in eval mode "
            "(its own mode is restored afterwards)",
            model=name,
        )
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
