"""Ops the model zoos use: each parses through FX and torch.export to the same IR ops,
and the generated module matches the model, at the example's shape and at another."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acekit.ir import Graph
from acekit_fx import FxParser
from acekit_fx.export import export_quietly
from tests.fx_support import assert_matches


def fx(model: nn.Module, x: torch.Tensor) -> Graph:
    return FxParser().parse(model, (x,))


def exported(model: nn.Module, x: torch.Tensor) -> Graph:
    return FxParser().parse(export_quietly(model, (x,)), (x,))


PARSERS = [fx, exported]


class Norms(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True) + torch.norm(x, p=2, dim=1, keepdim=True)


class AddCMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.gamma, x, value=0.5) + x.addcmul(x, x)


class PadToMultiple(nn.Module):
    """Pads H and W up to a multiple of 4 with sizes read from the input (timm's halo attn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4))


class Positions(nn.Module):
    """Position ids from the sequence length: torch.arange of a computed bound."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        return x + positions.unsqueeze(-1).to(x.dtype)


class InvertMask(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = ~(x > 0)
        return x.masked_fill(keep, 0.0)


class UpsampleToInput(nn.Module):
    """A decoder upsampling to the size of a skip connection (segmentation heads)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x, 2)
        up = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up + F.interpolate(small, scale_factor=2.0, mode="nearest")


