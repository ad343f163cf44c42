"""``fold-constants``: evaluate, once, what does not depend on the graph's inputs.

A node is *known* when every input is known: constants, non-trainable parameters
(buffers, with ``fold_buffers``) and results of known nodes. Queries of a tensor's
static shape (``shape``, ``dim``, ``numel``) are known even when the tensor
is not, which folds the shape arithmetic and the asserts a parser records. Known nodes
are evaluated with the runtime's kernel table, and each known result read by a node
that is not known becomes a ``constant`` node; the evaluated nodes then leave the graph,
and so do asserts whose condition is known to hold.

Trainable parameters are never known: folding must not bake weights the user will
train into constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs
import torch

from acekit.ir import Graph, Node, TensorType, Value
from acekit.logging import get_logger
from acekit.passes import Pass, PassResult
from acekit.runtime import get_kernel, has_kernel
from acekit_cleanup._logging import log_removed_nodes
from acekit_cleanup._rewrite import (
    ASSERT_OPS,
    MISSING,
    SOURCE_OPS,
    Rewriter,
    fresh_tensor_ref,
    is_deterministic,
    is_false,
    is_true,
    known_value,
)
from acekit_cleanup.remove_useless import static_shape

log = get_logger(__name__)

#: Ops that read only the shape of their input.
SHAPE_QUERY_OPS: Final = frozenset({"shape", "dim", "numel"})

#: Where a known value is a constant holds it: tensors go under this module path, so
#: the generated module keeps them apart from the user's own submodules.
CONSTANTS_PATH: Final = "folded_constants"


def shape_query(node: Node) -> Any:
    """The result of a shape query that static types answer, else ``MISSING``.

    ``dim`` of a value of known rank, ``shape`` and ``numel`` of a value with a static
    shape, and
    ``gather(shape(x), i)`` or ``shape(x){dim=i}`` when only dimension ``i`` is static
    (a symbolic batch size leaves the other dimensions foldable).
    """
    if len(node.outputs) != 1 or len(node.inputs) != 1:
        return MISSING
    if node.op == "gather":
        source = node.inputs[0].producer
        index = node.attrs.get("index")
        if source is None or source.op != "shape" or source.attrs.get("dim") is not None:
            return MISSING
        return _static_dim(source.inputs[0].type, index) if source.inputs else MISSING
    if node.op not in SHAPE_QUERY_OPS:
        return MISSING
    type_ = node.inputs[0].type
    dim = node.attrs.get("dim")
    if node.op == "shape" and dim is not None:
        return _static_dim(type_, dim)
    if node.op == "dim":
        # The rank is static even where sizes are free: timm's BatchNormAct2d asserts
        # ``x.ndim == 4`` on the conv's output, and an unfolded check keeps BN unfolded.
        return len(type_.shape) if type_.shape is not None else MISSING
    shape = static_shape(type_)
    if shape is None:
        return MISSING
    if node.op == "numel":
        return math.prod(shape)
    return shape


#: Ops whose trailing inputs may instead be attributes (see acekit.ir.core_ops): the
#: attribute name and kind for input 1, 2, ...
OPERAND_ATTRS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "reshape": (("shape", "ints"),),
    "expand": (("size", "ints"),),
    "repeat": (("repeats", "ints"),),
    "select": (("index", "int"),),
    "slice": (("start", "int"), ("end", "int")),
}


def _as_attribute(held: Any, kind: str) -> Any:
    """``held`` as an attribute of ``kind`` (``int`` or ``ints``), else ``MISSING``."""
    if kind == "int":
        return held if isinstance(held, int) and not isinstance(held, bool) else MISSING
    if isinstance(held, tuple | list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in held
    ):
        return tuple(held)
    return MISSING


def inline_operands(graph: Graph, rewriter: Rewriter) -> int:
    """Move known int operands of reshape/expand/repeat/select/slice/pack into attributes.

    The IR's convention is an attribute when the value is known at parse time and an
    input only while it is computed; once folding made it known, the input goes.
    Returns how many nodes changed.
    """
    changed = 0
    for node in graph.nodes:
        if node.op == "pack":
            changed += _inline_pack(graph, rewriter, node)
            continue
        slots = OPERAND_ATTRS.get(node.op)
        operands = node.inputs[1:]
        if slots is None or not operands or len(operands) > len(slots):
            continue
        values = [
            _as_attribute(known_value(graph, value), kind)
            for value, (_, kind) in zip(operands, slots, strict=False)
        ]
        if any(v is MISSING for v in values):
            continue
        for (name, _), held in zip(slots, values, strict=False):
            node.attrs[name] = held
        node.set_inputs([node.inputs[0]])
        rewriter.prune(v.producer for v in operands if v.producer is not None)
        changed += 1
    return changed


def _inline_pack(graph: Graph, rewriter: Rewriter, node: Node) -> int:
    """Write the known int inputs of a ``pack`` into its ``values``; 1 if it changed."""
    values = node.attrs.get("values")
    if not isinstance(values, tuple) or sum(v is None for v in values) != len(node.inputs):
        return 0
    pending = iter(node.inputs)
    kept: list[Value] = []
    merged: list[Any] = []
    for item in values:
        if item is not None:
            merged.append(item)
            continue
        value = next(pending)
        held = _as_attribute(known_value(graph, value), "int")
        if held is MISSING:
            kept.append(value)
            merged.append(None)
        else:
            merged.append(held)
    if len(kept) == len(node.inputs):
        return 0
    dropped = [v.producer for v in node.inputs if v not in kept and v.producer is not None]
    node.attrs["values"] = tuple(merged)
    node.set_inputs(kept)
    rewriter.prune(dropped)
    return 1


def _static_dim(type_: TensorType, index: Any) -> Any:
    if type_.shape is None or isinstance(index, bool) or not isinstance(index, int):
        return MISSING
    rank = len(type_.shape)
    if not -rank <= index < rank:
        return MISSING
    size = type_.shape[index]
    return size if isinstance(size, int) else MISSING


def as_constant(result: Any, max_elements: int) -> Any:
    """``result`` in the form a ``constant`` node holds, or ``MISSING`` if it cannot.

    Tensors are detached and copied (a kernel may return a view of a buffer);
    ``torch.Size`` becomes a tuple of ints.
    """
    if isinstance(result, torch.Tensor):
        if result.numel() > max_elements or (result.requires_grad and result.grad_fn):
            return MISSING
        return result.detach().clone()
    if isinstance(result, torch.Size):
        return tuple(int(d) for d in result)
    if result is None or isinstance(result, bool | int | float | str | torch.dtype):
        return result
    if isinstance(result, tuple | list):
        items = [as_constant(item, max_elements) for item in result]
        if any(item is MISSING or isinstance(item, torch.Tensor) for item in items):
            return MISSING
        return type(result)(items)
    return MISSING


@attrs.frozen
class FoldConstants(Pass):
    """Replace every computation that does not depend on the graph's inputs by its value.

    Known int operands of reshape / expand / repeat / select / slice then become
    attributes, the IR's form for values known at parse time.

    Options: ``fold_buffers`` treats non-trainable parameters (buffers) as known;
    ``static_shapes`` folds shape queries of values whose shape is static;
    ``max_elements`` caps the size of a folded tensor (larger results stay computed,
    so that folding never bloats the model).
    """

    name: ClassVar[str] = "fold-constants"
    summary: ClassVar[str] = "evaluate what does not depend on the inputs into constants"

    fold_buffers: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    static_shapes: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_elements: int = attrs.field(
        default=1 << 20,
        validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)],
    )

    def run(self, graph: Graph) -> PassResult:
        """Fold the known nodes of ``graph``.

        Stats: ``folded`` (nodes evaluated away), ``constants`` (constant nodes made),
        ``inlined`` (nodes whose operands became attributes), ``removed`` (net).
        """
        known: dict[Value, Any] = {}
        evaluated: list[Node] = []
        proven: list[Node] = []
        for node in graph.nodes:
            if node.op in SOURCE_OPS:
                if len(node.outputs) == 1:
                    held = known_value(graph, node.output, buffers=self.fold_buffers)
                    if held is not MISSING:
                        known[node.output] = held
                continue
            if node.op in ASSERT_OPS and node.inputs and node.inputs[0] in known:
                self._check_assert(node, known[node.inputs[0]], proven)
                continue
            results = self._evaluate(node, known)
            if results is not None:
                evaluated.append(node)
                known.update(zip(node.outputs, results, strict=True))
        rewriter = Rewriter(graph)
        for node in proven:
            rewriter.erase(node)
        inside = set(evaluated)
        for node in evaluated:
            for value in node.outputs:
                if any(use.node not in inside for use in value.uses):
                    constant = self._constant(graph, node, value, known[value])
                    rewriter.note_added(constant)
                    graph.replace_all_uses(value, constant.output)
        # Every evaluated node is now unread (its readers were evaluated too, or read a
        # constant instead); pruning also takes the constants and buffers they read.
        rewriter.prune(reversed(evaluated))
        folded = len(proven) + sum(1 for node in evaluated if not rewriter.holds(node))
        inlined = inline_operands(graph, rewriter)
        stats = {
            "folded": folded,
            "constants": rewriter.added,
            "inlined": inlined,
            "removed": rewriter.net_removed,
        }
        log_removed_nodes(self.name, rewriter.net_removed, folded=folded, inlined=inlined)
        return PassResult(graph, folded > 0 or rewriter.added > 0 or inlined > 0, stats)

    @staticmethod
    def _check_assert(node: Node, condition: Any, proven: list[Node]) -> None:
        if is_true(condition):
            proven.append(node)
        elif is_false(condition):
            # Kept: the model fails here at run time, and the user should hear where.
            log.warning(
                f"Assert {node.describe()} always fails for these shapes: "
                f"{node.attrs.get('message', '')!r}",
                node=node.name,
                subgraph=node.subgraph,
            )

    def _evaluate(self, node: Node, known: Mapping[Value, Any]) -> list[Any] | None:
        if self.static_shapes:
            queried = shape_query(node)
            if queried is not MISSING:
                return [queried]
        if not is_deterministic(node) or not all(v in known for v in node.inputs):
            return None
        if not has_kernel(node.op):
            return None
        kernel = get_kernel(node.op)
        # An op that follows the module's train()/eval() mode has no single value.
        if kernel.uses_training and node.attrs.get("training") is not False:
            return None
        try:
            with torch.no_grad():
                result = kernel.fn(*(known[v] for v in node.inputs), **node.attrs)
        except Exception:
            # The runtime would fail here too; leaving the node keeps the error where
            # the user will see it, at run time with the node's name.
            return None
        results = list(result) if len(node.outputs) > 1 else [result]
        if len(results) != len(node.outputs):
            return None
        converted = [as_constant(r, self.max_elements) for r in results]
        return None if any(c is MISSING for c in converted) else converted

    @staticmethod
    def _constant(graph: Graph, node: Node, value: Value, held: Any) -> Node:
        name = graph.unique_name("constant")
        if isinstance(held, torch.Tensor):
            ref = fresh_tensor_ref(graph, f"{CONSTANTS_PATH}.{name}")
            graph.tensors[ref] = held
            attributes: dict[str, Any] = {"ref": ref}
            type_ = TensorType.of(held)
        else:
            attributes = {"value": held}
            type_ = value.type
        return graph.add_node(
            "constant",
            attrs=attributes,
            name=name,
            subgraph=node.subgraph,
            source_name=node.source_name,
            source_location=node.source_location,
            types=[type_],
            before=node,
        )
