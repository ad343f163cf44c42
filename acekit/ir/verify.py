"""The IR verifier: checks the invariants every pass must keep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from acekit.ir.quant import Granularity
from acekit.ir.schema import OpTable

if TYPE_CHECKING:
    from acekit.ir.graph import Graph, Node


class VerificationError(ValueError):
    """The graph breaks IR invariants; ``problems`` lists each as (node or None, message)."""

    def __init__(self, graph_name: str, problems: list[tuple[Node | None, str]]) -> None:
        self.graph_name = graph_name
        self.problems = problems
        lines = [
            f"- {node.describe()}: {message}" if node is not None else f"- {message}"
            for node, message in problems[:50]
        ]
        if len(problems) > 50:
            lines.append(f"- ... and {len(problems) - 50} more")
        super().__init__(
            f"graph {graph_name!r} failed verification ({len(problems)} problems):\n"
            + "\n".join(lines)
        )

    @property
    def first_node(self) -> Node | None:
        """The first node named by a problem, if any."""
        return next((node for node, _ in self.problems if node is not None), None)


def verify(graph: Graph, ops: OpTable | None = None) -> None:
    """Check ``graph`` and raise :class:`VerificationError` listing every problem.

    Checks: every input defined before use and inside the graph, use lists consistent,
    unique names, one ``output`` node at the end with no dangling results, attributes
    well-typed for the op's schema, parameters present in ``graph.tensors``, and
    quantization specs consistent with their tensors.
    """
    from acekit.ir.core_ops import OPS

    table = OPS if ops is None else ops
    problems: list[tuple[Node | None, str]] = []
    defined: set[int] = set()
    seen_names: set[str] = set()
    outputs_seen = 0
    previous_key = None
    for node in graph.nodes:
        if node.graph is not graph:
            problems.append((node, "node does not point back to this graph"))
        if previous_key is not None and node._key <= previous_key:
            problems.append((node, "order keys are not increasing"))
        previous_key = node._key
        if node.name in seen_names:
            problems.append((node, "duplicate node name"))
        seen_names.add(node.name)
        _check_inputs(node, defined, problems)
        _check_schema(node, table, problems)
        if node.op == "parameter":
            ref = node.attrs.get("ref")
            if ref not in graph.tensors:
                problems.append((node, f"tensor {ref!r} is not held by the graph"))
        if node.op == "output":
            outputs_seen += 1
            if node is not graph.output_node:
                problems.append((node, "output node is not the graph's registered output"))
            if node.next is not None:
                problems.append((node, "output node is not the last node"))
        for value in node.outputs:
            if value.producer is not node:
                problems.append((node, f"%{value.name} does not name this node as producer"))
            defined.add(id(value))
            _check_quant(node, value, problems)
    if outputs_seen != 1:
        problems.append((None, f"expected exactly one output node, found {outputs_seen}"))
    if problems:
        raise VerificationError(graph.name, problems)


def _check_inputs(node: Node, defined: set[int], problems: list[tuple[Node | None, str]]) -> None:
    for i, value in enumerate(node.inputs):
        if id(value) not in defined:
            where = (
                "outside this graph"
                if value.producer is None or value.producer.graph is not node.graph
                else "later"
            )
            problems.append((node, f"input {i} %{value.name} is defined {where}"))
        if not any(use.node is node and use.index == i for use in value.uses):
            problems.append((node, f"input {i} %{value.name} does not record this use"))
    for value in node.outputs:
        for use in value.uses:
            if use.index >= len(use.node.inputs) or use.node.inputs[use.index] is not value:
                problems.append((node, f"%{value.name} records a stale use by {use.node.name}"))


def _check_schema(node: Node, table: OpTable, problems: list[tuple[Node | None, str]]) -> None:
    schema = table.get(node.op)
    if schema is None:
        problems.append((node, f"op {node.op!r} is not in the schema table"))
        return
    count_problem = schema.input_count_problem(len(node.inputs))
    if count_problem:
        problems.append((node, count_problem))
    if schema.outputs is not None and len(node.outputs) != schema.outputs:
        problems.append((node, f"has {len(node.outputs)} outputs, schema says {schema.outputs}"))
    for message in schema.attribute_problems(node.attrs):
        problems.append((node, message))


def _check_quant(node: Node, value: object, problems: list[tuple[Node | None, str]]) -> None:
    from acekit.ir.graph import Value

    assert isinstance(value, Value)
    spec = value.quant
    if spec is None:
        return
    rank = value.type.rank
    channels = None
    if spec.granularity is Granularity.PER_CHANNEL and spec.axis is not None and rank:
        dim = (
            value.type.shape[spec.axis] if value.type.shape and -rank <= spec.axis < rank else None
        )
        channels = dim if isinstance(dim, int) else None
    for message in spec.problems(rank, channels):
        problems.append((node, f"quant spec of %{value.name}: {message}"))
