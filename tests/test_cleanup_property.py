"""Property: every cleanup pass keeps the outputs of random small models (hypothesis)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import acekit
from acekit.api import ParseError
from acekit.ir import Graph
from acekit.passes import Pipeline

CHANNELS = 4
SIZE = 5
PASSES = ("fold-constants", "remove-useless", "remove-unused", "remove-dropout", "cse", "fold-bn")


class Lambda(nn.Module):
    """A block whose forward is a small function of its input."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fn(x)``."""
        return self.fn(x)


def _add_zero(x: torch.Tensor) -> torch.Tensor:
    return x + 0


def _mul_one(x: torch.Tensor) -> torch.Tensor:
    return 1 * x


def _reshape_noop(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape)


def _view_roundtrip(x: torch.Tensor) -> torch.Tensor:
    return x.view(x.size(0), -1).view(x.shape[0], CHANNELS, x.shape[2], x.shape[3])


def _permute_noop(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 1, 2, 3).contiguous()


def _checked(x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    torch._assert(c == CHANNELS, "wrong channel count")
    return x * (h // w)


def _permute_roundtrip(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).transpose(1, 3).transpose(2, 3)


def _expand_noop(x: torch.Tensor) -> torch.Tensor:
    return (x.expand(-1, -1, -1, -1) - 0).to(torch.float32) / 1


class ScaledShift(nn.Module):
    """``x * (scale * 2) + (offset + 1)``: trainable and buffer arithmetic."""

    offset: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(CHANNELS, 1, 1) + 0.5)
        self.register_buffer("offset", torch.randn(CHANNELS, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale by a trainable and shift by a buffer, both through arithmetic."""
        return x * (self.scale * 2) + (self.offset + 1)


class LinearBatchNorm(nn.Module):
    """flatten -> Linear -> BatchNorm1d -> Linear -> view back."""

    def __init__(self) -> None:
        super().__init__()
        features = CHANNELS * SIZE * SIZE
        self.down = nn.Linear(features, 8)
        self.bn = nn.BatchNorm1d(8)
        randomize_statistics(self.bn)
        self.up = nn.Linear(8, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Through the bottleneck and back to ``x``'s shape."""
        return self.up(self.bn(self.down(x.flatten(1)))).view(x.shape)


def randomize_statistics(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Give ``bn`` non-trivial affine weights and running statistics."""
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)


def conv_bn(bias: bool) -> nn.Module:
    """Conv2d + BatchNorm2d with non-trivial statistics, so folding has work to do."""
    bn = nn.BatchNorm2d(CHANNELS)
    randomize_statistics(bn)
    return nn.Sequential(nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, bias=bias), bn)


class Residual(nn.Module):
    """``x + body(x)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + body(x)``."""
        return x + self.body(x)


LAYERS: dict[str, Callable[[], nn.Module]] = {
    "conv_bn": lambda: conv_bn(bias=False),
    "conv_bias_bn": lambda: conv_bn(bias=True),
    "linear": lambda: nn.Linear(SIZE, SIZE),
    "relu": nn.ReLU,
    "dropout": lambda: nn.Dropout(0.3),
    "identity": nn.Identity,
    "add_zero": lambda: Lambda(_add_zero),
    "mul_one": lambda: Lambda(_mul_one),
    "reshape_noop": lambda: Lambda(_reshape_noop),
    "view_roundtrip": lambda: Lambda(_view_roundtrip),
    "permute_noop": lambda: Lambda(_permute_noop),
    "checked": lambda: Lambda(_checked),
    "residual_conv_bn": lambda: Residual(conv_bn(bias=False)),
    "residual_linear": lambda: Residual(nn.Sequential(nn.Linear(SIZE, SIZE), nn.Dropout(0.1))),
    "permute_roundtrip": lambda: Lambda(_permute_roundtrip),
    "expand_noop": lambda: Lambda(_expand_noop),
    "scaled_shift": ScaledShift,
    "linear_bn": LinearBatchNorm,
}


def build_model(kinds: list[str], seed: int) -> nn.Module:
    """A Sequential of the named layers, with weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(*(LAYERS[kind]() for kind in kinds)).eval()


def parse(model: nn.Module, x: torch.Tensor) -> Graph:
    """The model parsed by the installed parser (the FX plugin) at the example's sizes:
    with no free dim every shape is a constant that cleanup must fold away."""
    return acekit.parse(model, (x,), dynamic_shapes=({},))


@pytest.fixture(scope="module", autouse=True)
def _parser_installed() -> None:
    try:
        parse(nn.Sequential(nn.ReLU()).eval(), torch.randn(1, CHANNELS, SIZE, SIZE))
    except ParseError as error:
        pytest.skip(f"no parser available yet: {error}")


def assert_same_outputs(graph: Graph, model: nn.Module, x: torch.Tensor, label: str) -> None:
    """The graph's module gives the model's outputs (atol 1e-5 of the output scale)."""
    with torch.no_grad():
        expected = model(x)
        actual = graph.to_module().eval()(x)
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale, msg=label)


def assert_trainables_kept(graph: Graph, model: nn.Module) -> None:
    """Every trainable weight outside BatchNorm is still a trainable parameter of the graph."""
    kept = {
        node.attrs["ref"]
        for node in graph.nodes
        if node.op == "parameter" and node.attrs.get("trainable")
    }
    norms = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }
    for name, _ in model.named_parameters():
        if name.rpartition(".")[0] not in norms:
            assert name in kept, f"trainable {name!r} was folded away:\n{graph}"


@settings(
    # CLEANUP_EXAMPLES=300 for a longer hunt; the default keeps the run to seconds.
    max_examples=int(os.environ.get("CLEANUP_EXAMPLES", "15")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=6),
    order=st.permutations(PASSES),
    seed=st.integers(0, 2**16),
    batch=st.sampled_from([1, 2]),
)
def test_each_cleanup_pass_keeps_outputs(
    kinds: list[str], order: list[str], seed: int, batch: int
) -> None:
    model = build_model(kinds, seed)
    x = torch.randn(batch, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))

    # Each pass in a random order on one graph: every pass meets graphs fresh from the
    # parser and graphs other passes already changed. An unchanged graph needs no check.
    graph = parse(model, x)
    done: list[str] = []
    for name in order:
        done.append(name)
        if Pipeline.from_spec(name).run(graph, verify=True).modified:
            assert_same_outputs(graph, model, x, f"{','.join(done)} on {kinds}")

    graph = parse(model, x)
    result = Pipeline.from_spec("cleanup").run(graph, verify=True)
    assert_same_outputs(graph, model, x, f"cleanup on {kinds}")
    ops = {node.op for node in graph.nodes}
    gone = ops & {"dropout", "identity", "contiguous", "batch_norm", "assert", "shape", "to"}
    assert not gone, f"{sorted(gone)} left by cleanup on {kinds}:\n{graph}"
    assert_trainables_kept(graph, model)
    again = Pipeline.from_spec("cleanup").run(result.graph, verify=True)
    assert not again.modified, f"cleanup is not idempotent on {kinds}"
