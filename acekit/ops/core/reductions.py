"""Reductions over dims."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    ANY,
    BOOL,
    FLOAT,
    INT,
    unary,
)


def mean(input: Tensor, *, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.mean``."""
    return input.mean() if dim is None else input.mean(dim, keepdim)


def sum_(input: Tensor, *, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.sum``."""
    return input.sum() if dim is None else input.sum(dim, keepdim)


def amax(input: Tensor, *, dim: Any = (), keepdim: bool = False) -> Tensor:
    """``torch.amax``."""
    return torch.amax(input, () if dim is None else dim, keepdim)


def amin(input: Tensor, *, dim: Any = (), keepdim: bool = False) -> Tensor:
    """``torch.amin``."""
    return torch.amin(input, () if dim is None else dim, keepdim)


def argmax(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.argmax``."""
    return torch.argmax(input, dim, keepdim)


def argmin(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.argmin``."""
    return torch.argmin(input, dim, keepdim)


def prod(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.prod``."""
    return input.prod() if dim is None else input.prod(dim, keepdim)


def any_(input: Tensor, *, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.any``."""
    return torch.any(input) if dim is None else torch.any(input, dim, keepdim)


def var(
    input: Tensor, *, dim: Any = None, correction: float = 1.0, keepdim: bool = False
) -> Tensor:
    """``torch.var`` (``correction=1``: the unbiased estimate; ``unbiased=`` binds to it)."""
    return torch.var(input, dim, correction=correction, keepdim=keepdim)


def cumsum(input: Tensor, *, dim: int) -> Tensor:
    """``torch.cumsum``."""
    return torch.cumsum(input, dim)


DEFINITIONS = [
    OpDef(
        unary("mean", dim=ANY, keepdim=BOOL),
        kernel=mean,
        functions=(torch.mean,),
        methods=("mean",),
        aten=("mean",),
    ),
    OpDef(
        unary("sum", dim=ANY, keepdim=BOOL),
        kernel=sum_,
        functions=(torch.sum,),
        methods=("sum",),
        aten=("sum",),
    ),
    OpDef(
        unary("amax", dim=ANY, keepdim=BOOL),
        kernel=amax,
        functions=(torch.amax,),
        methods=("amax",),
        aten=("amax",),
    ),
    OpDef(
        unary("amin", dim=ANY, keepdim=BOOL),
        kernel=amin,
        functions=(torch.amin,),
        methods=("amin",),
        aten=("amin",),
    ),
    OpDef(
        unary("argmax", dim=INT, keepdim=BOOL),
        kernel=argmax,
        functions=(torch.argmax,),
        methods=("argmax",),
        aten=("argmax",),
    ),
    OpDef(
        unary("argmin", dim=INT, keepdim=BOOL),
        kernel=argmin,
        functions=(torch.argmin,),
        methods=("argmin",),
        aten=("argmin",),
    ),
    OpDef(
        unary("prod", dim=INT, keepdim=BOOL),
        kernel=prod,
        functions=(torch.prod,),
        methods=("prod",),
        aten=("prod",),
    ),
    OpDef(
        unary("any", dim=ANY, keepdim=BOOL),
        kernel=any_,
        functions=(torch.any,),
        methods=("any",),
        aten=("any",),
    ),
    OpDef(
        unary("var", dim=ANY, correction=FLOAT, keepdim=BOOL),
        kernel=var,
        functions=(torch.var,),
        methods=("var",),
        aten=("var",),
    ),
    OpDef(
        unary("cumsum", dim=INT),
        kernel=cumsum,
        functions=(torch.cumsum,),
        methods=("cumsum",),
        aten=("cumsum",),
    ),
]
