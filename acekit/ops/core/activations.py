"""Activations, softmax and dropout."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from acekit.ops.opdef import KernelFn, OpDef
from acekit.ops.schemas import (
    BOOL,
    FLOAT,
    INT,
    STR,
    OpSchema,
    unary,
)


def identity(input: Any) -> Any:
    """Returns its input."""
    return input


def detach(input: Tensor) -> Tensor:
    """``input.detach()``."""
    return input.detach()


def _activation(op: str, fn: Any) -> KernelFn:
    def kernel(input: Tensor) -> Tensor:
        return fn(input)

    kernel.__name__ = kernel.__qualname__ = f"activation_{op}"
    kernel.__doc__ = f"``F.{op}``."
    globals()[kernel.__name__] = kernel
    return kernel


_ACTIVATION = {
    op: _activation(op, fn)
    for op, fn in {
        "relu": F.relu,
        "relu6": F.relu6,
        "silu": F.silu,
        "mish": F.mish,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "hardswish": F.hardswish,
        "hardsigmoid": F.hardsigmoid,
    }.items()
}


def gelu(input: Tensor, *, approximate: str = "none") -> Tensor:
    """``F.gelu``."""
    return F.gelu(input, approximate=approximate)


def hardtanh(input: Tensor, *, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """``F.hardtanh``."""
    return F.hardtanh(input, min_val, max_val)


def leaky_relu(input: Tensor, *, negative_slope: float = 0.01) -> Tensor:
    """``F.leaky_relu``."""
    return F.leaky_relu(input, negative_slope)


def elu(input: Tensor, *, alpha: float = 1.0) -> Tensor:
    """``F.elu``."""
    return F.elu(input, alpha)


def softplus(input: Tensor, *, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``F.softplus``."""
    return F.softplus(input, beta, threshold)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``F.prelu``."""
    return F.prelu(input, weight)


def softmax(input: Tensor, *, dim: int = -1) -> Tensor:
    """``F.softmax``."""
    return F.softmax(input, dim)


def log_softmax(input: Tensor, *, dim: int = -1) -> Tensor:
    """``F.log_softmax``."""
    return F.log_softmax(input, dim)


def dropout(
    input: Tensor, *, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """``F.dropout``; never in place, so that autograd always sees a fresh tensor."""
    return F.dropout(input, p, training)


def dropout2d(
    input: Tensor, *, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """``F.dropout2d`` (channel-wise dropout, whatever the rank); never in place."""
    return torch.feature_dropout(input, p, training)


def stochastic_depth(
    input: Tensor, *, p: float = 0.0, mode: str = "row", training: bool = False
) -> Tensor:
    """torchvision.ops.stochastic_depth, written in torch to avoid the dependency."""
    if not training or p == 0.0:
        return input
    survival = 1.0 - p
    size = [input.shape[0]] + [1] * (input.dim() - 1) if mode == "row" else [1] * input.dim()
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return input * noise


DEFINITIONS = [
    OpDef(
        unary("identity"),
        kernel=identity,
    ),
    OpDef(
        unary("detach"),
        kernel=detach,
        functions=(torch.detach,),
        methods=("detach",),
        aten=("detach",),
    ),
    OpDef(
        unary("relu"),
        kernel=_ACTIVATION["relu"],
        functions=(
            torch.relu,
            F.relu,
            F.relu_,
        ),
        methods=("relu",),
        aten=("relu",),
        nonnegative=True,
    ),
    OpDef(
        unary("relu6"),
        kernel=_ACTIVATION["relu6"],
        functions=(F.relu6,),
        methods=("relu6",),
        nonnegative=True,
    ),
    OpDef(
        unary("gelu", approximate=STR),
        kernel=gelu,
        functions=(F.gelu,),
        methods=("gelu",),
        aten=("gelu",),
    ),
    OpDef(
        unary("silu"),
        kernel=_ACTIVATION["silu"],
        functions=(F.silu,),
        methods=("silu",),
        aten=("silu",),
    ),
    OpDef(
        unary("mish"),
        kernel=_ACTIVATION["mish"],
        functions=(F.mish,),
        methods=("mish",),
        aten=("mish",),
    ),
    OpDef(
        unary("sigmoid"),
        kernel=_ACTIVATION["sigmoid"],
        functions=(
            torch.sigmoid,
            F.sigmoid,
            torch.special.expit,
        ),
        methods=("sigmoid",),
        aten=("sigmoid",),
        nonnegative=True,
    ),
    OpDef(
        unary("tanh"),
        kernel=_ACTIVATION["tanh"],
        functions=(
            torch.tanh,
            F.tanh,
        ),
        methods=("tanh",),
        aten=("tanh",),
    ),
    OpDef(
        unary("hardswish"),
        kernel=_ACTIVATION["hardswish"],
        functions=(F.hardswish,),
        methods=("hardswish",),
        aten=("hardswish",),
    ),
    OpDef(
        unary("hardsigmoid"),
        kernel=_ACTIVATION["hardsigmoid"],
        functions=(F.hardsigmoid,),
        methods=("hardsigmoid",),
        aten=("hardsigmoid",),
        nonnegative=True,
    ),
    OpDef(
        unary("hardtanh", min_val=FLOAT, max_val=FLOAT),
        kernel=hardtanh,
        functions=(F.hardtanh,),
        methods=("hardtanh",),
    ),
    OpDef(
        unary("leaky_relu", negative_slope=FLOAT),
        kernel=leaky_relu,
        functions=(F.leaky_relu,),
        methods=("leaky_relu",),
        aten=("leaky_relu",),
    ),
    OpDef(
        unary("elu", alpha=FLOAT),
        kernel=elu,
        functions=(F.elu,),
        methods=("elu",),
    ),
    OpDef(
        unary("softplus", beta=FLOAT, threshold=FLOAT),
        kernel=softplus,
        functions=(F.softplus,),
        aten=("softplus",),
    ),
    OpDef(
        OpSchema("prelu", ("input", "weight")),
        kernel=prelu,
        functions=(F.prelu,),
        aten=("prelu",),
    ),
    OpDef(
        unary("softmax", dim=INT),
        kernel=softmax,
        functions=(
            F.softmax,
            torch.softmax,
        ),
        methods=("softmax",),
        nonnegative=True,
    ),
    OpDef(
        unary("log_softmax", dim=INT),
        kernel=log_softmax,
        functions=(
            F.log_softmax,
            torch.log_softmax,
        ),
        methods=("log_softmax",),
    ),
    OpDef(
        unary("dropout", p=FLOAT, training=BOOL, inplace=BOOL),
        kernel=dropout,
        uses_training=True,
        functions=(
            F.dropout,
            torch.dropout,
        ),
    ),
    OpDef(
        unary(
            "dropout2d",
            p=FLOAT,
            training=BOOL,
            inplace=BOOL,
            doc="F.dropout2d (aten feature_dropout): zeros whole channels input[n, c] in training.",
        ),
        kernel=dropout2d,
        uses_training=True,
        functions=(
            F.dropout2d,
            torch.feature_dropout,
        ),
        aten=("feature_dropout",),
    ),
    OpDef(
        unary(
            "stochastic_depth",
            p=FLOAT,
            mode=STR,
            training=BOOL,
            doc="torchvision.ops.stochastic_depth: drops whole rows/batches in training.",
        ),
        kernel=stochastic_depth,
        uses_training=True,
    ),
]
