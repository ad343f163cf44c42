"""Per-channel weight ranges chosen by quantization error (clipping), not min/max.

At 4 bits a min/max range spends most of the 16 levels on a channel's one or two
largest weights; shrinking the range clips them a little and rounds all the others
finer. For each output channel (or each block of one, with group-wise scales) this
tries ranges ``shrink * [min, max]`` for ``shrink`` from 1 down to 0.5 and keeps the
one with the smallest squared error of the rounded values, as GPTQ's and AWQ's
reference quantizers search their weight grids
(:func:`acekit.quant.qmath.clipped_row_qparams`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from acekit.ir.quant import QuantSpec
from acekit.quant.qmath import clipped_row_qparams


def clipped_qparams(weight: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """``(scale, zero_point)`` per channel of ``spec.axis`` (one pair when per tensor).

    Each channel gets the range factor of :data:`acekit.quant.qmath.CLIP_SHRINKS` whose
    rounding error ``||w - dq(q(w))||^2`` is smallest; a factor of 1 is the min/max range. With
    ``spec.block_size``, each block of each channel gets its own (``channels x blocks``
    entries, channel-major; the channel's values must be a multiple of the block).
    """
    w = weight.detach().to(torch.float32)
    rows = (
        w.reshape(1, -1)
        if spec.axis is None
        else w.movedim(spec.axis, 0).reshape(w.shape[spec.axis], -1)
    )
    if spec.block_size is not None and spec.axis is not None:
        if rows.shape[1] % spec.block_size:
            raise ValueError(
                f"{rows.shape[1]} values per channel are not a multiple of the block "
                f"size {spec.block_size}"
            )
        rows = rows.reshape(-1, spec.block_size)
    return clipped_row_qparams(rows, bits=spec.bits, signed=spec.signed, symmetric=spec.symmetric)
