"""Graph, Node and Value: acekit's IR.

A :class:`Graph` is an ordered list of :class:`Node` objects kept in topological order;
each node reads :class:`Value` objects produced by earlier nodes and produces its own.
Nodes remember where they came from in the user's model (``source_name`` and the
``subgraph`` path of modules, e.g. ``VisionTransformer/encoder/layers/encoder_layer_0``)
so that every log line, error and picture can name the user's own module.

Order is kept with sparse integer keys on a doubly linked list, so inserting and
erasing are O(1) and "is A before B" is a comparison; rewrites stay linear in the
size of the graph.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from attrs import define, field, frozen

from acekit.ir.quant import QuantSpec
from acekit.ir.tensor_type import UNKNOWN, TensorType

_KEY_GAP = 1 << 20
_NAME_RE = re.compile(r"[^0-9A-Za-z_.]+")


class GraphError(ValueError):
    """A rewrite that would break the graph's invariants."""


@frozen
class Use:
    """One read of a value: ``node.inputs[index]``."""

    node: Node
    index: int


@define(eq=False, repr=False)
class Value:
    """A tensor edge: produced by one node, read by any number of nodes.

    ``quant`` holds the quantization spec of this edge once a quantizer annotated it.
    """

    name: str
    type: TensorType = UNKNOWN
    producer: Node | None = None
    index: int = 0
    quant: QuantSpec | None = None
    _uses: list[Use] = field(factory=list, alias="_uses")

    @property
    def uses(self) -> tuple[Use, ...]:
        """Every read of this value, in no particular order."""
        return tuple(self._uses)

    @property
    def users(self) -> list[Node]:
        """The distinct nodes that read this value."""
        seen: dict[int, Node] = {}
        for use in self._uses:
            seen.setdefault(id(use.node), use.node)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"Value(%{self.name}: {self.type})"


#: The ops whose ``ref`` attribute names a tensor of ``Graph.tensors`` they read.
_TENSOR_READERS = frozenset({"parameter", "constant"})


@define(eq=False, repr=False)
class Node:
    """One operation of the graph.

    ``name`` is unique in the graph; ``source_name`` is the name the node had in the
    source representation (e.g. the FX node), ``subgraph`` the module path it came from
    and ``source_location`` the user's ``file:line`` when known.
    """

    op: str
    name: str
    attrs: dict[str, Any] = field(factory=dict)
    subgraph: str = ""
    source_name: str = ""
    source_location: str | None = None
    graph: Graph | None = None
    _inputs: list[Value] = field(factory=list, alias="_inputs")
    _outputs: list[Value] = field(factory=list, alias="_outputs")
    _key: int = field(default=0, alias="_key")
    _prev: Node | None = field(default=None, alias="_prev")
    _next: Node | None = field(default=None, alias="_next")

    @property
    def inputs(self) -> tuple[Value, ...]:
        """The values this node reads, in order."""
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Value, ...]:
        """The values this node produces, in order."""
        return tuple(self._outputs)

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        if len(self._outputs) != 1:
            raise GraphError(f"node {self.describe()} has {len(self._outputs)} outputs, not 1")
        return self._outputs[0]

    @property
    def users(self) -> list[Node]:
        """The distinct nodes reading any output of this node."""
        seen: dict[int, Node] = {}
        for value in self._outputs:
            for use in value._uses:
                seen.setdefault(id(use.node), use.node)
        return list(seen.values())

    @property
    def next(self) -> Node | None:
        """The node after this one, or ``None`` at the end."""
        return self._next

    @property
    def prev(self) -> Node | None:
        """The node before this one, or ``None`` at the start."""
        return self._prev

    def is_before(self, other: Node) -> bool:
        """Whether this node comes earlier than ``other`` in the same graph."""
        return self._key < other._key

    def set_input(self, index: int, value: Value) -> None:
        """Make input ``index`` read ``value``."""
        self._check_defined_before(value)
        old = self._inputs[index]
        old._uses.remove(Use(self, index))
        self._inputs[index] = value
        value._uses.append(Use(self, index))

    def set_inputs(self, values: Sequence[Value]) -> None:
        """Replace all inputs of this node."""
        for value in values:
            self._check_defined_before(value)
        for i, old in enumerate(self._inputs):
            old._uses.remove(Use(self, i))
        self._inputs = list(values)
        for i, value in enumerate(self._inputs):
            value._uses.append(Use(self, i))

    def _check_defined_before(self, value: Value) -> None:
        producer = value.producer
        if self.graph is None or producer is None:
            return
        if producer.graph is not self.graph:
            raise GraphError(f"{value!r} does not belong to the graph of {self.describe()}")
        if not producer.is_before(self):
            raise GraphError(
                f"{self.describe()} cannot read %{value.name}: it is defined later, "
                "which would break topological order"
            )

    def describe(self) -> str:
        """``'name' (op, Subgraph: 'path')``: how errors and logs name a node."""
        where = f", Subgraph: '{self.subgraph}'" if self.subgraph else ""
        return f"'{self.name}' ({self.op}{where})"

    def __repr__(self) -> str:
        return f"Node({self.describe()})"


