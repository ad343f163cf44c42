"""Operator schemas of TorchScript nodes, and TorchScript's encodings of dtypes."""

from __future__ import annotations

import functools
from typing import Any

import torch

from acekit.ir import dtype_name

_DTYPES = (
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.bool,
    torch.bfloat16,
)


@functools.cache
def _dtype_codes() -> dict[int, torch.dtype]:
    # TorchScript passes dtypes as their ScalarType number; prim::dtype gives it back.
    return {int(torch.ops.prim.dtype(torch.empty(0, dtype=dtype))): dtype for dtype in _DTYPES}


def dtype_from_code(code: int) -> torch.dtype:
    """The torch dtype of a TorchScript ScalarType number."""
    try:
        return _dtype_codes()[code]
    except KeyError:
        raise ValueError(f"unknown TorchScript dtype code {code}") from None


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> torch._C.FunctionSchema | None:
    if not text or text == "(no schema)":
        return None
    try:
        return torch._C.parse_schema(text)
    except RuntimeError:
        return None


def node_schema(node: torch._C.Node) -> torch._C.FunctionSchema | None:
    """The schema matched by ``node``, or ``None`` for nodes without one (most prims)."""
    try:
        text = node.schema()
    except RuntimeError:
        return None
    return _parse(text)


def is_inplace(schema: torch._C.FunctionSchema) -> bool:
    """Whether the op writes into its ``self`` argument (``relu_``, ``add_``)."""
    if not schema.arguments:
        return False
    alias = schema.arguments[0].alias_info
    return bool(alias is not None and alias.is_write and not schema.arguments[0].is_out)


def functional_name(name: str) -> str:
    """``aten::relu`` for ``aten::relu_``; other names unchanged."""
    namespace, _, op = name.partition("::")
    if op.endswith("_") and not op.endswith("__"):
        return f"{namespace}::{op[:-1]}"
    return name


@functools.lru_cache(maxsize=4096)
def operator(name: str, overload: str) -> Any:
    """The callable ``torch.ops.<ns>.<op>.<overload>`` for a schema name and overload."""
    namespace, _, op = name.partition("::")
    packet = getattr(getattr(torch.ops, namespace), op)
    return getattr(packet, overload or "default")


def declared_type(argument: torch._C.Argument) -> str:
    """The type the schema declares (``ScalarType?``), not the one it is stored as."""
    return str(argument.real_type)


def decode_argument(argument: torch._C.Argument, value: Any) -> Any:
    """A static argument in the form the IR keeps: dtypes by short name, lists as tuples."""
    if value is None:
        return None
    kind = declared_type(argument)
    if "ScalarType" in kind and isinstance(value, int):
        return dtype_name(dtype_from_code(value))
    if isinstance(value, torch.dtype):
        return dtype_name(value)
    return as_attribute(value)


def as_attribute(value: Any) -> Any:
    """Lists become tuples (recursively) so the value is a valid, hashable IR attribute."""
    if isinstance(value, list | tuple):
        return tuple(as_attribute(item) for item in value)
    return value
