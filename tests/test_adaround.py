"""adaround: rounding within one grid step of nearest, layer outputs reconstructed better."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from acekit.ir.graph import Node
from acekit.ir.quant import QuantSpec
from acekit.passes import Pipeline
from tests.algorithm_support import assert_deploys_like_simulation, compile_with, layer_inputs
from tests.quant_support import SmallCNN, trained_like

SHAPE = (8, 3, 32, 32)
PIPELINE = "cleanup,ptq,adaround{iterations=150}"


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(2)]


def _grid(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    scale = torch.tensor(spec.scale).reshape(-1, *([1] * (weight.dim() - 1)))
    return weight / scale


def _apply(node: Node, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if node.op == "linear":
        return F.linear(x, weight, bias)
    attributes = {k: node.attrs[k] for k in ("stride", "padding", "dilation", "groups")}
    return F.conv2d(x, weight, bias, **attributes)


def test_adaround_rounds_within_one_step_and_reconstructs_better(
    data: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    rounded = compile_with(model, data, PIPELINE, tmp_path, weights_bits=4)
    float_inputs = layer_inputs(nearest.graph, data, quantize=False)
    quant_inputs = layer_inputs(rounded.graph, data, quantize=True)
    changed = 0
    for node in rounded.graph.nodes:
        if node.op not in ("conv2d", "linear"):
            continue
        weight_value = node.inputs[1]
        spec = weight_value.quant
        assert spec is not None and spec.scale is not None
        ref = str(weight_value.producer.attrs["ref"]) if weight_value.producer else ""
        original = nearest.graph.tensors[ref].detach()
        learned = rounded.graph.tensors[ref].detach()
        grid = _grid(learned, spec)
        # On the grid, and at most one step from round-to-nearest.
        torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
        assert (grid.round() - _grid(original, spec).round()).abs().max() <= 1
        changed += int((grid.round() != _grid(original, spec).round()).sum())
        scale = torch.tensor(spec.scale).reshape(-1, *([1] * (original.dim() - 1)))
        nearest_weight = torch.clamp((original / scale).round(), spec.qmin, spec.qmax) * scale
        bias = rounded.graph.tensors[str(node.inputs[2].producer.attrs["ref"])].detach()
        target = _apply(node, float_inputs[node.name], original, bias)
        x = quant_inputs[node.name]
        error_learned = float((_apply(node, x, learned, bias) - target).pow(2).mean())
        error_nearest = float((_apply(node, x, nearest_weight, bias) - target).pow(2).mean())
        assert error_learned <= error_nearest * (1 + 1e-5)
    assert changed > 0
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert (rounded(x) - model(x)).norm() < (nearest(x) - model(x)).norm()
    assert_deploys_like_simulation(rounded, x, tmp_path)


def test_adaround_options_are_checked_when_the_pipeline_is_built() -> None:
    with pytest.raises(ValueError, match="iterations"):
        Pipeline.from_spec("adaround{iterations=0}")


def test_rounded_weights_start_quantization_aware_training(tmp_path: Path) -> None:
    from tests.quant_support import TinyEncoder

    model = trained_like(TinyEncoder(), (4, 6, 32))
    # 32 pooled vectors: as many as the head has inputs, so its rounding can be fitted.
    data = [torch.randn(16, 6, 32) for _ in range(2)]
    qm = compile_with(
        model,
        data,
        "cleanup,ptq,adaround{iterations=20},bias-correction",
        tmp_path,
        weights_bits=4,
        quantization_algorithm="qat",
    )
    head = qm.graph.node("head")
    spec = head.inputs[1].quant
    assert spec is not None and spec.scale is not None
    weight = qm.graph.tensors["head.weight"].detach()
    grid = weight / torch.tensor(spec.scale).reshape(-1, 1)
    torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
    optimizer = torch.optim.SGD(qm.parameters(), lr=1e-3)
    qm.train()
    x = torch.randn(4, 6, 32)
    with torch.no_grad():
        target = model(x)
    before = {name: p.detach().clone() for name, p in qm.named_parameters()}
    for _ in range(2):
        loss = F.mse_loss(qm(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert math.isfinite(float(loss))
    moved = [name for name, p in qm.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.endswith("head.weight") for name in moved), moved


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "size"),
    [(3, 1, 1, 1, 8), (7, 2, 3, 1, 5), (3, 2, 0, 2, 4), (1, 1, 0, 1, 16)],
)
def test_a_window_step_equals_the_same_window_of_the_full_convolution(
    kernel: int, stride: int, padding: int, dilation: int, size: int
) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from acekit_algorithms.adaround import LayerData, window_step

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 40, 36, generator=generator)
    weight = torch.randn(5, 4, kernel, kernel, generator=generator)
    bias = torch.randn(5, generator=generator)
    attributes = {"stride": [stride], "padding": [padding], "dilation": [dilation], "groups": 1}
    full = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    layer = cast(Any, SimpleNamespace(node=SimpleNamespace(op="conv2d", attrs=attributes)))
    pick = torch.tensor([4, 0, 2])
    seen = set()
    for _ in range(20):
        out, target = window_step(layer, LayerData(x, full), pick, weight, bias, size, generator)
        assert (
            out.shape == target.shape == (3, 5, min(size, full.shape[2]), min(size, full.shape[3]))
        )
        # The target is a window of the full output; the window's output must equal it.
        torch.testing.assert_close(out, target, rtol=1e-4, atol=1e-4)
        seen.add(float(target.sum()))
    assert len(seen) > 1  # windows move over the map


def test_each_layer_reads_what_a_full_run_of_the_model_rounded_before_it_gives(
    data: list[torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # AdaRound runs each model once, pausing at every layer (a frontier), instead of
    # rerunning it from the input per layer: the inputs must be what a full run of the
    # model with the layers before rounded gives, the targets the float layer's outputs.
    from acekit_algorithms import adaround

    seen: dict[str, adaround.LayerData] = {}
    gather = adaround.layer_data

    def spy(*args: Any, **kwargs: Any) -> adaround.LayerData:
        found = gather(*args, **kwargs)
        seen[args[2].node.name] = found
        return found

    monkeypatch.setattr(adaround, "layer_data", spy)
    model = trained_like(SmallCNN(), SHAPE)
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path, weights_bits=4)
    rounded = compile_with(model, data, PIPELINE, tmp_path, weights_bits=4)
    quant_inputs = layer_inputs(rounded.graph, data, quantize=True)
    nearest_inputs = layer_inputs(nearest.graph, data, quantize=True)
    float_inputs = layer_inputs(nearest.graph, data, quantize=False)
    assert set(seen) == set(quant_inputs)
    moved = 0
    for name, found in seen.items():
        torch.testing.assert_close(found.inputs, quant_inputs[name], rtol=0, atol=0)
        moved += int(not torch.equal(found.inputs, nearest_inputs[name]))
        node = nearest.graph.node(name)
        weight, bias = (nearest.graph.tensors[_ref(v)].detach() for v in node.inputs[1:3])
        target = _apply(node, float_inputs[name], weight, bias)
        torch.testing.assert_close(found.targets, target, rtol=0, atol=0)
        assert found.batches == len(data)
    assert moved > 0  # the later layers read the rounded ones' outputs


def _ref(value: Any) -> str:
    return str(value.producer.attrs["ref"])


def test_adaround_keeps_at_most_samples_calibration_samples(
    data: list[torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from acekit_algorithms import adaround

    sizes: list[tuple[int, int]] = []
    gather = adaround.layer_data

    def spy(*args: Any, **kwargs: Any) -> adaround.LayerData:
        found = gather(*args, **kwargs)
        sizes.append((found.inputs.shape[0], found.targets.shape[0]))
        return found

    monkeypatch.setattr(adaround, "layer_data", spy)
    model = trained_like(SmallCNN(), SHAPE)
    compile_with(model, data, "cleanup,ptq,adaround{iterations=5,samples=11}", tmp_path)
    # Two batches of 8: the first whole, the second cut to 3.
    assert sizes and set(sizes) == {(11, 11)}
    sizes.clear()
    compile_with(model, data, "cleanup,ptq,adaround{iterations=5,samples=100}", tmp_path)
    assert set(sizes) == {(16, 16)}


@pytest.mark.parametrize("beta", [20.0, 7.5, 2.0])
def test_the_written_out_slopes_equal_autograd(beta: float) -> None:
    from acekit_algorithms.adaround import _regularizer_slope, _soft, _soft_slope

    v = (torch.randn(4000, generator=torch.Generator().manual_seed(5)) * 4).requires_grad_(True)
    upstream = torch.randn(4000)
    h = _soft(v)
    loss = (h * upstream).sum() + 0.01 * (1 - (2 * h - 1).abs().pow(beta)).sum()
    (expected,) = torch.autograd.grad(loss, v)
    h_, slope = _soft_slope(v)
    torch.testing.assert_close(h_, h.detach())
    got = (upstream + 0.01 * _regularizer_slope(h_, beta)) * slope
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
