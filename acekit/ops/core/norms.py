"""Normalisations: batch norm (with its QAT folding), layer, group and vector norms."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
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
    unary,
)
from acekit.quant import qmath


def batch_norm(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None = None,
    *,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    training: bool = False,
) -> Tensor:
    """Batch norm with nn.BatchNorm's bookkeeping of running statistics."""
    factor = 0.0 if momentum is None else momentum
    if training and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        factor = 1.0 / float(num_batches_tracked) if momentum is None else momentum
    use_batch_stats = training or (running_mean is None and running_var is None)
    return F.batch_norm(
        input, running_mean, running_var, weight, bias, use_batch_stats, factor, eps
    )


def fold_bn_weight(
    weight: Tensor, bn_weight: Tensor, running_var: Tensor, *, eps: float = 1e-5
) -> Tensor:
    """``weight`` with the BatchNorm scale ``gamma / sqrt(var + eps)`` folded in."""
    return qmath.fold_bn_weight(weight, bn_weight, running_var, eps)


def qat_batch_norm(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    steps: Tensor,
    conv_bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    momentum: float = 0.1,
    freeze_after: int = 1000,
    training: bool = False,
) -> Tensor:
    """BatchNorm after a conv with a folded weight (see the op's schema)."""
    shape = [1, -1, *[1] * (input.dim() - 2)]
    if not (training and int(steps) < freeze_after):
        # Running statistics: the pair is the folded conv, whose bias this adds.
        shift = qmath.fold_bn_bias(conv_bias, weight, bias, running_mean, running_var, eps)
        return input + shift.reshape(shape)
    scale = qmath.bn_scale(weight, running_var, eps)
    steps.add_(1)
    unscaled = input / scale.reshape(shape)
    if conv_bias is not None:
        unscaled = unscaled + conv_bias.reshape(shape)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return F.batch_norm(unscaled, running_mean, running_var, weight, bias, True, momentum, eps)
    return _synchronized_batch_norm(
        unscaled, weight, bias, running_mean, running_var, momentum=momentum, eps=eps
    )


def _synchronized_batch_norm(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    *,
    momentum: float,
    eps: float,
) -> Tensor:
    """Batch norm over the batches of all ranks (like nn.SyncBatchNorm, on any device).

    Every rank normalises with the same statistics and keeps the same running ones, so
    the model stays identical across ranks. Gradients flow through the all-reduce.
    """
    from torch.distributed.nn.functional import all_reduce

    world = dist.get_world_size()
    dims = [d for d in range(input.dim()) if d != 1]
    count = input.numel() // input.shape[1] * world
    mean = all_reduce(input.mean(dims)) / world
    square = all_reduce((input * input).mean(dims)) / world
    var = square - mean * mean
    shape = [1, -1, *[1] * (input.dim() - 2)]
    normalised = (input - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + eps)
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * count / max(count - 1, 1))
    return normalised * weight.reshape(shape) + bias.reshape(shape)


def layer_norm(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    normalized_shape: tuple[int, ...],
    eps: float = 1e-5,
) -> Tensor:
    """``F.layer_norm``."""
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(
    input: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    num_groups: int,
    eps: float = 1e-5,
) -> Tensor:
    """``F.group_norm``."""
    return F.group_norm(input, num_groups, weight, bias, eps)


def normalize(input: Tensor, *, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``F.normalize``."""
    return F.normalize(input, p, dim, eps)


def norm(input: Tensor, *, p: float = 2.0, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.linalg.vector_norm``."""
    return torch.linalg.vector_norm(input, p, dim, keepdim)


DEFINITIONS = [
    OpDef(
        OpSchema(
            "fold_bn_weight",
            ("weight", "bn_weight", "running_var"),
            {"eps": FLOAT},
            doc="A conv weight with the following BatchNorm's scale folded in: "
            "weight * bn_weight / sqrt(running_var + eps), per output channel. Quantization-"
            "aware training quantizes this folded weight, the one deployed.",
        ),
        kernel=fold_bn_weight,
    ),
    OpDef(
        OpSchema(
            "qat_batch_norm",
            (
                "input",
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "steps",
                "conv_bias",
            ),
            {"eps": FLOAT, "momentum": FLOAT, "freeze_after": INT, "training": BOOL},
            optional_inputs=1,
            doc="The BatchNorm after a conv whose weight is fold_bn_weight: divides the "
            "scale back out, adds the conv's bias, then normalises. In training it uses the "
            "batch statistics and updates the running ones for the first freeze_after steps "
            "(counted in steps); afterwards, and in eval, it uses the running statistics, "
            "where conv + qat_batch_norm equals the folded conv that is deployed.",
        ),
        kernel=qat_batch_norm,
        uses_training=True,
    ),
    OpDef(
        OpSchema(
            "batch_norm",
            ("input", "weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
            {"eps": FLOAT, "momentum": FLOAT, "training": BOOL},
            optional_inputs=1,
            doc="Batch norm; in training mode it updates running_mean/var (and counts "
            "num_batches_tracked when given, used when momentum is None) like nn.BatchNorm.",
        ),
        kernel=batch_norm,
        uses_training=True,
        functions=(F.batch_norm,),
    ),
    OpDef(
        OpSchema(
            "layer_norm",
            ("input", "weight", "bias"),
            {"normalized_shape": INTS, "eps": FLOAT},
            optional_inputs=2,
        ),
        kernel=layer_norm,
        functions=(
            F.layer_norm,
            torch.layer_norm,
        ),
        aten=("layer_norm",),
    ),
    OpDef(
        OpSchema(
            "group_norm",
            ("input", "weight", "bias"),
            {"num_groups": AttrSpec("int", required=True), "eps": FLOAT},
            optional_inputs=2,
        ),
        kernel=group_norm,
        functions=(
            F.group_norm,
            torch.group_norm,
        ),
        aten=("group_norm",),
    ),
    OpDef(
        unary("normalize", p=FLOAT, dim=INT, eps=FLOAT),
        kernel=normalize,
        functions=(F.normalize,),
    ),
    OpDef(
        unary("norm", p=FLOAT, dim=ANY, keepdim=BOOL, doc="Vector p-norm over dim."),
        kernel=norm,
        functions=(torch.norm,),
        methods=("norm",),
        aten=("norm",),
    ),
]
