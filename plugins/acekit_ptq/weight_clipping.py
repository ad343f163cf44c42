"""Per-channel weight ranges chosen by quantization error (clipping), not min/max.

At 4 bits a min/max range spends most of the 16 levels on a channel's one or two
largest weights; shrinking the range clips them a little and rounds all the others
finer. For each output channel this tries ranges ``shrink * [min, max]`` for
``shrink`` from 1 down to 0.5 and keeps the one with the smallest squared error of the
rounded channel, as GPTQ's and AWQ's reference quantizers search their weight grids.
"""

from __future__ import annotations

import torch
from torch import Tensor

from acekit.ir.quant import QuantSpec
from acekit.quant.qmath import qparams_from_range

#: Range factors tried, from the full min/max range down to half of it.
SHRINKS = tuple(1.0 - 0.02 * i for i in range(26))


def clipped_qparams(weight: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` per channel of ``spec.axis`` (one pair when per tensor).

    Each channel gets the range factor of :data:`SHRINKS` whose rounding error
    ``||w - dq(q(w))||^2`` is smallest; a factor of 1 is the min/max range.
    """
    w = weight.detach().to(torch.float32)
    rows = (
        w.reshape(1, -1)
        if spec.axis is None
        else w.movedim(spec.axis, 0).reshape(w.shape[spec.axis], -1)
    )
    lo, hi = rows.amin(1), rows.amax(1)
    best_error = torch.full_like(lo, float("inf"))
    best_scale = torch.ones_like(lo)
    best_zero = torch.zeros_like(lo, dtype=torch.int32)
    for shrink in SHRINKS:
        scale, zero = qparams_from_range(
            lo * shrink, hi * shrink, bits=spec.bits, signed=spec.signed, symmetric=spec.symmetric
        )
        q = torch.clamp(torch.round(rows / scale[:, None]) + zero[:, None], spec.qmin, spec.qmax)
        error = ((q - zero[:, None]) * scale[:, None] - rows).pow(2).sum(1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero
