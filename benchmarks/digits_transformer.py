"""A small vision transformer for the 8x8 digits of ``examples/digits_qat.py``.

Each image is cut into 16 patches of 2x2 pixels (a stride-2 convolution embeds them in
32 channels), a learned position embedding is added, and two pre-norm encoder blocks
(LayerNorm -> 2-head self-attention -> residual; LayerNorm -> GELU MLP -> residual) feed
a final LayerNorm, a mean over the patches and a linear classifier. Pre-norm blocks are
where SmoothQuant applies (each LayerNorm feeds only linear layers), so the algorithm
benchmark covers the transformer passes on real data as well as the CNN.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

DIM = 32
HEADS = 2
TOKENS = 16


class Block(nn.Module):
    """Pre-norm transformer encoder block with explicit q/k/v projections."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.q = nn.Linear(DIM, DIM)
        self.k = nn.Linear(DIM, DIM)
        self.v = nn.Linear(DIM, DIM)
        self.out = nn.Linear(DIM, DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.fc1 = nn.Linear(DIM, 2 * DIM)
        self.fc2 = nn.Linear(2 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, tokens, DIM]`` -> same shape."""
        h = self.norm1(x)
        q, k, v = (self._heads(proj(h)) for proj in (self.q, self.k, self.v))
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(DIM // HEADS), dim=-1)
        merged = (attention @ v).transpose(1, 2).reshape(x.shape)
        x = x + self.out(merged)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    @staticmethod
    def _heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], TOKENS, HEADS, DIM // HEADS).transpose(1, 2)


class DigitsTransformer(nn.Module):
    """2x2 patches -> two pre-norm encoder blocks -> mean over patches -> 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, DIM, kernel_size=2, stride=2)
        self.position = nn.Parameter(torch.randn(1, TOKENS, DIM) * 0.02)
        self.blocks = nn.Sequential(Block(), Block())
        self.norm = nn.LayerNorm(DIM)
        self.classifier = nn.Linear(DIM, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, 1, 8, 8]`` images in [0, 1] -> ``[batch, 10]`` logits."""
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.classifier(self.norm(self.blocks(tokens)).mean(dim=1))
