"""Making random-weight models and inputs realistic enough to measure quantization on.

With untrained BatchNorm the activations of a random-weight network vanish or explode
with depth, and every quantizer's error becomes meaningless; re-estimating the BatchNorm
statistics on a few seeded inputs (weights stay random) gives activations of a trained
network's scale.
"""

from __future__ import annotations

import torch
from torch import nn


def seeded_images(count: int, shape: tuple[int, ...], *, seed: int) -> list[torch.Tensor]:
    """``count`` batches of one standard-normal image of ``shape``, reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, *shape, generator=generator) for _ in range(count)]


def calibrate_batchnorm(
    model: nn.Module, shape: tuple[int, ...], *, batches: int = 8, batch_size: int = 4
) -> nn.Module:
    """Re-estimate ``model``'s BatchNorm statistics on seeded inputs; return it in eval mode."""
    generator = torch.Generator().manual_seed(1234)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, *shape, generator=generator))
    return model.eval()
