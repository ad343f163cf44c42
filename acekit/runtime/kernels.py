"""Kernels of the core IR ops, built on torch and torch.nn.functional.

Scalar ops (shape arithmetic) use Python's operators so that the same kernel serves
tensors and the python ints that shape values are at run time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from acekit.ir.tensor_type import dtype_from_name
from acekit.quant import qmath
from acekit.runtime.registry import KernelTable, register_kernel

#: Every registered kernel by op name (a live view: plugin kernels appear too).
KERNELS = KernelTable()

# -- shape arithmetic and scalars ------------------------------------------------------


@register_kernel("shape")
def shape(input: Tensor, *, dim: int | None = None) -> Any:
    """``input.shape`` (a torch.Size), or ``input.size(dim)``."""
    return input.shape if dim is None else input.size(dim)


@register_kernel("dim")
def dim(input: Tensor) -> int:
    """The rank of ``input``."""
    return input.dim()


@register_kernel("numel")
def numel(input: Tensor) -> int:
    """The element count of ``input``."""
    return input.numel()


@register_kernel("gather")
def gather(input: Sequence[Any], *, index: Any) -> Any:
    """An element (int index) or sub-tuple (``('slice', start, stop, step)``) of a tuple."""
    if isinstance(index, tuple):
        _, start, stop, step = index
        return tuple(input[slice(start, stop, step)])
    return input[index]


@register_kernel("pack")
def pack(*inputs: Any, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """An int tuple: ``values`` with each ``None`` replaced by the next input."""
    pending = iter(inputs)
    return tuple(next(pending) if v is None else v for v in values)


@register_kernel("assert")
def assert_(condition: Any, *, message: str = "") -> None:
    """``torch._assert``."""
    torch._assert(condition, message)


# -- elementwise -------------------------------------------------------------------------


@register_kernel("add")
def add(input: Any, other: Any, *, alpha: float | None = None) -> Any:
    """``input + alpha * other``."""
    if alpha is None or alpha == 1:
        return input + other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.add(torch.as_tensor(input), other, alpha=alpha)
    return input + alpha * other


@register_kernel("sub")
def sub(input: Any, other: Any, *, alpha: float | None = None) -> Any:
    """``input - alpha * other``."""
    if alpha is None or alpha == 1:
        return input - other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.sub(torch.as_tensor(input), other, alpha=alpha)
    return input - alpha * other


@register_kernel("div")
def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Any:
    """True division, or rounded division when ``rounding_mode`` is given."""
    if rounding_mode is None:
        return input / other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.div(torch.as_tensor(input), other, rounding_mode=rounding_mode)
    if rounding_mode == "floor":
        return input // other
    return math.trunc(input / other)


def _binary_operator(op: str, fn: Any) -> None:
    def kernel(input: Any, other: Any) -> Any:
        return fn(input, other)

    kernel.__name__ = kernel.__qualname__ = f"binary_{op}"
    kernel.__doc__ = f"``{op}`` with Python operator semantics (tensors and scalars)."
    globals()[kernel.__name__] = kernel  # generated modules import kernels by name
    register_kernel(op)(kernel)


_OPERATORS: dict[str, Any] = {
    "mul": operator.mul,
    "floor_divide": operator.floordiv,
    "remainder": operator.mod,
    "pow": operator.pow,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "bitwise_and": operator.and_,
    "bitwise_or": operator.or_,
}
for _name, _operator in _OPERATORS.items():
    _binary_operator(_name, _operator)


def _either_tensor(*values: Any) -> bool:
    return any(isinstance(v, Tensor) for v in values)


@register_kernel("logical_and")
def logical_and(input: Any, other: Any) -> Any:
    """Logical and of tensors or python bools."""
    if _either_tensor(input, other):
        return torch.logical_and(torch.as_tensor(input), torch.as_tensor(other))
    return bool(input) and bool(other)


@register_kernel("logical_or")
def logical_or(input: Any, other: Any) -> Any:
    """Logical or of tensors or python bools."""
    if _either_tensor(input, other):
        return torch.logical_or(torch.as_tensor(input), torch.as_tensor(other))
    return bool(input) or bool(other)


@register_kernel("bitwise_not")
def bitwise_not(input: Tensor) -> Tensor:
    """``~input`` (``torch.bitwise_not``)."""
    return torch.bitwise_not(input)


@register_kernel("logical_not")
def logical_not(input: Any) -> Any:
    """Logical not of a tensor or python bool."""
    return torch.logical_not(input) if isinstance(input, Tensor) else not input


@register_kernel("maximum")
def maximum(input: Any, other: Any) -> Any:
    """Elementwise maximum."""
    if _either_tensor(input, other):
        return torch.maximum(torch.as_tensor(input), torch.as_tensor(other))
    return max(input, other)


@register_kernel("minimum")
def minimum(input: Any, other: Any) -> Any:
    """Elementwise minimum."""
    if _either_tensor(input, other):
        return torch.minimum(torch.as_tensor(input), torch.as_tensor(other))
    return min(input, other)


@register_kernel("neg")
def neg(input: Any) -> Any:
    """``-input``."""
    return -input


@register_kernel("abs")
def abs_(input: Any) -> Any:
    """``abs(input)``."""
    return abs(input)


def _math_unary(op: str, tensor_fn: Any, scalar_fn: Any) -> None:
    def kernel(input: Any) -> Any:
        return tensor_fn(input) if isinstance(input, Tensor) else scalar_fn(input)

    kernel.__name__ = kernel.__qualname__ = f"unary_{op}"
    kernel.__doc__ = f"``torch.{op}`` (math.{op} for python scalars)."
    globals()[kernel.__name__] = kernel
    register_kernel(op)(kernel)


for _op, _tensor_fn, _scalar_fn in (
    ("exp", torch.exp, math.exp),
    ("log", torch.log, math.log),
    ("sqrt", torch.sqrt, math.sqrt),
    ("rsqrt", torch.rsqrt, lambda v: 1.0 / math.sqrt(v)),
    ("reciprocal", torch.reciprocal, lambda v: 1.0 / v),
    ("erf", torch.erf, math.erf),
    ("sin", torch.sin, math.sin),
    ("cos", torch.cos, math.cos),
    ("floor", torch.floor, math.floor),
    ("ceil", torch.ceil, math.ceil),
):
    _math_unary(_op, _tensor_fn, _scalar_fn)


@register_kernel("clamp")
def clamp(input: Tensor, *, min: float | None = None, max: float | None = None) -> Tensor:
    """``torch.clamp``."""
    return torch.clamp(input, min, max)


@register_kernel("to")
def to(input: Tensor, *, dtype: str | None = None) -> Tensor:
    """Cast to ``dtype`` (a short dtype name)."""
    return input if dtype is None else input.to(dtype_from_name(dtype))


@register_kernel("where")
def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """``torch.where``."""
    return torch.where(condition, input, other)


@register_kernel("masked_fill")
def masked_fill(
    input: Tensor, mask: Tensor, value_input: Tensor | None = None, *, value: float | None = None
) -> Tensor:
    """``input.masked_fill(mask, value)``."""
    fill = value_input if value_input is not None else value
    assert fill is not None, "masked_fill needs a value"
    return input.masked_fill(mask, fill)


# -- activations -------------------------------------------------------------------------


@register_kernel("identity")
def identity(input: Any) -> Any:
    """Returns its input."""
    return input


@register_kernel("detach")
def detach(input: Tensor) -> Tensor:
    """``input.detach()``."""
    return input.detach()


def _activation(op: str, fn: Any) -> None:
    def kernel(input: Tensor) -> Tensor:
        return fn(input)

    kernel.__name__ = kernel.__qualname__ = f"activation_{op}"
    kernel.__doc__ = f"``F.{op}``."
    globals()[kernel.__name__] = kernel
    register_kernel(op)(kernel)


for _op, _activation_fn in {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "mish": F.mish,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
}.items():
    _activation(_op, _activation_fn)


@register_kernel("gelu")
def gelu(input: Tensor, *, approximate: str = "none") -> Tensor:
    """``F.gelu``."""
    return F.gelu(input, approximate=approximate)


@register_kernel("hardtanh")
def hardtanh(input: Tensor, *, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """``F.hardtanh``."""
    return F.hardtanh(input, min_val, max_val)


@register_kernel("leaky_relu")
def leaky_relu(input: Tensor, *, negative_slope: float = 0.01) -> Tensor:
    """``F.leaky_relu``."""
    return F.leaky_relu(input, negative_slope)


@register_kernel("elu")
def elu(input: Tensor, *, alpha: float = 1.0) -> Tensor:
    """``F.elu``."""
    return F.elu(input, alpha)


@register_kernel("softplus")
def softplus(input: Tensor, *, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``F.softplus``."""
    return F.softplus(input, beta, threshold)


