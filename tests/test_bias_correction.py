"""bias-correction: the quantized layers' output means match the float ones again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from acekit.ir.graph import Node
from acekit_algorithms.bias_correction import MeanInputs
from acekit_algorithms.layers import Layer
from tests.algorithm_support import (
    assert_deploys_like_simulation,
    channel_means,
    compile_with,
    layer_inputs,
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
    corrected = compile_with(
        model, data, "cleanup,ptq,bias-correction{sequential=true}", tmp_path, weights_bits=4
    )
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


def test_fast_bias_correction_zeroes_the_weight_rounding_shift(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    corrected = compile_with(model, data, "cleanup,ptq,bias-correction", tmp_path, weights_bits=4)
    inputs = layer_inputs(nearest.graph, data, quantize=False)
    before, after = [], []
    for node in corrected.graph.nodes:
        if node.op not in ("conv2d", "linear"):
            continue
        spec = node.inputs[1].quant
        assert spec is not None and spec.scale is not None
        weight = corrected.graph.tensors[_ref(node, 1)].detach()
        scale = torch.tensor(spec.scale).reshape(-1, *([1] * (weight.dim() - 1)))
        rounded = torch.clamp((weight / scale).round(), spec.qmin, spec.qmax) * scale
        x = inputs[node.name]
        old_bias = nearest.graph.tensors[_ref(node, 2)].detach()
        new_bias = corrected.graph.tensors[_ref(node, 2)].detach()
        reference = channel_means(_apply(node, x, weight, old_bias))
        before.append((channel_means(_apply(node, x, rounded, old_bias)) - reference).abs().mean())
        after.append((channel_means(_apply(node, x, rounded, new_bias)) - reference).abs().mean())
    assert float(torch.stack(after).max()) < 1e-4 < float(torch.stack(before).mean())


def _ref(node: Node, index: int) -> str:
    producer = node.inputs[index].producer
    assert producer is not None
    return str(producer.attrs["ref"])


def _apply(node: Node, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if node.op == "linear":
        return F.linear(x, weight, bias)
    attributes = {k: node.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
    return F.conv2d(x, weight, bias, **attributes)


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


def test_summed_inputs_give_the_mean_output_of_every_batch() -> None:
    # Bias correction streams the model once and keeps each layer's summed input: the
    # layers are linear, so that gives the per-channel output mean of the whole data,
    # also when batches differ in shape (free sequence lengths).
    torch.manual_seed(0)
    conv = Node("conv2d", "conv", attrs={"stride": [1, 1], "padding": [1, 1], "groups": 1})
    linear = Node("linear", "fc")
    cases = [
        (conv, torch.randn(6, 3, 3, 3), [torch.randn(4, 3, 8, 8), torch.randn(2, 3, 8, 8)]),
        (linear, torch.randn(5, 7), [torch.randn(2, 9, 7), torch.randn(3, 4, 7)]),
    ]
    for node, weight, batches in cases:
        layer = Layer(node, "weight", None)
        inputs = MeanInputs(layer)
        for x in batches:
            inputs.add(x)
        expected = torch.stack(
            [layer.channel_mean(layer.forward(x, weight)) for x in batches]
        ).mean(0)
        torch.testing.assert_close(inputs.output_mean(weight), expected, rtol=1e-5, atol=1e-6)
        bias = torch.randn(weight.shape[0])
        torch.testing.assert_close(
            inputs.output_mean(weight, bias), expected + bias, rtol=1e-5, atol=1e-6
        )
