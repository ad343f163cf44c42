"""Pooling and resampling."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    ANY,
    BOOL,
    INT,
    INTS,
    STR,
    AttrSpec,
    OpSchema,
    unary,
)

_POOL = {"kernel_size": INTS, "stride": INTS, "padding": INTS, "ceil_mode": BOOL}


def _pool(name: str, extra: dict[str, AttrSpec]) -> OpSchema:
    return OpSchema(name, ("input",), {**_POOL, **extra})


def max_pool1d(input: Tensor, **pool: Any) -> Tensor:
    """``F.max_pool1d``."""
    return F.max_pool1d(input, **pool)


def max_pool2d(input: Tensor, **pool: Any) -> Tensor:
    """``F.max_pool2d``."""
    return F.max_pool2d(input, **pool)


def avg_pool1d(input: Tensor, **pool: Any) -> Tensor:
    """``F.avg_pool1d``."""
    return F.avg_pool1d(input, **pool)


def avg_pool2d(input: Tensor, **pool: Any) -> Tensor:
    """``F.avg_pool2d``."""
    return F.avg_pool2d(input, **pool)


def adaptive_avg_pool1d(input: Tensor, *, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool1d``."""
    return F.adaptive_avg_pool1d(input, output_size)


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


def adaptive_max_pool2d(input: Tensor, *, output_size: Any) -> Tensor:
    """``F.adaptive_max_pool2d`` (values only)."""
    return F.adaptive_max_pool2d(input, output_size)


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


DEFINITIONS = [
    OpDef(
        _pool("max_pool1d", {"dilation": INTS}),
        kernel=max_pool1d,
        functions=(
            F.max_pool1d,
            torch.max_pool1d,
        ),
        aten=("max_pool1d",),
        onnx_types=("MaxPool",),
    ),
    OpDef(
        _pool("max_pool2d", {"dilation": INTS}),
        kernel=max_pool2d,
        functions=(
            F.max_pool2d,
            torch.max_pool2d,
        ),
        aten=("max_pool2d",),
        onnx_types=("MaxPool",),
    ),
    OpDef(
        _pool("avg_pool1d", {"count_include_pad": BOOL}),
        kernel=avg_pool1d,
        functions=(F.avg_pool1d,),
        aten=("avg_pool1d",),
    ),
    OpDef(
        _pool("avg_pool2d", {"count_include_pad": BOOL, "divisor_override": INT}),
        kernel=avg_pool2d,
        functions=(F.avg_pool2d,),
        aten=("avg_pool2d",),
    ),
    OpDef(
        unary("adaptive_avg_pool1d", output_size=INTS),
        kernel=adaptive_avg_pool1d,
        functions=(F.adaptive_avg_pool1d,),
        aten=("adaptive_avg_pool1d",),
    ),
    OpDef(
        unary("adaptive_avg_pool2d", output_size=ANY),
        kernel=adaptive_avg_pool2d,
        functions=(F.adaptive_avg_pool2d,),
        aten=(
            "adaptive_avg_pool2d",
            "_adaptive_avg_pool2d",
        ),
    ),
    OpDef(
        unary("adaptive_max_pool2d", output_size=ANY),
        kernel=adaptive_max_pool2d,
        functions=(F.adaptive_max_pool2d,),
    ),
    OpDef(
        OpSchema(
            "interpolate",
            ("input", "size"),
            {
                "size": INTS,
                "scale_factor": ANY,
                "mode": STR,
                "align_corners": BOOL,
                "recompute_scale_factor": BOOL,
                "antialias": BOOL,
            },
            optional_inputs=1,
            doc="F.interpolate; size is an attribute, or a pack input when the graph computes it.",
        ),
        kernel=interpolate,
        functions=(
            F.interpolate,
            F.upsample,
        ),
    ),
]
