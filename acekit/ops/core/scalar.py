"""Shape arithmetic and python scalars: what ``x.shape[0] // 16`` traces to.

A cleanup pass folds these once shapes are known; until then they run as plain python
at run time, so the same kernel serves tensors and the ints shapes are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    INT,
    STR,
    AttrSpec,
    OpSchema,
    unary,
)


def shape(input: Tensor, *, dim: int | None = None) -> Any:
    """``input.shape`` (a torch.Size), or ``input.size(dim)``."""
    return input.shape if dim is None else input.size(dim)


def dim(input: Tensor) -> int:
    """The rank of ``input``."""
    return input.dim()


def numel(input: Tensor) -> int:
    """The element count of ``input``."""
    return input.numel()


def gather(input: Sequence[Any], *, index: Any) -> Any:
    """An element (int index) or sub-tuple (``('slice', start, stop, step)``) of a tuple."""
    if isinstance(index, tuple):
        _, start, stop, step = index
        return tuple(input[slice(start, stop, step)])
    return input[index]


def pack(*inputs: Any, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """An int tuple: ``values`` with each ``None`` replaced by the next input."""
    pending = iter(inputs)
    return tuple(next(pending) if v is None else v for v in values)


def assert_(condition: Any, *, message: str = "") -> None:
    """``torch._assert``."""
    torch._assert(condition, message)


DEFINITIONS = [
    OpDef(
        OpSchema(
            "shape",
            ("input",),
            {"dim": INT},
            doc="The shape of a tensor as an int tuple (i64[rank]), or one size when dim is set.",
        ),
        kernel=shape,
    ),
    OpDef(
        unary("dim", doc="The rank of a tensor (Tensor.dim()), an int."),
        kernel=dim,
        methods=(
            "dim",
            "ndimension",
        ),
    ),
    OpDef(
        unary("numel", doc="The number of elements of a tensor, an int."),
        kernel=numel,
        functions=(torch.numel,),
        methods=(
            "numel",
            "nelement",
        ),
        aten=("sym_numel",),
    ),
    OpDef(
        OpSchema(
            "gather",
            ("input",),
            {"index": AttrSpec("any", required=True)},
            doc="Element(s) of a shape or tuple value: index is an int, or ('slice', start, "
            "stop, step) for a sub-tuple (ONNX Gather on a shape).",
        ),
        kernel=gather,
    ),
    OpDef(
        OpSchema(
            "pack",
            (),
            {"values": AttrSpec("any", required=True)},
            variadic=True,
            doc="Builds an int tuple: values is a tuple of ints where each None takes the next "
            "input, e.g. values=(None, 768, None) with inputs (batch, tokens).",
        ),
        kernel=pack,
    ),
    OpDef(
        OpSchema(
            "assert",
            ("condition",),
            {"message": STR},
            outputs=0,
            doc="torch._assert: fails at run time when condition is false.",
        ),
        kernel=assert_,
        functions=(torch._assert,),
    ),
]
