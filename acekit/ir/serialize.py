"""Lossless save and load of a Graph (structure, types, quant specs and tensors).

The file is a ``torch.save`` archive of plain data and tensors only, so it loads with
``weights_only=True``: opening a graph file never runs code from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from acekit.errors import CorruptFileError
from acekit.ir.file_schema import (
    BadField,
    check_graph_data,
    decode_value,
    encode_value,
    known_dtypes,
)
from acekit.ir.graph import Graph, Value
from acekit.ir.quant import Granularity, QuantSpec
from acekit.ir.schema import OpTable
from acekit.ir.tensor_type import TensorType, dtype_name
from acekit.ir.verify import VerificationError, verify

FORMAT = "acekit-graph"
VERSION = 1


class GraphFileError(CorruptFileError):
    """A file that is not an acekit graph, from an unsupported version, or malformed."""

    remedy = "damaged or not from acekit: save the graph again with acekit.ir.save_graph"


def _encode_type(type_: TensorType) -> dict[str, Any]:
    return {
        "dtype": None if type_.dtype is None else dtype_name(type_.dtype),
        "shape": None if type_.shape is None else list(type_.shape),
    }


def _decode_type(data: dict[str, Any]) -> TensorType:
    dtype = None if data["dtype"] is None else known_dtypes()[data["dtype"]]
    return TensorType(dtype, data["shape"])


def _encode_quant(spec: QuantSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    encoded = {
        "bits": spec.bits,
        "signed": spec.signed,
        "symmetric": spec.symmetric,
        "granularity": spec.granularity.value,
        "axis": spec.axis,
        "scale": None if spec.scale is None else list(spec.scale),
        "zero_point": None if spec.zero_point is None else list(spec.zero_point),
        "skip": spec.skip,
        "reason": spec.reason,
    }
    if spec.block_size is not None:  # only group-wise specs carry it (older files lack it)
        encoded["block_size"] = spec.block_size
    return encoded


def _decode_quant(data: dict[str, Any] | None) -> QuantSpec | None:
    if data is None:
        return None
    return QuantSpec(**{**data, "granularity": Granularity(data["granularity"])})


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    """The graph as plain data plus tensors."""
    nodes = []
    for node in graph.nodes:
        nodes.append(
            {
                "op": node.op,
                "name": node.name,
                "inputs": [v.name for v in node.inputs],
                "outputs": [
                    {"name": v.name, "type": _encode_type(v.type), "quant": _encode_quant(v.quant)}
                    for v in node.outputs
                ],
                "attrs": encode_value(node.attrs),
                "subgraph": node.subgraph,
                "source_name": node.source_name,
                "source_location": node.source_location,
            }
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "nodes": nodes,
        "tensors": dict(graph.tensors),
    }


def graph_from_dict(
    data: dict[str, Any],
    *,
    ops: OpTable | None = None,
    source: str | os.PathLike[str] | None = None,
    field: str = "",
) -> Graph:
    """Rebuild a graph from :func:`graph_to_dict`'s data, read from outside acekit.

    The whole of ``data`` is checked (:mod:`acekit.ir.file_schema`) before anything is
    built, and the graph is verified once built: bad data raises one
    :class:`GraphFileError` naming ``source`` (the file) and the first bad field (under
    ``field``, the data's place in the file). ``ops`` is the op table the graph's ops
    must come from (default :data:`acekit.ir.core_ops.OPS`, which plugin ops join).
    """
    from acekit.ir import core_ops

    table = core_ops.OPS if ops is None else ops
    try:
        check_graph_data(data, table, fmt=FORMAT, version=VERSION)
        graph = _build(data)
    except BadField as bad:
        where = ".".join(part for part in (field, bad.field) if part)
        raise GraphFileError(bad.problem, path=source, field=where or None) from None
    try:
        verify(graph, table)
    except VerificationError as error:
        node, problem = error.problems[0]
        what = problem if node is None else f"{node.describe()}: {problem}"
        raise GraphFileError(what, path=source, field=field or None) from None
    return graph


def copy_graph(graph: Graph) -> Graph:
    """An independent copy of ``graph`` (sharing its tensors), as saving and loading make."""
    return _build(graph_to_dict(graph))


def _build(data: dict[str, Any]) -> Graph:
    graph = Graph(data["name"])
    graph.tensors.update(data["tensors"])
    values: dict[str, Value] = {}
    for i, entry in enumerate(data["nodes"]):
        outputs = entry["outputs"]
        node = graph.add_node(
            entry["op"],
            [values[name] for name in entry["inputs"]],
            decode_value(entry["attrs"]),
            name=entry["name"],
            subgraph=entry["subgraph"],
            source_name=entry["source_name"],
            source_location=entry["source_location"],
            num_outputs=len(outputs),
            types=[_decode_type(o["type"]) for o in outputs],
        )
        if node.name != entry["name"]:
            raise BadField(f"nodes[{i}].name", f"name {entry['name']!r} clashes with a value name")
        for value, saved in zip(node.outputs, outputs, strict=True):
            value.name = saved["name"]
            value.quant = _decode_quant(saved["quant"])
            values[value.name] = value
        if node.op == "output":
            graph._output_node = node
    graph._value_names = dict(values)
    return graph


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to ``path`` atomically (a crash never leaves half a file)."""
    from acekit.fileio import atomic_torch_save

    return atomic_torch_save(graph_to_dict(graph), path)


def load_graph(path: str | os.PathLike[str], *, ops: OpTable | None = None) -> Graph:
    """Read a graph written by :func:`save_graph`; the file is untrusted input.

    Nothing in the file runs: it is read with ``weights_only=True`` and checked whole
    before anything is built (see :func:`graph_from_dict`). Raises
    :class:`GraphFileError` naming the file and the first bad field;
    ``FileNotFoundError`` when there is no file.
    """
    data = read_payload(path, GraphFileError)
    return graph_from_dict(data, ops=ops, source=path)


def read_payload(path: str | os.PathLike[str], error: type[CorruptFileError]) -> Any:
    """``torch.load`` of an untrusted file: plain data and tensors only, on the CPU.

    Any failure but a missing file raises ``error`` naming the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # the unpickler raises many types for a damaged file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise error(f"not a readable file: {reason}", path=path) from None
