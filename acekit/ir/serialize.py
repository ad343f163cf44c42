"""Lossless save and load of a Graph (structure, types, quant specs and tensors).

The file is a ``torch.save`` archive of plain data and tensors only, so it loads with
``weights_only=True``: opening a graph file never runs code from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from acekit.ir.graph import Graph, Value
from acekit.ir.quant import Granularity, QuantSpec
from acekit.ir.tensor_type import TensorType, dtype_from_name, dtype_name

FORMAT = "acekit-graph"
VERSION = 1


class GraphFileError(ValueError):
    """A file that is not an acekit graph, or one from an unsupported version."""


def _encode_value(value: Any) -> Any:
    # Tuples and lists both survive torch's safe unpickler, but dtypes are encoded by
    # name so that files never depend on pickling torch internals.
    if isinstance(value, torch.dtype):
        return {"__dtype__": dtype_name(value)}
    if isinstance(value, tuple):
        return tuple(_encode_value(v) for v in value)
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_value(v) for k, v in value.items()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__dtype__"}:
            return dtype_from_name(value["__dtype__"])
        return {k: _decode_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_decode_value(v) for v in value)
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def _encode_type(type_: TensorType) -> dict[str, Any]:
    return {
        "dtype": None if type_.dtype is None else dtype_name(type_.dtype),
        "shape": None if type_.shape is None else list(type_.shape),
    }


def _decode_type(data: dict[str, Any]) -> TensorType:
    dtype = None if data["dtype"] is None else dtype_from_name(data["dtype"])
    return TensorType(dtype, data["shape"])


def _encode_quant(spec: QuantSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
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
                "attrs": _encode_value(node.attrs),
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


def graph_from_dict(data: dict[str, Any]) -> Graph:
    """Rebuild a graph from :func:`graph_to_dict`'s data."""
    if data.get("format") != FORMAT:
        raise GraphFileError("not an acekit graph")
    if data.get("version") != VERSION:
        raise GraphFileError(f"graph format version {data.get('version')} is not supported")
    graph = Graph(data["name"])
    graph.tensors.update(data["tensors"])
    values: dict[str, Value] = {}
    for entry in data["nodes"]:
        outputs = entry["outputs"]
        node = graph.add_node(
            entry["op"],
            [values[name] for name in entry["inputs"]],
            _decode_value(entry["attrs"]),
            name=entry["name"],
            subgraph=entry["subgraph"],
            source_name=entry["source_name"],
            source_location=entry["source_location"],
            num_outputs=len(outputs),
            types=[_decode_type(o["type"]) for o in outputs],
        )
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


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Read a graph written by :func:`save_graph`."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise GraphFileError(f"{os.fspath(path)} is not a readable acekit graph: {error}") from None
    if not isinstance(data, dict):
        raise GraphFileError(f"{os.fspath(path)} is not an acekit graph")
    try:
        return graph_from_dict(data)
    except GraphFileError as error:
        raise GraphFileError(f"{os.fspath(path)}: {error}") from None
