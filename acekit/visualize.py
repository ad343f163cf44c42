"""Pictures of a Graph: one box per op, clustered by the user's module hierarchy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import graphviz

from acekit.fileio import atomic_write, check_output_path
from acekit.ir.graph import Graph, Node, Value
from acekit.logging import get_logger

log = get_logger(__name__)

_HIDDEN_OPS = {"parameter", "constant"}


def _quant_label(value: Value) -> str:
    spec = value.quant
    if spec is None:
        return ""
    if spec.skip:
        return "float (skipped" + (f": {spec.reason}" if spec.reason else "") + ")"
    kind = f"{'s' if spec.signed else 'u'}{spec.bits}"
    granularity = f" per-channel(axis={spec.axis})" if spec.axis is not None else " per-tensor"
    if spec.block_size is not None:
        granularity += f" blocks of {spec.block_size}"
    return kind + granularity


def _label(node: Node) -> str:
    lines = [node.name, node.op]
    for value in node.outputs:
        shape = "?" if value.type.shape is None else "x".join(str(d) for d in value.type.shape)
        quant = _quant_label(value)
        lines.append(shape + (f"  {quant}" if quant else ""))
    weights = [v for v in node.inputs if v.producer is not None and v.producer.op == "parameter"]
    for weight in weights:
        quant = _quant_label(weight)
        if quant:
            lines.append(f"{weight.name.rsplit('.', 1)[-1]}: {quant}")
    return "\n".join(lines)


def _fill(node: Node) -> str:
    quantized = [v for v in (*node.outputs, *node.inputs) if v.quant is not None]
    if any(not v.quant.skip for v in quantized if v.quant is not None):
        return "#d5f5d5"
    if quantized:
        return "#f8e0c8"
    return "#ffffff"


def graph_to_dot(graph: Graph) -> graphviz.Digraph:
    """A graphviz digraph of ``graph``: boxes per op, nested clusters per subgraph path."""
    dot = graphviz.Digraph(
        graph.name,
        graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
        node_attr={
            "shape": "box",
            "style": "rounded,filled",
            "fontname": "Helvetica",
            "fontsize": "10",
        },
    )
    clusters: dict[str, list[Node]] = {}
    for node in graph.nodes:
        if node.op not in _HIDDEN_OPS:
            clusters.setdefault(node.subgraph, []).append(node)

    def add_cluster(parent: graphviz.Digraph, path: str) -> None:
        for node in clusters.get(path, []):
            parent.node(node.name, _label(node), fillcolor=_fill(node))
        prefix = f"{path}/" if path else ""
        children = sorted(
            {
                p[len(prefix) :].split("/", 1)[0]
                for p in clusters
                if p.startswith(prefix) and p != path
            }
        )
        for child in children:
            child_path = prefix + child
            with parent.subgraph(name=f"cluster_{child_path}") as sub:
                sub.attr(label=child, style="rounded", color="#8888aa")
                add_cluster(sub, child_path)

    roots = sorted({p.split("/", 1)[0] for p in clusters if p})
    for node in clusters.get("", []):
        dot.node(node.name, _label(node), fillcolor=_fill(node))
    for root in roots:
        with dot.subgraph(name=f"cluster_{root}") as sub:
            sub.attr(label=root, style="rounded", color="#444466")
            add_cluster(sub, root)
    for node in graph.nodes:
        if node.op in _HIDDEN_OPS:
            continue
        for value in node.inputs:
            producer = value.producer
            if producer is not None and producer.op not in _HIDDEN_OPS:
                dot.edge(producer.name, node.name)
    return dot


def render(graph: Graph, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write a picture of ``graph`` to ``path`` (SVG, PNG or PDF by extension).

    ``path`` is checked like an export's before any work (see
    :func:`acekit.fileio.check_output_path`) and written atomically. A ``.dot`` or
    ``.gv`` path gets the graph source. Without graphviz's ``dot`` binary the picture
    cannot be laid out: the source is written to ``<path>.dot`` (``graph.svg.dot``, so
    that a ``graph.dot`` of the user's is never replaced) and a log line says how to
    install ``dot``.
    """
    target = check_output_path(path, overwrite=overwrite)
    fmt = target.suffix.lstrip(".").lower() or "svg"
    dot = graph_to_dot(graph)
    if fmt in _SOURCE_FORMATS:
        return _write(target, dot.source.encode("utf-8"))
    if shutil.which("dot") is None:
        fallback = check_output_path(target.with_name(target.name + ".dot"), overwrite=overwrite)
        _write(fallback, dot.source.encode("utf-8"))
        log.warning(
            f"graphviz's 'dot' binary is not installed, wrote the graph source to '{fallback}' "
            "instead (install graphviz, e.g. 'apt-get install graphviz', then run "
            f"'dot -T{fmt} {fallback} -o {target}')"
        )
        return fallback
    log.info("Creating a visualization of the Graph. It may take few minutes.")
    data = dot.pipe(format=fmt)
    _write(target, data)
    log.info(f"Saved graph visualization to: {target}")
    return target


_SOURCE_FORMATS = frozenset({"dot", "gv"})


def _write(target: Path, data: bytes) -> Path:
    if target.exists():
        log.info(f"Visualization: file exists: '{target}', Overwriting.")
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))
