"""The quantization math, in one place: every observer, simulation and export calls it.

* integer ranges of ``bits``-wide signed/unsigned, symmetric/affine quantization;
* ``(scale, zero_point)`` from a measured ``[min, max]``;
* quantize and dequantize, in torch and in numpy, rounding as ONNX Runtime's
  ``QuantizeLinear`` does (``round_half_even(x / scale) + zero_point``, divided rather
  than multiplied by the reciprocal: the two differ on about 4 % of exact .5 ties);
* the bias grid of a quantized layer (``s_input * s_weight``) and rounding to it;
* BatchNorm folding into the conv or linear before it.

Functions taking an ``axis`` work per channel along it (the scale has one entry per
channel) and per tensor for ``None``. With a ``block_size`` as well they work per
*block* (group-wise scales, ONNX's blocked ``DequantizeLinear``): channel ``c``'s values
(every dimension but ``axis``, flattened in order) are cut into blocks of
``block_size``, each with its own scale; the scale holds ``channels x blocks`` entries,
channel-major (see :func:`expand_blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

#: Smallest scale ever returned (a constant or all-zero tensor gets this).
SCALE_EPS = 1e-8


def check_bits(bits: int, *, maximum: int = 32) -> None:
    """Raise ``ValueError`` unless ``bits`` is an integer in ``[2, maximum]``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= maximum:
        raise ValueError(f"bits must be an integer in [2, {maximum}], got {bits!r}")


