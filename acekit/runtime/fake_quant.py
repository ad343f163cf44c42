"""Fake quantization: round a float tensor to its integer grid and back, in float.

This is how a quantized graph runs in torch. The same call serves three uses:

* inference and fixed-scale training: rounding as ONNX Runtime's QuantizeLinear does
  it (division by the scale), with a straight-through estimator so weights still train;
* quantization-aware training with learnable scales: torch's LSQ kernels
  (``_fake_quantize_learnable_*``, Esser et al. 2020), whose scale gradient is
  normalised by ``1 / sqrt(numel * qmax)`` as the paper recommends;
* ONNX export: torch's exporter writes ``fake_quantize_*`` as a
  ``QuantizeLinear`` / ``DequantizeLinear`` pair.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def fake_quantize(
    input: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    *,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> Tensor:
    """``input`` quantized to ``[qmin, qmax]`` with ``scale``/``zero_point`` and dequantized.

    ``axis`` selects per-channel quantization (``scale`` has one entry per channel).
    When ``scale`` requires grad (QAT), the LSQ kernels also train the scale.
    """
    if torch.onnx.is_in_onnx_export():
        return _for_export(input, scale, zero_point, qmin, qmax, axis)
    dtype = input.dtype
    x = input if dtype == torch.float32 else input.float()
    zp = zero_point.to(torch.int32)
    if scale.requires_grad and torch.is_grad_enabled():
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
        out = _fake_quantize_exact(x, scale, zp, qmin, qmax, axis)
    return out if dtype == torch.float32 else out.to(dtype)


def _fake_quantize_exact(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    # ONNX Runtime's QuantizeLinear divides by the scale; torch's fused kernels multiply
    # by its reciprocal, which rounds differently on about 4 % of exact .5 ties. Dividing
    # here keeps qm(x) equal to the deployed model. Rounding passes gradients straight
    # through; the clamp masks them outside the range, as the fused kernels do.
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis % x.dim()] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    zp = zero_point.to(x.dtype)
    scaled = x / scale
    q = torch.clamp(scaled + (torch.round(scaled) - scaled).detach() + zp, qmin, qmax)
    return (q - zp) * scale


def quantize_bias(bias: Tensor | None, input_scale: Tensor, weight_scale: Tensor) -> Tensor | None:
    """``bias`` rounded to the int32 grid of ``input_scale * weight_scale`` (per channel).

    Gradients pass straight through; the scales get none from here. In ONNX export the
    float bias is left as it is: the exporter quantizes it to int32 itself.
    """
    if bias is None or torch.onnx.is_in_onnx_export():
        return bias
    step = (input_scale.detach().reshape(()) * weight_scale.detach().reshape(-1)).to(bias.dtype)
    rounded = torch.round(bias / step).clamp(-(2**31), 2**31 - 1) * step
    return bias + (rounded - bias).detach()


def clamp_weights(tensors: dict[str, Tensor], specs: dict[str, Any]) -> None:
    """Clamp each weight in ``tensors`` to its spec's integer range (``ref -> spec``).

    Replaces the dict entries with clamped copies; the tensors themselves are untouched.
    """
    for ref, spec in specs.items():
        weight = tensors[ref]
        scale = torch.tensor(spec.scale, dtype=weight.dtype)
        zero = torch.tensor(spec.zero_point, dtype=weight.dtype)
        if spec.axis is not None:
            shape = [1] * weight.dim()
            shape[spec.axis % weight.dim()] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        low, high = (spec.qmin - zero) * scale, (spec.qmax - zero) * scale
        tensors[ref] = torch.minimum(torch.maximum(weight, low), high)


def _for_export(
    input: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    # The exporter knows the full 8-bit ranges only. A narrower range ([-127, 127] of
    # symmetric weights, 4-bit weights in an int8 container) is kept by clamping to it
    # first: scales learned in QAT can put values beyond it. Exporters clamp weights
    # (parameters) in their copy of the graph beforehand (clamp_weights), so the
    # integer initializer holds the clamped values; full-range activations need none.
    low, high = (0, 255) if qmin >= 0 else (-128, 127)
    if qmax > high or qmin < low:
        raise ValueError(f"cannot export a [{qmin}, {qmax}] quantizer as 8-bit QDQ")
    scale = scale.detach().float()
    zp = zero_point.detach().to(torch.int32)
    if axis is not None:
        shape = [1] * input.dim()
        shape[axis % input.dim()] = -1
        step, offset = scale.reshape(shape), zp.reshape(shape).float()
    else:
        step, offset = scale.reshape(()), zp.reshape(()).float()
    if (qmin, qmax) != (low, high) and not isinstance(input, torch.nn.Parameter):
        input = torch.minimum(torch.maximum(input, (qmin - offset) * step), (qmax - offset) * step)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(
            input, scale.reshape(()), zp.reshape(()), low, high
        )
    return torch.fake_quantize_per_channel_affine(input, scale, zp, axis % input.dim(), low, high)