@register_kernel("prelu")
def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``F.prelu``."""
    return F.prelu(input, weight)


@register_kernel("softmax")
def softmax(input: Tensor, *, dim: int = -1) -> Tensor:
    """``F.softmax``."""
    return F.softmax(input, dim)


@register_kernel("log_softmax")
def log_softmax(input: Tensor, *, dim: int = -1) -> Tensor:
    """``F.log_softmax``."""
    return F.log_softmax(input, dim)


@register_kernel("dropout", uses_training=True)
def dropout(
    input: Tensor, *, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """``F.dropout``; never in place, so that autograd always sees a fresh tensor."""
    return F.dropout(input, p, training)


@register_kernel("dropout2d", uses_training=True)
def dropout2d(
    input: Tensor, *, p: float = 0.5, training: bool = False, inplace: bool = False
) -> Tensor:
    """``F.dropout2d`` (channel-wise dropout, whatever the rank); never in place."""
    return torch.feature_dropout(input, p, training)


@register_kernel("stochastic_depth", uses_training=True)
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


# -- linear algebra ----------------------------------------------------------------------


@register_kernel("conv1d")
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv1d``."""
    return F.conv1d(input, weight, bias, **conv)


@register_kernel("conv2d")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv2d``."""
    return F.conv2d(input, weight, bias, **conv)


@register_kernel("conv3d")
def conv3d(input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any) -> Tensor:
    """``F.conv3d``."""
    return F.conv3d(input, weight, bias, **conv)


@register_kernel("conv_transpose1d")
def conv_transpose1d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any
) -> Tensor:
    """``F.conv_transpose1d``."""
    return F.conv_transpose1d(input, weight, bias, **conv)


@register_kernel("conv_transpose2d")
def conv_transpose2d(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, **conv: Any
) -> Tensor:
    """``F.conv_transpose2d``."""
    return F.conv_transpose2d(input, weight, bias, **conv)


@register_kernel("linear")
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``."""
    return F.linear(input, weight, bias)


