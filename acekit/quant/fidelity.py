"""How far a quantized model's outputs are from the float model's.

Sensitivity measurement (``auto-skip``) and the mixed-precision search rank layers by
the same number, so both read it from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def flat_output(output: object) -> torch.Tensor:
    """Every tensor in a model's output (tensor, list, tuple or dict), as one float vector."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().reshape(-1)
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        parts = [flat_output(item) for item in output if item is not None]
        return torch.cat(parts) if parts else torch.zeros(0)
    return torch.zeros(0)


def relative_error(reference: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float:
    """``||ref - actual|| / ||ref||`` over all batches (0 for an all-zero reference)."""
    num = sum(float((r - a).norm() ** 2) for r, a in zip(reference, actual, strict=True))
    den = sum(float(r.norm() ** 2) for r in reference)
    return math.sqrt(num / den) if den > 0 else 0.0
