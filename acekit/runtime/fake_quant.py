"""Fake quantization: round a float tensor to its integer grid and back, in float.

This is how a quantized graph runs in torch. The same call serves three uses:

* post-training inference (fixed scales): torch's fused ``fake_quantize_*`` kernels,
  whose backward is the straight-through estimator, so weights still train;
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
    elif axis is None:
        out = torch.fake_quantize_per_tensor_affine(
            x, scale.reshape(()), zp.reshape(()), qmin, qmax
        )
    else:
        out = torch.fake_quantize_per_channel_affine(x, scale, zp, axis % x.dim(), qmin, qmax)
    return out if dtype == torch.float32 else out.to(dtype)


def _for_export(
    input: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    # The exporter knows the full 8-bit ranges only. Widening [-127, 127] (symmetric) or a
    # 4-bit range to the container's range changes nothing: scales were computed for the
    # narrow range, so no value rounds outside it.
    low, high = (0, 255) if qmin >= 0 else (-128, 127)
    if qmax > high or qmin < low:
        raise ValueError(f"cannot export a [{qmin}, {qmax}] quantizer as 8-bit QDQ")
    scale = scale.detach().float()
    zp = zero_point.detach().to(torch.int32)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(
            input, scale.reshape(()), zp.reshape(()), low, high
        )
    return torch.fake_quantize_per_channel_affine(input, scale, zp, axis % input.dim(), low, high)
