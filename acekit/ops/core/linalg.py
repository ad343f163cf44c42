"""Convolutions, linear layers, matmul, einsum and embeddings."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    ANY,
    BOOL,
    FLOAT,
    INT,
    INTS,
    AttrSpec,
    OpSchema,
)

_CONV = {
    "stride": INTS,
    "padding": ANY,
    "dilation": INTS,
    "groups": INT,
}
_CONV_T = {**_CONV, "padding": INTS, "output_padding": INTS}


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv1d``."""
    return F.conv1d(input, weight, bias, **conv)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv2d``."""
    return F.conv2d(input, weight, bias, **conv)


def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv3d``."""
    return F.conv3d(input, weight, bias, **conv)


def conv_transpose1d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any
) -> Tensor:
    """``F.conv_transpose1d``."""
    return F.conv_transpose1d(input, weight, bias, **conv)


def conv_transpose2d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any
) -> Tensor:
    """``F.conv_transpose2d``."""
    return F.conv_transpose2d(input, weight, bias, **conv)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``."""
    return F.linear(input, weight, bias)


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """``torch.matmul``."""
    return torch.matmul(input, other)


def einsum(*operands: Tensor, equation: str) -> Tensor:
    """``torch.einsum``."""
    return torch.einsum(equation, *operands)


def embedding(input: Tensor, weight: Tensor, **options: Any) -> Tensor:
    """``F.embedding``."""
    return F.embedding(input, weight, **options)


DEFINITIONS = [
    OpDef(
        OpSchema("conv1d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
        kernel=conv1d,
        functions=(F.conv1d,),
        aten=("conv1d",),
    ),
    OpDef(
        OpSchema("conv2d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
        kernel=conv2d,
        functions=(F.conv2d,),
        aten=("conv2d",),
    ),
    OpDef(
        OpSchema("conv3d", ("input", "weight", "bias"), _CONV, optional_inputs=1),
        kernel=conv3d,
        functions=(F.conv3d,),
        aten=("conv3d",),
    ),
    OpDef(
        OpSchema("conv_transpose1d", ("input", "weight", "bias"), _CONV_T, optional_inputs=1),
        kernel=conv_transpose1d,
        functions=(F.conv_transpose1d,),
        aten=("conv_transpose1d",),
    ),
    OpDef(
        OpSchema("conv_transpose2d", ("input", "weight", "bias"), _CONV_T, optional_inputs=1),
        kernel=conv_transpose2d,
        functions=(F.conv_transpose2d,),
        aten=("conv_transpose2d",),
    ),
    OpDef(
        OpSchema("linear", ("input", "weight", "bias"), optional_inputs=1),
        kernel=linear,
        functions=(F.linear,),
        aten=("linear",),
    ),
    OpDef(
        OpSchema("matmul", ("input", "other")),
        kernel=matmul,
        functions=(
            operator.matmul,
            torch.matmul,
            torch.bmm,
            torch.mm,
        ),
        methods=(
            "matmul",
            "bmm",
            "mm",
        ),
        aten=(
            "matmul",
            "bmm",
            "mm",
        ),
    ),
    OpDef(
        OpSchema("einsum", (), {"equation": AttrSpec("str", required=True)}, variadic=True),
        kernel=einsum,
        functions=(torch.einsum,),
    ),
    OpDef(
        OpSchema(
            "embedding",
            ("input", "weight"),
            {
                "padding_idx": INT,
                "max_norm": FLOAT,
                "norm_type": FLOAT,
                "scale_grad_by_freq": BOOL,
                "sparse": BOOL,
            },
        ),
        kernel=embedding,
        functions=(F.embedding,),
    ),
]