class MeanPool(nn.Module):
    """sentence-transformers' masked mean pooling (expand_as)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[..., :1] > 0).float()
        return (x * mask.expand_as(x)).sum(1) / mask.expand_as(x).sum(1).clamp(min=1e-9)


class Windows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unfold(2, 4, 2).mean(-1)


class AddMM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 8))
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.flatten(1, 2)[:, :8], self.weight.t())


class Writes(nn.Module):
    """Writes into computed tensors: Swin v2 zeroes a slice of its qkv bias copy, MViTv2
    adds into a corner of its attention (slice_scatter, select_scatter, copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.proj.bias.clone()
        bias[2:6].zero_()
        y = F.linear(x, self.proj.weight, bias)
        attn = y @ y.transpose(-1, -2)
        attn[:, 1:, 1:] = attn[:, 1:, 1:] + 1.0
        attn[:, 0] = attn[:, 1] * 0.5
        return attn @ y


class Copy(nn.Module):
    """``aten.copy`` as torch.export records it: broadcast and cast into the first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = torch.ops.aten.copy.default(x, x[:, :1] * 2)
        flags = torch.ops.aten.copy.default(x.int(), x > 0)
        return row + flags


class Outlook(nn.Module):
    """VOLO's outlook attention in small: nn.Unfold, F.fold to the input's size (read
    from its shape, with math.ceil), and Tensor.max/min along a dim."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.unfold = nn.Unfold(kernel_size=3, padding=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        batch, channels, height, width = x.shape
        blocks = math.ceil(height / 2) * math.ceil(width / 2)
        columns = self.unfold(x).reshape(batch, channels * 9, blocks)
        y = F.fold(columns.relu(), (height, width), kernel_size=3, padding=1, stride=2)
        low = y.min(dim=-1, keepdim=True)
        return y + 0.5 * y.max(1)[0].unsqueeze(1) - low.values + low.indices


class AntialiasedResize(nn.Module):
    """Antialiased bicubic/bilinear resizing: of features, and of a parameter alone
    (timm's SAM ViT resizes its position embedding in forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pos_embed = nn.Parameter(torch.randn(1, 4, 5, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(self.conv(x), size=(5, 5), mode="bicubic", antialias=True)
        pos = F.interpolate(self.pos_embed, scale_factor=1.0, mode="bicubic", antialias=True)
        half = F.interpolate(small + pos, scale_factor=0.5, mode="bilinear", antialias=True)
        return half.mean((-1, -2), keepdim=True) + small


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], tuple[int, ...], str]] = {
    "norm": (Norms, (2, 3, 8), (3, 3, 8), "norm"),
    "addcmul": (AddCMul, (2, 3, 8), (3, 3, 8), "mul"),
    "pad": (PadToMultiple, (1, 2, 6, 7), (1, 2, 6, 7), "pad"),
    "arange": (Positions, (2, 5, 3), (2, 5, 3), "arange"),
    "invert": (InvertMask, (2, 3, 8), (3, 3, 8), "bitwise_not"),
    "upsample": (UpsampleToInput, (1, 2, 8, 8), (2, 2, 8, 8), "interpolate"),
    "expand_as": (MeanPool, (2, 5, 8), (3, 5, 8), "expand"),
    "unfold": (Windows, (1, 2, 10, 3), (2, 2, 10, 3), "unfold"),
    "addmm": (AddMM, (2, 1, 8), (3, 1, 8), "linear"),
    "slice_scatter": (Writes, (2, 4, 8), (3, 4, 8), "slice_scatter"),
    "copy": (Copy, (2, 5, 3), (3, 5, 3), "expand"),
    "im2col": (Outlook, (1, 3, 9, 8), (2, 3, 9, 8), "col2im"),
    "antialias": (AntialiasedResize, (1, 3, 11, 9), (2, 3, 11, 9), "interpolate"),
}


#: Sizes export traces as constants (no dynamic dims declared), so these fold away.
FOLDED_BY_EXPORT = {"arange"}


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("case", list(CASES))
def test_op_parses_and_runs(case: str, parse: Callable[[nn.Module, torch.Tensor], Graph]) -> None:
    make, shape, other, op = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(shape)
    graph = parse(model, x)
    if parse is fx or case not in FOLDED_BY_EXPORT:
        assert op in {node.op for node in graph.nodes}
    module = graph.to_module()
    with torch.no_grad():
        assert_matches(model(x), module(x))
        if parse is fx:  # FX keeps the shape arithmetic: another shape runs too
            y = torch.randn(other)
            assert_matches(model(y), module(y))


def test_fx_assertion_helpers_leave_no_node() -> None:
    class Optional(nn.Module):
        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            return x if mask is None else x * mask

    x = torch.randn(2, 3)
    graph = fx(Optional(), x)
    assert {node.op for node in graph.nodes} == {"input", "output"}
    # The parameter FX fixed to its default is no graph input: the module takes x alone.
    assert len([node for node in graph.nodes if node.op == "input"]) == 1
    assert torch.equal(graph.to_module()(x), x)


class MoveDim(nn.Module):
    """torch.movedim has no FX handler; torch.export records it as aten.permute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.movedim(x, 0, 1) + 1


def test_ops_fx_lacks_are_parsed_through_torch_export(caplog: pytest.LogCaptureFixture) -> None:
    x = torch.randn(2, 3)
    with caplog.at_level("INFO", logger="acekit"):
        graph = fx(MoveDim(), x)
    assert "permute" in {node.op for node in graph.nodes}
    assert_matches(MoveDim()(x), graph.to_module()(x))
    assert any(
        "torch.movedim" in r.getMessage() and "through torch.export" in r.getMessage()
        for r in caplog.records
    )


class Histogram(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.histc(x, bins=4)


def test_ops_neither_path_supports_name_both_paths() -> None:
    from acekit.parsing import UnsupportedOpsError

    with pytest.raises(UnsupportedOpsError) as raised:
        fx(Histogram(), torch.randn(2, 3))
    message = str(raised.value)
    assert "torch.histc" in message
    assert "torch.export was tried too" in message and "histc" in message.split("tried too")[1]


def test_without_fallback_fx_errors_stay_fx_errors() -> None:
    from acekit.parsing import UnsupportedOpsError

    with pytest.raises(UnsupportedOpsError, match="torch.movedim") as raised:
        FxParser(fallback_to_export=False).parse(MoveDim(), (torch.randn(2, 3),))
    assert "torch.export" not in str(raised.value)


class Extremes(nn.Module):
    """torch.min/max of two tensors (MPNet's relative position buckets) are elementwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.min(x, torch.zeros_like(x)) + torch.max(x, torch.ones_like(x))


def test_min_and_max_of_two_tensors_through_export() -> None:
    x = torch.randn(2, 3)
    graph = exported(Extremes(), x)
    assert {"minimum", "maximum"} <= {node.op for node in graph.nodes}
    assert_matches(Extremes()(x), graph.to_module()(x))


@pytest.mark.parametrize(
    "shape, dim, size, step",
    [
        ((2, 3, 10, 7), 2, 4, 2),
        ((2, 3, 10, 7), -1, 3, 1),
        ((5,), 0, 2, 3),
        ((2, 12, 12, 4), 1, 6, 4),
    ],
)
def test_unfold_kernel_is_tensor_unfold(
    shape: tuple[int, ...], dim: int, size: int, step: int
) -> None:
    from acekit.runtime import get_kernel

    x = torch.randn(shape)
    kernel = get_kernel("unfold").fn
    assert torch.equal(kernel(x, dimension=dim, size=size, step=step), x.unfold(dim, size, step))


def test_addmm_of_a_transposed_weight_is_linear_in_every_parser() -> None:
    from acekit_torchscript import parse_torchscript

    model, x = AddMM().eval(), torch.randn(2, 1, 8)
    with torch.no_grad():
        scripted = parse_torchscript(torch.jit.trace(model, x), (x,))
    for graph in (fx(model, x), exported(model, x), scripted):
        ops = {node.op for node in graph.nodes}
        assert "linear" in ops and "matmul" not in ops, ops
        assert_matches(model(x), graph.to_module()(x))


class Loop(nn.Module):
    """Iterates over its input: what torchvision's detectors do with their image batch."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([image * 2 for image in images])


def test_a_trace_failure_names_the_users_line_not_the_parsers() -> None:
    from acekit_fx.errors import TraceFailedError

    with pytest.raises(TraceFailedError) as raised:
        FxParser(fallback_to_export=False).parse(Loop(), (torch.randn(2, 3),))
    assert raised.value.location is not None
    assert raised.value.location.startswith(__file__)


@pytest.mark.parametrize(
    "shape, size", [((2, 3, 1, 1), 6), ((2, 3, 5, 7), (3, 4)), ((1, 2, 2, 3), 7)]
)
def test_adaptive_average_pooling_to_sizes_that_do_not_divide(
    shape: tuple[int, ...], size: int | tuple[int, int]
) -> None:
    from acekit.runtime import get_kernel

    x = torch.randn(shape)
    kernel = get_kernel("adaptive_avg_pool2d").fn
    torch.testing.assert_close(kernel(x, output_size=size), F.adaptive_avg_pool2d(x, size))


#: The ops added for the zoo's failing models, run through the user's whole job:
#: compile (calibration batch != example batch), export, ORT at two batch sizes vs qm(x).
DEPLOYED = ["slice_scatter", "copy", "im2col", "antialias"]


@pytest.mark.parametrize("case", DEPLOYED)
def test_new_ops_deploy_to_onnx_runtime(case: str) -> None:
    from tests.zoo.harness import Case, run_case

    make, shape, _, _ = CASES[case]

    def inputs(batch: int, variant: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, *shape[1:]),)

    outcome = run_case(Case("ops", case, make, inputs))
    assert outcome.stage == "pass", f"{outcome.stage}: {outcome.error}\n{outcome.trace}"
    assert set(outcome.stages) >= {"export", "ort", "ort_other"}


@pytest.mark.parametrize("case", ["im2col", "antialias"])
def test_new_ops_parse_from_torchscript(case: str) -> None:
    from acekit_torchscript import parse_torchscript

    make, shape, _, op = CASES[case]
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(shape)
    with torch.no_grad():
        graph = parse_torchscript(torch.jit.trace(model, x), (x,))
        assert op in {node.op for node in graph.nodes}
        assert_matches(model(x), graph.to_module()(x))
