"""Fake quantization: round a float tensor to its integer grid and back, in float.

This is how a quantized graph runs in torch. The same call serves three uses:

* inference and fixed-scale training: rounding as ONNX's QuantizeLinear does it
  (:mod:`acekit.quant.qmath`), with a straight-through estimator so weights still train;
* quantization-aware training with learnable scales: torch's LSQ kernels
  (``_fake_quantize_learnable_*``, Esser et al. 2020), whose scale gradient is
  normalised by ``1 / sqrt(numel * qmax)`` as the paper recommends;
* ONNX export: torch's exporter writes ``fake_quantize_*`` as a
  ``QuantizeLinear`` / ``DequantizeLinear`` pair.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from acekit.quant import qmath


def fake_quantize(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    *,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    storage: tuple[int, int] | None = None,
    block_size: int | None = None,
) -> Tensor:
    """``input`` quantized to ``[qmin, qmax]`` with ``scale``/``zero_point`` and dequantized.

    ``axis`` selects per-channel quantization (``scale`` has one entry per channel);
    ``block_size`` group-wise scales within each channel (:mod:`acekit.quant.qmath`).
    When ``scale`` requires grad (QAT), the LSQ kernels also train the scale (group-wise
    scales train through the straight-through estimator of :func:`qmath.quantize`).
    ``storage`` is the integer range of the container the export writes (the target's
    ``storage_bits``; by default the 8-bit one of the same signedness).
    """
    if torch.onnx.is_in_onnx_export():
        if block_size is not None and axis is not None:
            return _blocks_for_export(input, scale, zero_point, qmin, qmax, axis, block_size)
        return _for_export(input, scale, zero_point, qmin, qmax, axis, storage)
    dtype = input.dtype
    x = input if dtype == torch.float32 else input.float()
    zp = zero_point.to(torch.int32)
    if block_size is not None:
        out = qmath.fake_quantize_exact(x, scale, zp, qmin, qmax, axis, block_size)
    elif scale.requires_grad and torch.is_grad_enabled():
        factor = 1.0 / math.sqrt(max(x.numel() // max(scale.numel(), 1), 1) * max(qmax, 1))
        zp_float = zero_point.to(torch.float32)
        if axis is None:
            out = torch._fake_quantize_learnable_per_tensor_affine(
                x, scale.reshape(1), zp_float.reshape(1), qmin, qmax, factor
            )
        else:
            out = torch._fake_quantize_learnable_per_channel_affine(
                x, scale, zp_float, axis % x.dim(), qmin, qmax, factor
            )
    else:
        # Division by the scale, as QuantizeLinear rounds (see acekit.quant.qmath).
        out = qmath.fake_quantize_exact(x, scale, zp, qmin, qmax, axis)
    return out if dtype == torch.float32 else out.to(dtype)


def quantize_bias(
    bias: Tensor | None, input_scale: Tensor, weight_scale: Tensor, *, bits: int = 32
) -> Tensor | None:
    """``bias`` rounded to the ``bits``-bit grid of ``input_scale * weight_scale``.

    Gradients pass straight through; the scales get none from here. In ONNX export the
    float bias is left as it is: the export quantizes it itself (the target's rules).
    """
    if bias is None or torch.onnx.is_in_onnx_export():
        return bias
    return qmath.round_bias(bias, input_scale, weight_scale, bits)


#: Integer ranges torch's ONNX exporter writes ``fake_quantize_*`` as QDQ for.
_EXPORTABLE = ((0, 255), (-128, 127))


def _for_export(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None,
    storage: tuple[int, int] | None,
) -> Tensor:
    # A range narrower than the container ([-127, 127] of symmetric weights, 4-bit
    # weights in an int8 container) is kept by clamping to it first: scales learned in
    # QAT can put values beyond it. Exports clamp weights (parameters) in their copy of
    # the graph beforehand, so the integer initializer holds the clamped values.
    low, high = storage if storage is not None else qmath.integer_range(8, signed=qmin < 0)
    if (low, high) not in _EXPORTABLE:
        raise ValueError(
            f"torch's ONNX exporter writes 8-bit QDQ only; a [{low}, {high}] container "
            "needs an export of the target's own"
        )
    if qmax > high or qmin < low:
        raise ValueError(f"cannot store a [{qmin}, {qmax}] quantizer in a [{low}, {high}] QDQ")
    step = scale.detach().float()
    zp = zero_point.detach().to(torch.int32)
    if (qmin, qmax) != (low, high) and not isinstance(input, torch.nn.Parameter):
        input = qmath.clamp_to_range(input, step, zp.float(), qmin, qmax, axis)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(
            input, step.reshape(()), zp.reshape(()), low, high
        )
    return torch.fake_quantize_per_channel_affine(input, step, zp, axis % input.dim(), low, high)


def _blocks_for_export(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int,
    block_size: int,
) -> Tensor:
    """Group-wise quantization as torch's exporter can write it: per channel of blocks.

    The weight (channels along ``axis``, a whole number of blocks per channel) is
    reshaped to one row per block, quantized per row (``QuantizeLinear`` axis 0) and
    reshaped back: ``Reshape -> Q -> DQ -> Reshape``. Targets that run blocked
    ``DequantizeLinear`` rewrite it into that form (opset 21).
    """
    moved = input.movedim(axis, 0)
    rows = moved.reshape(-1, block_size)
    step = scale.detach().float().reshape(-1)
    if rows.shape[0] != step.numel():
        raise ValueError(
            f"a group-wise quantizer with {step.numel()} blocks of {block_size} cannot hold "
            f"a tensor of shape {tuple(input.shape)}"
        )
    zp = zero_point.detach().to(torch.int32).reshape(-1)
    low, high = qmath.integer_range(8, signed=qmin < 0)
    if qmax > high or qmin < low:
        raise ValueError(f"cannot store a [{qmin}, {qmax}] quantizer in a [{low}, {high}] QDQ")
    out = torch.fake_quantize_per_channel_affine(rows, step, zp, 0, low, high)
    return out.reshape(moved.shape).movedim(0, axis)
