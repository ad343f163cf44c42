"""Small models and measurements shared by the quantization tests."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stem, max pool, a residual block, global pool and a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        y = self.conv2(torch.relu(self.conv1(x)))
        x = torch.relu(x + y)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


class TinyEncoder(nn.Module):
    """One pre-norm transformer block (nn.MultiheadAttention + MLP) and a linear head."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return self.head(x[:, 0])


def trained_like(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics estimated on seeded random inputs."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(*shape))
    return model.eval()


def sqnr(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    noise = float((reference - actual).norm())
    return float("inf") if noise == 0 else 20 * float(np.log10(float(reference.norm()) / noise))


def ort_session(path: str | Path, optimized: Path | None = None) -> ort.InferenceSession:
    """An ORT CPU session (2 threads), optionally writing the optimised model."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_counts(path: str | Path) -> collections.Counter[str]:
    """How many nodes of each op type the ONNX model at ``path`` has."""
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "FusedGemm")


def run_ort(session: ort.InferenceSession, *inputs: torch.Tensor) -> Any:
    """Run ``session`` on torch tensors; the first output as a tensor."""
    names = [i.name for i in session.get_inputs()]
    feed = {name: t.detach().numpy() for name, t in zip(names, inputs, strict=True)}
    return torch.from_numpy(session.run(None, feed)[0])
