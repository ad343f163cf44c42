"""bias-correction: the quantized layers' output means match the float ones again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.algorithm_support import (
    assert_deploys_like_simulation,
    channel_means,
    compile_with,
    layer_outputs,
)
from tests.quant_support import SmallCNN, trained_like

SHAPE = (8, 3, 32, 32)


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(3)]


def _mean_shift(reference: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> float:
    shifts = [
        (channel_means(actual[name]) - channel_means(ref)).abs().mean()
        for name, ref in reference.items()
    ]
    return float(torch.stack(shifts).mean())


def test_bias_correction_zeroes_the_mean_output_shift(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    corrected = compile_with(model, data, "cleanup,ptq,bias-correction", tmp_path, weights_bits=4)
    reference = layer_outputs(nearest.graph, data, quantize=False)
    before = _mean_shift(reference, layer_outputs(nearest.graph, data, quantize=True))
    after = _mean_shift(reference, layer_outputs(corrected.graph, data, quantize=True))
    assert before > 1e-3
    assert after < 0.05 * before
    # Weights are untouched: only biases move.
    for ref, tensor in nearest.graph.tensors.items():
        if ref.endswith("weight"):
            assert torch.equal(tensor, corrected.graph.tensors[ref])
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        error_before = (nearest(x) - model(x)).norm()
        error_after = (corrected(x) - model(x)).norm()
    assert error_after < error_before
    assert_deploys_like_simulation(corrected, x, tmp_path)


def test_bias_correction_without_quantized_layers_does_nothing(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    qm = compile_with(model, data, "cleanup,bias-correction", tmp_path)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(qm(x), model(x), rtol=1e-5, atol=1e-5)
    log = next((tmp_path).rglob("*.log")).read_text()
    assert "Bias correction: did nothing" in log
