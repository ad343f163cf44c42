"""The post-training algorithms under QAT initialisation, conv + BatchNorm pairs included.

Under QAT a conv followed by BatchNorm computes with the folded weight
``fold_bn_weight(W, gamma, var)`` and BatchNorm keeps training (``qat-bn``). The
algorithms must treat such a pair as one layer with the deployed weight and bias.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import acekit
from acekit.runtime.codegen import to_module
from acekit_algorithms.layers import Layer, layers
from tests.algorithm_support import Keep, assert_deploys_like_simulation, compile_with
from tests.quant_support import trained_like

SHAPE = (4, 3, 32, 32)


class ConvBnNet(nn.Module):
    """conv-BN-ReLU (no conv bias), 1x1 conv(bias)-BN-ReLU (unpadded), pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.b = nn.Sequential(nn.Conv2d(8, 12, 1), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _model() -> nn.Module:
    model = trained_like(ConvBnNet(), SHAPE)
    with torch.no_grad():  # uneven channels and a high bias: work for cle to do
        model.a[0].weight.mul_(torch.logspace(-1, 1, 8).reshape(8, 1, 1, 1))
        model.a[1].bias.add_(2.0)
    return model


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(2)]


def _qat(
    model: nn.Module, data: list[torch.Tensor], pipeline: str, logs: Path
) -> acekit.QuantizedModule:
    return compile_with(
        model, data, f"qat-bn,{pipeline}", logs, weights_bits=4, quantization_algorithm="qat"
    )


def _log(folder: Path) -> str:
    return "\n".join(path.read_text() for path in folder.rglob("*.log"))


def _folded(qm: acekit.QuantizedModule) -> list[Layer]:
    found = [layer for layer in layers(qm.graph) if layer.bn is not None]
    assert len(found) == 2  # both conv + BatchNorm pairs are layers
    return found


def _on_grid(qm: acekit.QuantizedModule, layer: Layer) -> torch.Tensor:
    spec = layer.spec
    assert spec is not None and spec.scale is not None
    weight = layer.weight(qm.graph).detach()
    grid = weight / torch.tensor(spec.scale).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
    assert grid.round().min() >= spec.qmin and grid.round().max() <= spec.qmax
    return grid.round()


def test_cle_equalizes_conv_bn_pairs_under_qat_and_keeps_the_float_function(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = _model()
    qm = _qat(model, data, "cleanup,cle,ptq", tmp_path)
    first = _folded(qm)[0]
    assert first.bn is not None
    gamma = qm.graph.tensors[first.bn.gamma_ref].detach()
    assert not torch.allclose(gamma, model.a[1].weight.detach())  # the pair was scaled
    log = _log(tmp_path)
    assert re.search(r"Cross-layer equalization: [1-9]\d* layer pairs", log), log[-2000:]
    assert re.search(r"high bias absorbed in [1-9]\d* of", log)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(to_module(qm.graph)(x), model(x), rtol=1e-4, atol=1e-4)


def test_adaround_and_bias_correction_handle_conv_bn_pairs_under_qat(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = _model()
    nearest = _qat(model, data, "cleanup,ptq", tmp_path / "n")
    tuned = _qat(model, data, "cleanup,ptq,adaround{iterations=30},bias-correction", tmp_path / "t")
    log = _log(tmp_path / "t")
    # Both conv + BatchNorm pairs; the head has 8 pooled input vectors for 12 inputs.
    assert "AdaRound: 2 layers" in log and "nearest rounding for 'fc'" in log
    assert "Bias correction: 3 layers" in log
    for before, after in zip(_folded(nearest), _folded(tuned), strict=True):
        spec = before.spec
        assert spec is not None and spec.scale is not None
        learned = _on_grid(tuned, after)
        float_grid = before.weight(nearest.graph).detach() / torch.tensor(spec.scale).reshape(
            -1, 1, 1, 1
        )
        assert float((learned - float_grid).abs().max()) <= 1 + 1e-3  # within one step
    # Bias correction moved BatchNorm's beta: the pairs' output means match float again.
    taps = {layer.output_value.name: Keep() for layer in _folded(tuned)}
    reference = {name: Keep() for name in taps}
    float_module = to_module(nearest.graph, taps=reference)
    module = to_module(tuned.graph, quantize=True, taps=taps)
    with torch.no_grad():
        for batch in data:
            float_module(batch)
            module(batch)
    for name in taps:
        expected = torch.cat(reference[name].seen).mean((0, 2, 3))
        actual = torch.cat(taps[name].seen).mean((0, 2, 3))
        assert float((actual - expected).abs().max()) < 0.05 * float(expected.abs().max())
    x = torch.randn(*SHAPE)
    assert_deploys_like_simulation(tuned, x, tmp_path)


def test_gptq_rounds_conv_bn_pairs_under_qat(data: list[torch.Tensor], tmp_path: Path) -> None:
    qm = _qat(_model(), data, "cleanup,ptq,gptq", tmp_path)
    log = _log(tmp_path)
    # Both conv + BatchNorm pairs; the linear head has too few input vectors (8 < 12).
    assert "GPTQ: 2 layers" in log and "nearest rounding for 'fc'" in log
    for layer in _folded(qm):
        _on_grid(qm, layer)
    # The module still trains: BatchNorm's statistics and the raw weights get gradients.
    qm.train()
    loss = qm(torch.randn(*SHAPE)).square().mean()
    loss.backward()
    grads = {name: p.grad for name, p in qm.named_parameters() if p.requires_grad}
    first = _folded(qm)[0]
    assert first.bn is not None
    for ref in (first.weight_ref, first.bn.gamma_ref):
        (grad,) = [g for name, g in grads.items() if name.replace("/", ".").endswith(ref)]
        assert grad is not None and bool(grad.abs().sum() > 0), ref