@register_kernel("matmul")
def matmul(input: Tensor, other: Tensor) -> Tensor:
    """``torch.matmul``."""
    return torch.matmul(input, other)


@register_kernel("einsum")
def einsum(*operands: Tensor, equation: str) -> Tensor:
    """``torch.einsum``."""
    return torch.einsum(equation, *operands)


@register_kernel("embedding")
def embedding(input: Tensor, weight: Tensor, **options: Any) -> Tensor:
    """``F.embedding``."""
    return F.embedding(input, weight, **options)


# -- normalisation -----------------------------------------------------------------------


@register_kernel("batch_norm", uses_training=True)
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


@register_kernel("fold_bn_weight")
def fold_bn_weight(
    weight: Tensor, bn_weight: Tensor, running_var: Tensor, *, eps: float = 1e-5
) -> Tensor:
    """``weight`` with the BatchNorm scale ``gamma / sqrt(var + eps)`` folded in."""
    return qmath.fold_bn_weight(weight, bn_weight, running_var, eps)


@register_kernel("qat_batch_norm", uses_training=True)
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


@register_kernel("layer_norm")
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


@register_kernel("group_norm")
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


@register_kernel("normalize")
def normalize(input: Tensor, *, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``F.normalize``."""
    return F.normalize(input, p, dim, eps)


@register_kernel("norm")
def norm(input: Tensor, *, p: float = 2.0, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.linalg.vector_norm``."""
    return torch.linalg.vector_norm(input, p, dim, keepdim)


# -- reductions --------------------------------------------------------------------------


@register_kernel("mean")
def mean(input: Tensor, *, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.mean``."""
    return input.mean() if dim is None else input.mean(dim, keepdim)


@register_kernel("sum")
def sum_(input: Tensor, *, dim: Any = None, keepdim: bool = False) -> Tensor:
    """``torch.sum``."""
    return input.sum() if dim is None else input.sum(dim, keepdim)


@register_kernel("amax")
def amax(input: Tensor, *, dim: Any = (), keepdim: bool = False) -> Tensor:
    """``torch.amax``."""
    return torch.amax(input, () if dim is None else dim, keepdim)


@register_kernel("amin")
def amin(input: Tensor, *, dim: Any = (), keepdim: bool = False) -> Tensor:
    """``torch.amin``."""
    return torch.amin(input, () if dim is None else dim, keepdim)


@register_kernel("argmax")
def argmax(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.argmax``."""
    return torch.argmax(input, dim, keepdim)


@register_kernel("argmin")
def argmin(input: Tensor, *, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """``torch.argmin``."""
    return torch.argmin(input, dim, keepdim)


@register_kernel("cumsum")
def cumsum(input: Tensor, *, dim: int) -> Tensor:
    """``torch.cumsum``."""
    return torch.cumsum(input, dim)


# -- pooling and resampling --------------------------------------------------------------


@register_kernel("max_pool1d")
def max_pool1d(input: Tensor, **pool: Any) -> Tensor:
    """``F.max_pool1d``."""
    return F.max_pool1d(input, **pool)


@register_kernel("max_pool2d")
def max_pool2d(input: Tensor, **pool: Any) -> Tensor:
    """``F.max_pool2d``."""
    return F.max_pool2d(input, **pool)


@register_kernel("avg_pool1d")
def avg_pool1d(input: Tensor, **pool: Any) -> Tensor:
    """``F.avg_pool1d``."""
    return F.avg_pool1d(input, **pool)


@register_kernel("avg_pool2d")
def avg_pool2d(input: Tensor, **pool: Any) -> Tensor:
    """``F.avg_pool2d``."""
    return F.avg_pool2d(input, **pool)


@register_kernel("adaptive_avg_pool1d")
def adaptive_avg_pool1d(input: Tensor, *, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool1d``."""
    return F.adaptive_avg_pool1d(input, output_size)


@register_kernel("adaptive_avg_pool2d")
def adaptive_avg_pool2d(input: Tensor, *, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool2d``; as two averaging matmuls when a size does not divide.

    torch's ONNX exporter lowers adaptive pooling only to a fixed-kernel pool, so an
    output size that does not divide the input (AlexNet's 6x6 of a 1x1 map at 64 px)
    cannot be exported; the matmuls compute the same windows and export everywhere.
    """
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    height, width = int(input.shape[-2]), int(input.shape[-1])
    if None in sizes or (height % sizes[0] == 0 and width % sizes[1] == 0):
        return F.adaptive_avg_pool2d(input, output_size)
    rows = _averaging_matrix(height, sizes[0], input)
    columns = _averaging_matrix(width, sizes[1], input)
    return torch.matmul(torch.matmul(rows, input), columns.transpose(0, 1))


def _averaging_matrix(size: int, out: int, like: Tensor) -> Tensor:
    """(out, size): row i averages adaptive pooling's window i of a dim of ``size``."""
    matrix = torch.zeros(out, size, dtype=like.dtype, device=like.device)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@register_kernel("adaptive_max_pool2d")
def adaptive_max_pool2d(input: Tensor, *, output_size: Any) -> Tensor:
    """``F.adaptive_max_pool2d`` (values only)."""
    return F.adaptive_max_pool2d(input, output_size)


@register_kernel("interpolate")
def interpolate(input: Tensor, size_input: Any = None, **options: Any) -> Tensor:
    """``F.interpolate``; the size comes from the input when there is one."""
    if size_input is not None:
        options["size"] = tuple(size_input)
    if options.get("antialias") and input.dim() == 4:
        return _antialiased_resize(input, options)
    return F.interpolate(input, **options)


def _antialiased_resize(input: Tensor, options: dict[str, Any]) -> Tensor:
    """An antialiased 2-D resize as ``rows @ input @ cols.T``.

    ONNX ``Resize`` antialiases only from opset 18 and torch's exporter lowers no
    ``_upsample_*_aa``. The resize is linear and separable, so each axis is a matrix:
    the same resize applied to the basis vectors of that axis. The matrices depend only
    on sizes and are built outside any exporter's trace, so they export as constants.
    """
    height, width = int(input.shape[-2]), int(input.shape[-1])
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)  # type: ignore[attr-defined]
    try:
        with torch.no_grad():
            rows = _resize_matrix(height, 0, options, input)
            cols = _resize_matrix(width, 1, options, input)
    finally:
        torch._C._set_tracing_state(state)  # type: ignore[attr-defined]
    return torch.matmul(torch.matmul(rows, input), cols.transpose(0, 1))


def _resize_matrix(length: int, axis: int, options: dict[str, Any], like: Tensor) -> Tensor:
    """The (output, ``length``) matrix of ``F.interpolate(**options)`` along ``axis``
    (0: height, 1: width), read from resizing the basis vectors of that axis."""
    # The other axis is 2 wide and kept at 2 (torch's antialiased kernels mis-resize
    # an axis of size 1): the probe is constant along it, and stays so.
    basis = torch.eye(length, dtype=like.dtype, device=like.device)
    if axis == 0:
        probe = basis.reshape(1, length, length, 1).expand(1, length, length, 2)
    else:
        probe = basis.reshape(1, length, 1, length).expand(1, length, 2, length)
    kept = dict(options)
    size, scale = kept.pop("size", None), kept.pop("scale_factor", None)
    if size is not None:
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        kept["size"] = (sizes[0], 2) if axis == 0 else (2, sizes[1])
    else:
        scales = (scale, scale) if isinstance(scale, int | float) else tuple(scale)
        kept["scale_factor"] = (scales[0], 1.0) if axis == 0 else (1.0, scales[1])
    resized = F.interpolate(probe.contiguous(), **kept)
    line = resized[:, :, :, 0] if axis == 0 else resized[:, :, 0, :]
    return line.reshape(length, -1).transpose(0, 1)


# -- shapes and indexing -----------------------------------------------------------------


@register_kernel("flatten")
def flatten(input: Tensor, *, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``torch.flatten``."""
    return torch.flatten(input, start_dim, end_dim)


@register_kernel("unflatten")
def unflatten(input: Tensor, *, dim: int, sizes: tuple[int, ...]) -> Tensor:
    """``torch.unflatten``."""
    return torch.unflatten(input, dim, sizes)


@register_kernel("reshape")
def reshape(input: Tensor, shape_input: Any = None, *, shape: Any = None) -> Tensor:
    """``input.reshape(shape)``; the shape comes from the input when there is one."""
    return input.reshape(shape_input if shape_input is not None else shape)


@register_kernel("expand")
def expand(input: Tensor, size_input: Any = None, *, size: Any = None) -> Tensor:
    """``input.expand(size)``."""
    return input.expand(size_input if size_input is not None else size)


@register_kernel("repeat")
def repeat(input: Tensor, repeats_input: Any = None, *, repeats: Any = None) -> Tensor:
    """``input.repeat(repeats)``."""
    return input.repeat(repeats_input if repeats_input is not None else repeats)


@register_kernel("permute")
def permute(input: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """``input.permute(dims)``."""
    return input.permute(dims)


@register_kernel("transpose")
def transpose(input: Tensor, *, dim0: int, dim1: int) -> Tensor:
    """``input.transpose(dim0, dim1)``."""
    return input.transpose(dim0, dim1)


@register_kernel("contiguous")
def contiguous(input: Tensor) -> Tensor:
    """``input.contiguous()``."""
    return input.contiguous()


@register_kernel("unsqueeze")
def unsqueeze(input: Tensor, *, dim: int) -> Tensor:
    """``input.unsqueeze(dim)``."""
    return input.unsqueeze(dim)


@register_kernel("squeeze")
def squeeze(input: Tensor, *, dim: Any = None) -> Tensor:
    """``input.squeeze(dim)``."""
    return input.squeeze() if dim is None else input.squeeze(dim)


@register_kernel("flip")
def flip(input: Tensor, *, dims: tuple[int, ...]) -> Tensor:
    """``torch.flip``."""
    return torch.flip(input, dims)


@register_kernel("roll")
def roll(input: Tensor, *, shifts: tuple[int, ...], dims: tuple[int, ...] | None = None) -> Tensor:
    """``torch.roll``."""
    return torch.roll(input, shifts, () if dims is None else dims)


@register_kernel("pad")
def pad(
    input: Tensor,
    pad_input: Any = None,
    *,
    pad: tuple[int, ...] | None = None,
    mode: str = "constant",
    value: float | None = None,
) -> Tensor:
    """``F.pad``; the padding comes from the input when there is one."""
    widths = tuple(pad_input) if pad_input is not None else pad
    assert widths is not None, "pad needs a pad attribute or input"
    return F.pad(input, widths, mode, value)


@register_kernel("unfold")
def unfold(input: Tensor, *, dimension: int, size: int, step: int) -> Tensor:
    """``Tensor.unfold``, written as a gather so that ONNX export keeps the length free.

    torch's ONNX exporter lowers ``aten::unfold`` only for sizes it knows; here the
    window starts are an ``arange`` of the traced length (ONNX Range).
    """
    dimension = dimension % input.dim()
    length = input.shape[dimension]
    count = (length - size) // step + 1
    starts = torch.arange(count, device=input.device) * step
    index = (starts[:, None] + torch.arange(size, device=input.device)[None, :]).reshape(-1)
    windows = input.index_select(dimension, index).unflatten(dimension, (-1, size))
    return windows.movedim(dimension + 1, -1)


@register_kernel("arange")
def arange(like: Tensor, *inputs: Any, values: tuple[Any, ...], dtype: str | None = None) -> Tensor:
    """``torch.arange(start, end, step)`` on ``like``'s device; None bounds are inputs."""
    pending = iter(inputs)
    start, end, step = (next(pending) if v is None else v for v in values)
    kind = dtype_from_name(dtype) if dtype is not None else None
    return torch.arange(start, end, step, dtype=kind, device=like.device)


@register_kernel("chunk")
def chunk(input: Tensor, *, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.chunk``."""
    return tuple(torch.chunk(input, chunks, dim))


@register_kernel("split")
def split(input: Tensor, *, split_size: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.split``."""
    return tuple(torch.split(input, split_size, dim))


@register_kernel("unbind")
def unbind(input: Tensor, *, dim: int = 0) -> tuple[Tensor, ...]:
    """``torch.unbind``."""
    return tuple(torch.unbind(input, dim))


@register_kernel("cat")
def cat(*tensors: Tensor, dim: int = 0) -> Tensor:
    """``torch.cat``."""
    return torch.cat(tensors, dim)


@register_kernel("stack")
def stack(*tensors: Tensor, dim: int = 0) -> Tensor:
    """``torch.stack``."""
    return torch.stack(tensors, dim)


@register_kernel("select")
def select(input: Tensor, index_input: Any = None, *, dim: int, index: int | None = None) -> Tensor:
    """``input.select(dim, index)``."""
    position = index_input if index_input is not None else index
    assert position is not None, "select needs an index"
    return input.select(dim, position)


@register_kernel("slice")
def slice_(
    input: Tensor,
    start_input: Any = None,
    end_input: Any = None,
    *,
    dim: int = 0,
    start: int | None = None,
    end: int | None = None,
    step: int = 1,
) -> Tensor:
    """``input[start:end:step]`` along ``dim``."""
    first = start_input if start_input is not None else start
    last = end_input if end_input is not None else end
    axis = dim % input.dim()
    return input[(slice(None),) * axis + (slice(first, last, step),)]


@register_kernel("im2col")
def im2col(
    input: Tensor,
    *,
    kernel_size: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    stride: Sequence[int] = (1, 1),
) -> Tensor:
    """``F.unfold`` (torch's ONNX exporter lowers it to gathers)."""
    return F.unfold(input, tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride))


@register_kernel("col2im")
def col2im(
    input: Tensor,
    size_input: Sequence[int] | None = None,
    *,
    output_size: Sequence[int] | None = None,
    kernel_size: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    stride: Sequence[int] = (1, 1),
) -> Tensor:
    """``F.fold``, written as a transposed convolution with one-hot kernels.

    ONNX has ``Col2Im`` only from opset 18; a grouped ``ConvTranspose`` whose kernel
    ``t`` of each channel is 1 at block offset ``t`` adds every column entry to its pixel
    the same way (each output is a sum of inputs times 1).
    """
    size = size_input if size_input is not None else output_size
    assert size is not None, "col2im needs an output size"
    batched = input.dim() == 3
    columns = input if batched else input.unsqueeze(0)
    kh, kw = kernel_size
    # Channels and image size are plain ints even while an exporter traces sizes: the
    # convolution's kernel and output padding must be constants in ONNX.
    channels = int(columns.shape[1]) // (kh * kw)
    size = [int(n) for n in size]
    settings = list(zip(size, kernel_size, dilation, padding, stride, strict=True))
    blocks = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, d, p, s in settings]
    # The transposed convolution's natural size falls short of output_size by the rows
    # and columns no block reaches (fewer than one stride): output_padding adds them.
    extra = [
        n - ((b - 1) * s - 2 * p + d * (k - 1) + 1)
        for b, (n, k, d, p, s) in zip(blocks, settings, strict=True)
    ]
    grid = columns.unflatten(-1, (blocks[0], blocks[1]))
    eye = torch.eye(kh * kw, dtype=columns.dtype, device=columns.device)
    weight = eye.reshape(kh * kw, 1, kh, kw).repeat(channels, 1, 1, 1)
    image = F.conv_transpose2d(
        grid,
        weight,
        stride=tuple(stride),
        padding=tuple(padding),
        output_padding=tuple(extra),
        groups=channels,
        dilation=tuple(dilation),
    )
    return image if batched else image.squeeze(0)


@register_kernel("index")
def index(input: Tensor, *indices: Tensor, positions: tuple[int, ...]) -> Tensor:
    """Advanced indexing: ``indices[k]`` indexes dimension ``positions[k]``."""
    key: list[Any] = [slice(None)] * (max(positions) + 1)
    for position, tensor in zip(positions, indices, strict=True):
        key[position] = tensor
    return input[tuple(key)]


@register_kernel("index_select")
def index_select(input: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """``torch.index_select``."""
    return torch.index_select(input, dim, index)


@register_kernel("gather_elements")
def gather_elements(input: Tensor, index: Tensor, *, dim: int) -> Tensor:
    """``torch.gather``."""
    return torch.gather(input, dim, index)


@register_kernel("slice_scatter")
def slice_scatter(
    input: Tensor,
    src: Tensor,
    *,
    dim: int = 0,
    start: int | None = None,
    end: int | None = None,
    step: int = 1,
) -> Tensor:
    """``torch.slice_scatter``, written as a scatter to the slice's positions.

    ONNX exporters have no lowering for ``aten::slice_scatter``; ``scatter`` exports as
    ``ScatterElements`` (the positions are a ``Range``, so free dims stay free).
    """
    axis = dim % input.dim()
    positions = torch.arange(input.shape[axis], device=input.device)[start:end:step]
    return input.scatter(axis, _along(positions, axis, input.dim()).expand_as(src), src)


@register_kernel("select_scatter")
def select_scatter(input: Tensor, src: Tensor, *, dim: int, index: int) -> Tensor:
    """``torch.select_scatter``, as a scatter (exportable to ONNX, see slice_scatter)."""
    axis = dim % input.dim()
    position = torch.arange(input.shape[axis], device=input.device)[index : index + 1 or None]
    src = src.unsqueeze(axis)
    return input.scatter(axis, _along(position, axis, input.dim()).expand_as(src), src)


def _along(positions: Tensor, axis: int, rank: int) -> Tensor:
    """The 1-D ``positions`` as a tensor of ``rank`` dims laid along ``axis``."""
    shape = [1] * rank
    shape[axis] = -1
    return positions.view(shape)


@register_kernel("full")
def full(
    size_input: Any = None,
    like: Tensor | None = None,
    *,
    size: Any = None,
    fill_value: float,
    dtype: str | None = None,
) -> Tensor:
    """``torch.full``, on the device of ``like`` (and in its dtype when ``dtype`` is unset)."""
    shape = size_input if size_input is not None else size
    if dtype is not None:
        target = dtype_from_name(dtype)
    elif like is not None:
        target = like.dtype
    else:
        target = None
    device = like.device if like is not None else None
    return torch.full(tuple(shape), fill_value, dtype=target, device=device)


@register_kernel("full_like")
def full_like(input: Tensor, *, fill_value: float, dtype: str | None = None) -> Tensor:
    """``torch.full_like``."""
    return torch.full_like(
        input, fill_value, dtype=None if dtype is None else dtype_from_name(dtype)
    )


# -- attention ---------------------------------------------------------------------------


@register_kernel("scaled_dot_product_attention")
def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention``."""
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )


@register_kernel("multihead_attention", uses_training=True)
def multihead_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    *,
    num_heads: int,
    dropout: float = 0.0,
    batch_first: bool = False,
    need_weights: bool = True,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    training: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """nn.MultiheadAttention's forward (same embed dim for query, key and value)."""
    batched = query.dim() == 3
    if batch_first and batched:
        # Keep identities: nn.MultiheadAttention takes its self-attention path on them.
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (t.transpose(1, 0) for t in (query, key))
                value = key
        else:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
    output, weights = F.multi_head_attention_forward(
        query,
        key,
        value,
        query.shape[-1],
        num_heads,
        in_proj_weight,
        in_proj_bias,
        None,
        None,
        False,
        dropout,
        out_proj_weight,
        out_proj_bias,
        training=training,
        key_padding_mask=key_padding_mask,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average_attn_weights,
        is_causal=is_causal,
    )
    if batch_first and batched:
        output = output.transpose(1, 0)
    return output, weights
