"""IR ops both parsers write: dropout2d, select_scatter, full (same graph, same results)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acekit.ir import Graph
from acekit.runtime import get_kernel
from acekit_cleanup import RemoveDropout
from acekit_fx import FxParser
from acekit_torchscript import parse_torchscript
from tests.fx_support import assert_matches

Parse = Callable[[nn.Module, torch.Tensor], Graph]


def fx(model: nn.Module, x: torch.Tensor) -> Graph:
    return FxParser().parse(model, (x,))


def traced(model: nn.Module, x: torch.Tensor) -> Graph:
    with torch.no_grad():
        return parse_torchscript(torch.jit.trace(model.eval(), x), (x,))


def scripted(model: nn.Module, x: torch.Tensor) -> Graph:
    return parse_torchscript(torch.jit.script(model.eval()), (x,))


PARSERS = [fx, traced, scripted]


def ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def runs_like(model: nn.Module, graph: Graph, *inputs: Any) -> None:
    module = graph.to_module()
    with torch.no_grad():
        for x in inputs:
            assert_matches(model.eval()(x), module(x))


class Dropouts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.drop = nn.Dropout2d(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(self.drop(self.conv(x)), 0.2, self.training)


@pytest.mark.parametrize("parse", PARSERS)
def test_dropout2d_is_an_op_that_remove_dropout_removes(parse: Parse) -> None:
    model = Dropouts()
    x = torch.randn(2, 3, 5, 5)
    graph = parse(model, x)
    assert ops(graph).count("dropout2d") == 2
    assert all("training" not in n.attrs for n in graph.nodes if n.op == "dropout2d")
    runs_like(model, graph, x)
    result = RemoveDropout().run(graph)
    assert result.stats["removed"] == 2
    assert "dropout2d" not in ops(graph)
    runs_like(model, graph, x)


def test_dropout2d_kernel_drops_whole_channels_in_training() -> None:
    kernel = get_kernel("dropout2d")
    x = torch.ones(8, 16, 3, 3)
    y = kernel.fn(x, p=0.5, training=True)
    per_channel = y.flatten(2)
    assert torch.all(per_channel.amax(2) == per_channel.amin(2))  # each channel all 0 or 2
    assert torch.equal(kernel.fn(x, p=0.5, training=False), x)


class WritesColumn(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y[:, 1] = x[:, 0] + 1
        return y


@pytest.mark.parametrize("parse", [traced, scripted])
def test_write_into_a_select_is_a_select_scatter(parse: Parse) -> None:
    model = WritesColumn()
    x = torch.randn(3, 4)
    graph = parse(model, x)
    scatter = next(n for n in graph.nodes if n.op == "select_scatter")
    assert scatter.attrs == {"dim": 1, "index": 1}
    runs_like(model, graph, x, torch.randn(5, 4))


class SelectScatter(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.select_scatter(x, x[:, 0].sin(), 1, 2)


@pytest.mark.parametrize("parse", PARSERS)
def test_select_scatter(parse: Parse) -> None:
    model = SelectScatter()
    x = torch.randn(3, 4)
    graph = parse(model, x)
    assert "select_scatter" in ops(graph)
    runs_like(model, graph, x, torch.randn(6, 4))


def test_select_scatter_from_torch_export() -> None:
    model = SelectScatter()
    x = torch.randn(3, 4)
    graph = FxParser().parse(torch.export.export(model, (x,)), (x,))
    assert "select_scatter" in ops(graph)
    runs_like(model, graph, x)


class NewFactories(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return x[:, :3] + x.new_zeros(n, 3) + x.new_full((n, 3), 0.5) + x.new_ones((n, 3))


class Factories(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return x[:, :3] + torch.zeros(n, 3) + torch.full((n, 3), 0.5) + torch.ones((n, 3))


# torch.fx cannot trace torch.zeros(n, 3) with a traced n: the fx parser captures such a
# model with torch.export, which fixes the sizes; x.new_zeros(n, 3) it traces.
@pytest.mark.parametrize(
    ("parse", "model"),
    [
        (fx, NewFactories()),
        (traced, NewFactories()),
        (scripted, NewFactories()),
        (traced, Factories()),
        (scripted, Factories()),
    ],
)
def test_full_of_a_computed_size_follows_the_batch(parse: Parse, model: nn.Module) -> None:
    x = torch.randn(2, 5)
    graph = parse(model, x)
    fulls = [n for n in graph.nodes if n.op == "full"]
    assert sorted(n.attrs["fill_value"] for n in fulls) == [0.0, 0.5, 1.0]
    # Every full reads the tensor whose device it takes: x, whose shape gave the size.
    assert all(len(n.inputs) == 2 and n.inputs[1] is graph.inputs[0] for n in fulls)
    runs_like(model, graph, x, torch.randn(7, 5))


def test_full_kernel_takes_the_device_and_dtype_of_like() -> None:
    kernel = get_kernel("full")
    like = torch.zeros(1, dtype=torch.float64)
    out = kernel.fn(None, like, size=(2, 3), fill_value=1.5)
    assert out.dtype == torch.float64 and out.shape == (2, 3) and float(out[0, 0]) == 1.5
    assert kernel.fn((4,), size=None, fill_value=2.0, dtype="i64").dtype == torch.int64


def test_known_sizes_stay_constants() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.zeros(3) + x.new_ones(3)

    x = torch.randn(2, 3)
    for parse in PARSERS:
        assert "full" not in ops(parse(Fixed(), x))


class HoldsTensors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.tensor([1.0, 2.0, 3.0])  # a plain attribute: not in the state dict
        self.register_buffer("shift", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@pytest.mark.parametrize("parse", PARSERS)
def test_tensors_outside_the_state_dict_are_constants(parse: Parse) -> None:
    # torch.fx registers a plain tensor attribute (and the _tensor_constant0 it makes of
    # a tensor built in forward) as a buffer of its GraphModule: still a constant here,
    # as in the TorchScript parser, so the graph's state dict is the model's.
    model = HoldsTensors()
    x = torch.randn(2, 3)
    graph = parse(model, x)
    params = [n.attrs["ref"] for n in graph.nodes if n.op == "parameter"]
    constants = [n for n in graph.nodes if n.op == "constant" and "ref" in n.attrs]
    assert params == ["shift"]
    assert len(constants) == 1
    torch.testing.assert_close(graph.tensors[constants[0].attrs["ref"]], model.scale)
    assert list(graph.to_module().state_dict()) == list(model.state_dict())
    runs_like(model, graph, x)


def test_fx_tensor_constant_made_in_forward_is_a_constant() -> None:
    class MakesTensor(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tensor([4.0, 5.0, 6.0])

    graph = fx(MakesTensor(), torch.randn(2, 3))
    assert [n.op for n in graph.nodes if n.op in ("parameter", "constant")] == ["constant"]
    assert graph.to_module().state_dict() == {}
