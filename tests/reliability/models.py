"""Models shared by the reliability tests."""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    """conv -> relu -> global pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