def integer_range(bits: int, *, signed: bool, symmetric: bool = False) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of ``bits``-bit quantization.

    Signed symmetric: ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (restricted, so that ``+x``
    and ``-x`` are both exact; zero point 0); signed affine: ``[-2**(b-1), 2**(b-1) -
    1]``; unsigned (affine or symmetric): ``[0, 2**b - 1]``. A storage container
    (int8, int32) has the affine range.
    """
    check_bits(bits)
    if signed:
        half = 2 ** (bits - 1)
        return (-(half - 1), half - 1) if symmetric else (-half, half - 1)
    return 0, 2**bits - 1


def symmetric_zero_point(bits: int, *, signed: bool) -> int:
    """The zero point of symmetric quantization: 0 signed, the middle ``2**(b-1)`` unsigned."""
    return 0 if signed else 2 ** (bits - 1)


def qparams_from_range(
    min_val: Tensor | float,
    max_val: Tensor | float,
    *,
    bits: int,
    signed: bool,
    symmetric: bool,
) -> tuple[Tensor, Tensor]:
    """Turn a real range into ``(scale, zero_point)`` (float32, int32).

    The range is first widened to include 0, so zero is exactly representable.
    Symmetric: ``scale = max(|min|, |max|) / (2**(b-1) - 1)`` and the zero point is
    :func:`symmetric_zero_point`; affine: ``scale = (max - min) / (qmax - qmin)`` and
    ``zero_point = qmin - round(min / scale)``. The scale is floored at
    :data:`SCALE_EPS`, so an all-zero range never gives 0 or NaN. Works element-wise, so
    per-channel ranges give per-channel parameters.
    """
    check_bits(bits, maximum=16)
    qmin, qmax = integer_range(bits, signed=signed, symmetric=symmetric)
    lo = torch.as_tensor(min_val).detach().to(torch.float32)
    hi = torch.as_tensor(max_val).detach().to(device=lo.device, dtype=torch.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"min and max shapes differ: {tuple(lo.shape)} vs {tuple(hi.shape)}")
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError("quantization range is not finite")
    if bool((lo > hi).any()):
        raise ValueError("quantization range has min > max")
    min_neg = torch.clamp(lo, max=0.0)
    max_pos = torch.clamp(hi, min=0.0)
    if symmetric:
        amax = torch.maximum(-min_neg, max_pos)
        scale = torch.clamp(amax / float(2 ** (bits - 1) - 1), min=SCALE_EPS)
        zero = symmetric_zero_point(bits, signed=signed)
        zero_point = torch.full(scale.shape, zero, dtype=torch.int32, device=scale.device)
    else:
        scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=SCALE_EPS)
        zero_point = torch.clamp(qmin - torch.round(min_neg / scale), qmin, qmax).to(torch.int32)
    return scale.to(torch.float32), zero_point


# -- torch ---------------------------------------------------------------------------------


def channel_view(tensor: Tensor, rank: int, axis: int | None) -> Tensor:
    """``tensor`` (one entry per channel, or a scalar) shaped to broadcast along ``axis``."""
    if axis is None:
        return tensor.reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return tensor.reshape(shape)


def block_count(shape: Sequence[int], axis: int, block_size: int) -> int:
    """How many blocks of ``block_size`` each channel (along ``axis``) of ``shape`` has."""
    per_channel = math.prod(shape) // max(shape[axis % len(shape)], 1)
    return -(-per_channel // block_size)


def expand_blocks(values: Tensor, shape: Sequence[int], axis: int, block_size: int) -> Tensor:
    """Per-block ``values`` (``channels x blocks``, channel-major) as one entry per element.

    Channel ``c`` is the slice ``axis = c`` of a tensor of ``shape``; its elements, in
    order with ``axis`` moved first, fall into blocks of ``block_size`` (the last one
    may be shorter).
    """
    rank = len(shape)
    moved = [shape[axis % rank], *(d for i, d in enumerate(shape) if i != axis % rank)]
    per_channel = math.prod(moved[1:])
    blocks = values.reshape(moved[0], -1)
    full = blocks.repeat_interleave(block_size, dim=1)[:, :per_channel]
    return full.reshape(moved).movedim(0, axis % rank)


def _view(values: Tensor, x: Tensor, axis: int | None, block_size: int | None) -> Tensor:
    if block_size is not None and axis is not None:
        return expand_blocks(values, x.shape, axis, block_size).to(x.dtype)
    return channel_view(values, x.dim(), axis).to(x.dtype)


def block_range(x: Tensor, axis: int, block_size: int) -> tuple[Tensor, Tensor]:
    """Each block's ``(min, max)`` of ``x`` (``channels x blocks`` entries, flattened)."""
    rows = x.detach().movedim(axis % x.dim(), 0).reshape(x.shape[axis], -1)
    blocks = -(-rows.shape[1] // block_size)
    # A short last block is padded with zeros: ranges include 0 anyway.
    padded = torch.nn.functional.pad(rows, (0, blocks * block_size - rows.shape[1]))
    grouped = padded.reshape(rows.shape[0], blocks, block_size)
    return grouped.amin(2).reshape(-1), grouped.amax(2).reshape(-1)


#: Range factors :func:`clipped_row_qparams` tries, from the full min/max range to half.
CLIP_SHRINKS = tuple(1.0 - 0.02 * i for i in range(26))


def clipped_row_qparams(
    rows: Tensor, *, bits: int, signed: bool, symmetric: bool
) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` per row of ``rows`` whose rounding error is smallest.

    Each row tries the ranges ``shrink * [min, max]`` of :data:`CLIP_SHRINKS` and keeps
    the one with the smallest ``||row - dq(q(row))||^2`` (a factor of 1 is min/max), as
    GPTQ's and AWQ's reference quantizers search their weight grids. A row is a weight's
    output channel, or one block of it for group-wise scales.
    """
    rows = rows.detach().to(torch.float32)
    qmin, qmax = integer_range(bits, signed=signed, symmetric=symmetric)
    lo, hi = rows.amin(1), rows.amax(1)
    best_error = torch.full_like(lo, float("inf"))
    best_scale = torch.ones_like(lo)
    best_zero = torch.zeros_like(lo, dtype=torch.int32)
    for shrink in CLIP_SHRINKS:
        scale, zero = qparams_from_range(
            lo * shrink, hi * shrink, bits=bits, signed=signed, symmetric=symmetric
        )
        q = torch.clamp(torch.round(rows / scale[:, None]) + zero[:, None], qmin, qmax)
        error = ((q - zero[:, None]) * scale[:, None] - rows).pow(2).sum(1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    block_size: int | None = None,
) -> Tensor:
    """The integers (as float tensor) ``clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Rounding passes gradients straight through; the clamp masks them outside the range.
    """
    step = _view(scale, x, axis, block_size)
    zp = _view(zero_point, x, axis, block_size)
    scaled = x / step
    return torch.clamp(scaled + (torch.round(scaled) - scaled).detach() + zp, qmin, qmax)


def dequantize(
    q: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    axis: int | None = None,
    block_size: int | None = None,
) -> Tensor:
    """``(q - zero_point) * scale``."""
    step = _view(scale, q, axis, block_size)
    zp = _view(zero_point, q, axis, block_size)
    return (q - zp) * step


def fake_quantize_exact(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    block_size: int | None = None,
) -> Tensor:
    """``dequantize(quantize(x))``: ``x`` on its integer grid, in float."""
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        q = quantize(x, scale, zero_point, qmin, qmax, axis, block_size)
        return dequantize(q, scale, zero_point, axis, block_size)
    # Without gradients the same arithmetic runs in place on one buffer, a third of the
    # out-of-place chain's cost on large activations. The results are identical: the
    # straight-through form adds back exactly what it takes away, and clamping
    # round(x/s) + zp to [qmin, qmax] then subtracting zp is clamping round(x/s) to
    # [qmin - zp, qmax - zp] (integers, exact in float).
    step = _view(scale, x, axis, block_size)
    out = torch.div(x, step)
    out.round_()
    if zero_point.numel() == 1:
        zp = int(zero_point.reshape(()))
        out.clamp_(qmin - zp, qmax - zp)
    else:
        zp_view = _view(zero_point, x, axis, block_size)
        out.clamp_(qmin - zp_view, qmax - zp_view)
    return out.mul_(step)


def clamp_to_range(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    block_size: int | None = None,
) -> Tensor:
    """``x`` clamped to the real interval ``[qmin, qmax]`` covers (no rounding)."""
    step = _view(scale, x, axis, block_size)
    zp = _view(zero_point, x, axis, block_size)
    return torch.minimum(torch.maximum(x, (qmin - zp) * step), (qmax - zp) * step)


def bias_step(input_scale: Tensor, weight_scale: Tensor) -> Tensor:
    """The bias grid of a quantized layer: ``s_input * s_weight`` (per output channel)."""
    return input_scale.detach().reshape(()) * weight_scale.detach().reshape(-1)


def round_bias(bias: Tensor, input_scale: Tensor, weight_scale: Tensor, bits: int = 32) -> Tensor:
    """``bias`` rounded to the ``bits``-bit grid of :func:`bias_step`, in float.

    Gradients pass straight through to the bias; the scales get none from here.
    """
    step = bias_step(input_scale, weight_scale).to(bias.dtype)
    qmin, qmax = integer_range(bits, signed=True)
    rounded = torch.round(bias / step).clamp(qmin, qmax) * step
    return bias + (rounded - bias).detach()


# -- numpy (exports) -----------------------------------------------------------------------


def _np_channel_view(array: npt.NDArray[Any], rank: int, axis: int | None) -> npt.NDArray[Any]:
    if axis is None or array.size == 1:
        return array.reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return array.reshape(shape)


def quantize_np(
    x: npt.NDArray[Any],
    scale: npt.NDArray[Any],
    zero_point: npt.NDArray[Any],
    axis: int | None = None,
    *,
    qmin: int | None = None,
    qmax: int | None = None,
) -> npt.NDArray[Any]:
    """``x`` quantized as ``QuantizeLinear`` does, in the zero point's integer dtype.

    The range defaults to the whole range of that dtype (what ``QuantizeLinear`` clamps
    to); ``qmin``/``qmax`` narrow it.
    """
    info = np.iinfo(zero_point.dtype)
    low = info.min if qmin is None else qmin
    high = info.max if qmax is None else qmax
    step = _np_channel_view(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    zp = _np_channel_view(zero_point.astype(np.int64), x.ndim, axis)
    q = np.clip(np.round(x.astype(np.float32) / step) + zp, low, high)
    return q.astype(zero_point.dtype)


def dequantize_np(
    q: npt.NDArray[Any],
    scale: npt.NDArray[Any],
    zero_point: npt.NDArray[Any],
    axis: int | None = None,
) -> npt.NDArray[np.float32]:
    """``(q - zero_point) * scale`` in float32, as ``DequantizeLinear``."""
    step = _np_channel_view(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    zp = _np_channel_view(zero_point.astype(np.int64), q.ndim, axis)
    return ((q.astype(np.int64) - zp).astype(np.float32) * step).astype(np.float32)


def quantize_bias_np(
    bias: npt.NDArray[Any], step: npt.NDArray[Any], bits: int = 32
) -> npt.NDArray[Any]:
    """``bias`` as ``bits``-bit integers on the grid ``step`` (int32 for 32 bits).

    A bias beyond the range saturates, as :func:`round_bias` does. The clip runs in
    float64: float32 cannot hold 2**31 - 1, so a float32 clip gives 2**31, which the cast
    to int32 wraps to -2**31 (a large positive bias would flip sign).
    """
    qmin, qmax = integer_range(bits, signed=True)
    dtype = np.int32 if bits > 16 else (np.int16 if bits > 8 else np.int8)
    rounded = np.round(bias / step).astype(np.float64)
    return np.clip(rounded, qmin, qmax).astype(dtype)


# -- BatchNorm folding ---------------------------------------------------------------------


def bn_scale(gamma: Tensor | None, running_var: Tensor, eps: float) -> Tensor:
    """BatchNorm's per-channel multiplier ``gamma / sqrt(var + eps)`` (``gamma`` 1 if absent)."""
    root = torch.sqrt(running_var + eps)
    return 1.0 / root if gamma is None else gamma / root


def fold_bn_weight(weight: Tensor, gamma: Tensor | None, running_var: Tensor, eps: float) -> Tensor:
    """``weight`` (output channels first) with BatchNorm's scale folded in."""
    scale = bn_scale(gamma, running_var, eps).to(weight.dtype)
    return weight * scale.reshape(-1, *[1] * (weight.dim() - 1))


def fold_bn_bias(
    bias: Tensor | None,
    gamma: Tensor | None,
    beta: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
) -> Tensor:
    """The bias of the folded layer: ``(bias - mean) * scale + beta`` (absent terms 0)."""
    scale = bn_scale(gamma, running_var, eps)
    base = torch.zeros_like(running_mean) if bias is None else bias
    folded = (base - running_mean) * scale
    return folded if beta is None else folded + beta
