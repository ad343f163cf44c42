"""gptq: layer outputs reconstructed better than round-to-nearest, on the grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from acekit.ir.graph import Node
from tests.algorithm_support import assert_deploys_like_simulation, compile_with, layer_inputs
from tests.quant_support import SmallCNN, trained_like

SHAPE = (8, 3, 32, 32)


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(2)]


def _ref(node: Node, index: int) -> str:
    producer = node.inputs[index].producer
    assert producer is not None
    return str(producer.attrs["ref"])


def _apply(node: Node, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if node.op == "linear":
        return F.linear(x, weight)
    attributes = {k: node.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
    return F.conv2d(x, weight, **attributes)


def test_gptq_reconstructs_layer_outputs_better_than_nearest(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    rounded = compile_with(
        model, data, "cleanup,ptq,gptq{sequential=true}", tmp_path, weights_bits=4
    )
    inputs = layer_inputs(rounded.graph, data, quantize=True)
    improved = 0
    for node in rounded.graph.nodes:
        if node.op not in ("conv2d", "linear"):
            continue
        spec = node.inputs[1].quant
        assert spec is not None and spec.scale is not None
        original = nearest.graph.tensors[_ref(node, 1)].detach()
        learned = rounded.graph.tensors[_ref(node, 1)].detach()
        scale = torch.tensor(spec.scale).reshape(-1, *([1] * (original.dim() - 1)))
        grid = learned / scale
        torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
        assert grid.round().min() >= spec.qmin and grid.round().max() <= spec.qmax
        to_nearest = torch.clamp((original / scale).round(), spec.qmin, spec.qmax) * scale
        x = inputs[node.name]
        target = _apply(node, x, original)
        error_gptq = float((_apply(node, x, learned) - target).pow(2).mean())
        error_nearest = float((_apply(node, x, to_nearest) - target).pow(2).mean())
        assert error_gptq <= error_nearest * (1 + 1e-5)
        improved += error_gptq < 0.9 * error_nearest
    assert improved >= 3
    assert_deploys_like_simulation(rounded, data[0], tmp_path)


def test_one_pass_gptq_lowers_the_model_output_error(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    rounded = compile_with(model, data, "cleanup,ptq,gptq", tmp_path, weights_bits=4)
    x = torch.cat(data)
    with torch.no_grad():
        reference = model(x)
        assert (rounded(x) - reference).norm() < (nearest(x) - reference).norm()


def test_gptq_says_how_much_data_a_hessian_needs(tmp_path: Path) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    data = [torch.randn(1, 3, 32, 32)]
    compile_with(model, data, "cleanup,ptq,gptq", tmp_path)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert "its Hessian needs at least 16 input vectors, the calibration data gave 1" in log