class Graph:
    """An ordered, verifiable dataflow graph of tensor ops."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        #: Parameters, buffers and constant tensors, by the name ``parameter`` nodes use.
        self.tensors: dict[str, torch.Tensor] = {}
        self._head: Node | None = None
        self._tail: Node | None = None
        self._names: dict[str, Node] = {}
        self._value_names: dict[str, Value] = {}
        self._counters: dict[str, itertools.count[int]] = {}
        self._output_node: Node | None = None
        # How many parameter/constant nodes read each tensor of ``tensors``, and the ref
        # each such node was counted under, so erasing a parameter node knows in O(1)
        # whether its tensor has readers left.
        self._ref_readers: Counter[str] = Counter()
        self._counted_ref: dict[Node, str] = {}

    # -- reading -------------------------------------------------------------------------

    @property
    def nodes(self) -> Iterator[Node]:
        """The nodes in topological order (safe against erasing the current node)."""
        node = self._head
        while node is not None:
            following = node._next
            yield node
            node = following

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[Node]:
        return self.nodes

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        try:
            return self._names[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no node {name!r}") from None

    def value(self, name: str) -> Value:
        """The value called ``name``."""
        try:
            return self._value_names[name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no value {name!r}") from None

    def has_node(self, name: str) -> bool:
        """Whether a node called ``name`` exists."""
        return name in self._names

    @property
    def input_nodes(self) -> list[Node]:
        """The ``input`` nodes ordered by their ``index`` attribute."""
        found = [n for n in self.nodes if n.op == "input"]
        return sorted(found, key=lambda n: int(n.attrs["index"]))

    @property
    def inputs(self) -> list[Value]:
        """The graph's input values, in call order."""
        return [n.output for n in self.input_nodes]

    @property
    def output_node(self) -> Node | None:
        """The ``output`` node, or ``None`` before :meth:`set_outputs`."""
        return self._output_node

    @property
    def outputs(self) -> list[Value]:
        """The graph's result values."""
        return [] if self._output_node is None else list(self._output_node.inputs)

    # -- naming ----------------------------------------------------------------------------

    def unique_name(self, base: str) -> str:
        """A node name derived from ``base`` that is free in this graph."""
        base = _NAME_RE.sub("_", base).strip("_") or "node"
        if base not in self._names and base not in self._value_names:
            return base
        counter = self._counters.setdefault(base, itertools.count(1))
        while True:
            candidate = f"{base}_{next(counter)}"
            if candidate not in self._names and candidate not in self._value_names:
                return candidate

    # -- building --------------------------------------------------------------------------

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value] = (),
        attrs: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        subgraph: str = "",
        source_name: str | None = None,
        source_location: str | None = None,
        num_outputs: int = 1,
        types: Sequence[TensorType] | None = None,
        before: Node | None = None,
        after: Node | None = None,
    ) -> Node:
        """Create a node and place it in the graph.

        By default the node goes at the end (before the ``output`` node when there is
        one); ``before``/``after`` place it next to an anchor node. Every input must be
        defined before the new position, so the graph stays topologically ordered.
        """
        if before is not None and after is not None:
            raise GraphError("give at most one of before= and after=")
        node_name = self.unique_name(name or op)
        node = Node(
            op=op,
            name=node_name,
            attrs=dict(attrs or {}),
            subgraph=subgraph,
            source_name=source_name if source_name is not None else node_name,
            source_location=source_location,
        )
        if types is not None and len(types) != num_outputs:
            raise GraphError(f"{len(types)} types given for {num_outputs} outputs")
        for i in range(num_outputs):
            value_name = node_name if num_outputs == 1 else f"{node_name}.{i}"
            if value_name in self._value_names:
                value_name = self.unique_name(value_name)
            value = Value(value_name, types[i] if types else UNKNOWN, node, i)
            node._outputs.append(value)
        if after is None and before is None and self._output_node is not None and op != "output":
            before = self._output_node
        self._link(node, before=before, after=after)
        try:
            for value in inputs:
                node._check_defined_before(value)
        except GraphError:
            self._unlink(node)
            raise
        node._inputs = list(inputs)
        for i, value in enumerate(node._inputs):
            value._uses.append(Use(node, i))
        self._names[node.name] = node
        for value in node._outputs:
            self._value_names[value.name] = value
        ref = node.attrs.get("ref") if op in _TENSOR_READERS else None
        if isinstance(ref, str):
            self._ref_readers[ref] += 1
            self._counted_ref[node] = ref
        return node

    def add_input(
        self, name: str, type: TensorType = UNKNOWN, *, subgraph: str = "", index: int | None = None
    ) -> Value:
        """Add a graph input; ``index`` defaults to the next call position."""
        position = len(self.input_nodes) if index is None else index
        anchor = self._last_of({"input"})
        node = self.add_node(
            "input",
            attrs={"index": position},
            name=name,
            subgraph=subgraph,
            types=[type],
            after=anchor,
            before=self._head if anchor is None else None,
        )
        return node.output

    def add_parameter(
        self,
        name: str,
        tensor: torch.Tensor,
        *,
        subgraph: str = "",
        trainable: bool = True,
        source_name: str | None = None,
    ) -> Value:
        """Hold ``tensor`` in the graph and add the node that reads it.

        Parameter nodes are placed right after the graph inputs so any node can use them.
        """
        ref = name
        if ref in self.tensors:
            raise GraphError(f"graph {self.name!r} already holds a tensor called {ref!r}")
        self.tensors[ref] = tensor
        anchor = self._last_of({"input", "parameter"})
        node = self.add_node(
            "parameter",
            attrs={"ref": ref, "trainable": trainable},
            name=name,
            subgraph=subgraph,
            source_name=source_name,
            types=[TensorType.of(tensor)],
            after=anchor,
            before=self._head if anchor is None else None,
        )
        return node.output

    def set_outputs(self, values: Sequence[Value]) -> Node:
        """Create or replace the ``output`` node that marks the graph's results."""
        if self._output_node is not None:
            self._output_node.set_inputs(list(values))
            return self._output_node
        node = self.add_node("output", list(values), name="output", num_outputs=0)
        self._output_node = node
        return node

    # -- rewriting -------------------------------------------------------------------------

    def replace_all_uses(self, old: Value, new: Value) -> int:
        """Make every reader of ``old`` read ``new`` instead; returns how many uses moved.

        The node producing ``new`` keeps reading ``old``: that is the usual way to wrap a
        value (insert ``q = f(old)`` after it, then redirect the readers of ``old`` to
        ``q``), and rewiring it too would create a cycle.
        """
        if old is new:
            return 0
        uses = [use for use in old._uses if use.node is not new.producer]
        if new.producer is not None:
            for use in uses:
                if not new.producer.is_before(use.node):
                    raise GraphError(
                        f"cannot replace %{old.name} by %{new.name} in {use.node.describe()}: "
                        f"%{new.name} is defined after it"
                    )
        for use in uses:
            use.node._inputs[use.index] = new
            new._uses.append(use)
            old._uses.remove(use)
        return len(uses)

    def erase(self, node: Node) -> None:
        """Remove ``node``; its outputs must have no readers left.

        A ``parameter`` node's tensor leaves ``tensors`` with the last parameter or
        constant node reading it (a count kept per ref: no scan of the graph).
        """
        if node.graph is not self:
            raise GraphError(f"{node.describe()} is not in graph {self.name!r}")
        for value in node._outputs:
            if value._uses:
                readers = ", ".join(sorted({u.node.name for u in value._uses}))
                raise GraphError(
                    f"cannot erase {node.describe()}: %{value.name} is read by {readers}"
                )
        for i, value in enumerate(node._inputs):
            value._uses.remove(Use(node, i))
        node._inputs = []
        self._unlink(node)
        del self._names[node.name]
        for value in node._outputs:
            self._value_names.pop(value.name, None)
        if node is self._output_node:
            self._output_node = None
        ref = self._counted_ref.pop(node, None)
        if ref is not None:
            self._ref_readers[ref] -= 1
            if self._ref_readers[ref] <= 0:
                del self._ref_readers[ref]
                if node.op == "parameter":
                    self.tensors.pop(ref, None)

    def move_before(self, node: Node, anchor: Node) -> None:
        """Move ``node`` to just before ``anchor``, keeping topological order."""
        self._unlink(node)
        self._link(node, before=anchor)
        self._check_node_order(node)

    def move_after(self, node: Node, anchor: Node) -> None:
        """Move ``node`` to just after ``anchor``, keeping topological order."""
        self._unlink(node)
        self._link(node, after=anchor)
        self._check_node_order(node)

    def rename(self, node: Node, name: str) -> None:
        """Rename ``node`` (and its single output value) to a free ``name``."""
        if name in self._names and self._names[name] is not node:
            raise GraphError(f"graph {self.name!r} already has a node called {name!r}")
        del self._names[node.name]
        node.name = name
        self._names[name] = node
        if len(node._outputs) == 1:
            value = node._outputs[0]
            del self._value_names[value.name]
            value.name = name
            self._value_names[name] = value

    def verify(self, ops: Any = None) -> None:
        """Raise :class:`acekit.ir.VerificationError` listing every problem found."""
        from acekit.ir.verify import verify

        verify(self, ops)

    def to_module(self) -> torch.nn.Module:
        """A ``torch.nn.Module`` generated from this graph (:func:`acekit.runtime.to_module`)."""
        from acekit.runtime import to_module

        return to_module(self)

    def __str__(self) -> str:
        from acekit.ir.printer import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes)"

    # -- linked list -------------------------------------------------------------------------

    def _last_of(self, ops: set[str]) -> Node | None:
        """The last node of the leading run of nodes whose op is in ``ops``."""
        last = None
        node = self._head
        while node is not None and node.op in ops:
            last, node = node, node._next
        return last

    def _check_node_order(self, node: Node) -> None:
        for value in node._inputs:
            if value.producer is not None and not value.producer.is_before(node):
                raise GraphError(f"{node.describe()} would come before its input %{value.name}")
        for user in node.users:
            if not node.is_before(user):
                raise GraphError(f"{node.describe()} would come after its reader {user.describe()}")

    def _link(self, node: Node, *, before: Node | None = None, after: Node | None = None) -> None:
        prev: Node | None
        nxt: Node | None
        if before is not None:
            prev, nxt = before._prev, before
        elif after is not None:
            prev, nxt = after, after._next
        else:
            prev, nxt = self._tail, None
        for anchor in (before, after):
            if anchor is not None and anchor.graph is not self:
                raise GraphError(f"anchor {anchor.describe()} is not in graph {self.name!r}")
        node.graph = self
        node._prev, node._next = prev, nxt
        if prev is None:
            self._head = node
        else:
            prev._next = node
        if nxt is None:
            self._tail = node
        else:
            nxt._prev = node
        low = prev._key if prev is not None else 0
        high = nxt._key if nxt is not None else low + 2 * _KEY_GAP
        if high - low < 2:
            self._renumber()
        else:
            node._key = (low + high) // 2

    def _unlink(self, node: Node) -> None:
        prev, nxt = node._prev, node._next
        if prev is None:
            self._head = nxt
        else:
            prev._next = nxt
        if nxt is None:
            self._tail = prev
        else:
            nxt._prev = prev
        node._prev = node._next = None

    def _renumber(self) -> None:
        for i, node in enumerate(self.nodes, start=1):
            node._key = i * _KEY_GAP
