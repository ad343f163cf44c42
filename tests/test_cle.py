"""cle: equalization leaves the float model's function unchanged and evens channel ranges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from acekit.ir.graph import Graph
from tests.algorithm_support import assert_deploys_like_simulation, compile_with
from tests.quant_support import TinyEncoder, trained_like

SHAPE = (4, 3, 32, 32)


class SeparableNet(nn.Module):
    """MobileNet-style: stem, depthwise 3x3, pointwise 1x1 (no padding), pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.pointwise = nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(self.depthwise(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def separable_net() -> nn.Module:
    """A SeparableNet whose depthwise channels differ in range by 100x, with high biases."""
    model = SeparableNet()
    trained_like(model, SHAPE)
    conv, norm = model.depthwise[0], model.depthwise[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
    with torch.no_grad():
        # After the statistics: folding BatchNorm must not undo the spread.
        conv.weight.mul_(torch.logspace(-1, 1, 16).reshape(16, 1, 1, 1))
        norm.bias.add_(3.0)
    return model


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(2)]


def _ranges(graph: Graph, ref: str, axis: int) -> torch.Tensor:
    weight = graph.tensors[ref].detach()
    return weight.abs().transpose(0, axis).reshape(weight.shape[axis], -1).amax(1)


def test_cle_keeps_the_float_output_and_equalizes_ranges(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = separable_net()
    plain = compile_with(model, data, "cleanup", tmp_path)
    equalized = compile_with(model, data, "cleanup,cle{absorb_high_bias=false}", tmp_path)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(equalized(x), model(x), rtol=1e-4, atol=1e-5)
    graph, before = equalized.graph, plain.graph
    pairs = [
        ("stem.0.weight", "depthwise.0.weight", 0),
        ("depthwise.0.weight", "pointwise.0.weight", 1),
    ]
    for first, second, axis in pairs:
        torch.testing.assert_close(
            _ranges(graph, first, 0), _ranges(graph, second, axis), rtol=0.02, atol=0
        )
    depthwise_spread = _ranges(before, "depthwise.0.weight", 0)
    assert depthwise_spread.max() / depthwise_spread.min() > 30
    after = _ranges(graph, "depthwise.0.weight", 0)
    assert after.max() / after.min() < depthwise_spread.max() / depthwise_spread.min() / 3


def test_high_bias_absorption_is_exact_on_the_calibration_data(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = separable_net()
    absorbed = compile_with(model, data, "cleanup,cle", tmp_path / "cle")
    log = next((tmp_path / "cle").rglob("*.log")).read_text()
    assert "high bias absorbed in 2 of 2 pairs" in log
    plain = compile_with(model, data, "cleanup", tmp_path / "plain")
    assert not torch.equal(
        absorbed.graph.tensors["depthwise.0.bias"], plain.graph.tensors["depthwise.0.bias"]
    )
    with torch.no_grad():
        for batch in data:
            torch.testing.assert_close(absorbed(batch), model(batch), rtol=1e-4, atol=1e-4)


def test_cle_then_ptq_deploys(data: list[torch.Tensor], tmp_path: Path) -> None:
    model = separable_net()
    qm = compile_with(model, data, "cleanup,cle,ptq,bias-correction", tmp_path)
    assert_deploys_like_simulation(qm, data[0], tmp_path)


def test_cle_without_relu_chains_does_nothing(tmp_path: Path) -> None:
    model = trained_like(TinyEncoder(), (2, 6, 32))
    data = [torch.randn(2, 6, 32)]
    qm = compile_with(model, data, "cleanup,cle", tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(qm(data[0]), model(data[0]), rtol=1e-5, atol=1e-5)
    assert "Cross-layer equalization: did nothing" in next(tmp_path.rglob("*.log")).read_text()
