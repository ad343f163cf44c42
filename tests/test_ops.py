"""acekit.ops: every op defined once, the tables derived from the definitions, type rules,
and the FX parser's generic binding of a call to the op its definition names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import acekit
from acekit.ir import OPS, Graph, TensorType
from acekit.ops import FLOAT, OPDEFS, OpDef, aten_key, infer_types, unary
from acekit.ops.core import core_definitions
from acekit.ops.core.structure import STRUCTURAL
from acekit.parsing import UnsupportedOpsError
from acekit.runtime import get_kernel, to_module


def test_every_core_op_is_defined_once_with_its_kernel() -> None:
    defs = core_definitions()
    names = Counter(d.name for d in defs)
    assert [name for name, count in names.items() if count > 1] == []
    assert set(OPS) == set(names)
    assert [d.name for d in defs if d.kernel is None] == sorted(STRUCTURAL, key=list(names).index)
    for opdef in defs:
        if opdef.kernel is not None:
            assert get_kernel(opdef.name).fn is opdef.kernel
            assert OPS[opdef.name] is opdef.schema


def test_no_torch_call_means_two_ops() -> None:
    """A torch callable, Tensor method or ATen op belongs to exactly one definition."""
    defs = core_definitions()
    functions = Counter(id(f) for d in defs for f in d.functions)
    methods = Counter(m for d in defs for m in d.methods)
    aten = Counter(k for d in defs for k in d.aten_keys)
    assert [m for m, n in methods.items() if n > 1] == []
    assert [k for k, n in aten.items() if n > 1] == []
    assert [f for f, n in functions.items() if n > 1] == []
    assert OPDEFS.for_function(torch.bmm).name == "matmul"  # type: ignore[union-attr]
    assert OPDEFS.for_method("__add__").name == "add"  # type: ignore[union-attr]
    assert OPDEFS.for_aten("aten", "min", "other").name == "minimum"  # type: ignore[union-attr]
    assert OPDEFS.for_aten("aten", "min", "dim") is None
    assert aten_key("mylib::fused") == "mylib::fused" and aten_key("add") == "aten::add"


def test_definitions_are_checked_when_made() -> None:
    with pytest.raises(TypeError, match="functions must hold callables"):
        OpDef(unary("bad"), functions=("torch.add",))
    with pytest.raises(TypeError, match="aten must hold non-empty strings"):
        OpDef(unary("bad"), aten=("",))
    with pytest.raises(ValueError, match="already defined"):
        OPDEFS.register(OpDef(unary("relu")))


def test_type_rules_agree_with_running_the_graph() -> None:
    graph = Graph("typed")
    x = graph.add_input("x", TensorType(torch.float32, (2, 3, 8, 8)))
    weight = graph.add_parameter("w", torch.randn(4, 3, 3, 3))
    conv = graph.add_node("conv2d", [x, weight], {"padding": (1, 1)})
    relu = graph.add_node("relu", [conv.output])
    flat = graph.add_node("flatten", [relu.output], {"start_dim": 1})
    pieces = graph.add_node("chunk", [flat.output], {"chunks": 2, "dim": 1}, num_outputs=2)
    graph.set_outputs(list(pieces.outputs))
    for node in (conv, relu, flat, pieces):
        types = infer_types(node)
        assert types is not None, node.op
        for value, found in zip(node.outputs, types, strict=True):
            value.type = found
    assert conv.output.type == TensorType(torch.float32, (2, 4, 8, 8))
    assert flat.output.type == TensorType(torch.float32, (2, 256))
    expected = graph.to_module()(torch.randn(2, 3, 8, 8))
    assert [v.type for v in pieces.outputs] == [TensorType.of(t) for t in expected]
    symbolic = Graph("symbolic")
    y = symbolic.add_input("y", TensorType(torch.float32, ("batch", 3)))
    assert infer_types(symbolic.add_node("relu", [y])) is None  # left to a run


@torch.library.custom_op("acekit_test::scale_shift", mutates_args=())
def scale_shift(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """``x * scale + shift``: a library op the tests define an IR op for."""
    return x * scale + shift


@scale_shift.register_fake
def _scale_shift_shape(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    return torch.empty_like(x)


def scale_shift_kernel(input: torch.Tensor, *, scale: float, shift: float = 0.0) -> torch.Tensor:
    """The IR op's kernel."""
    return input * scale + shift


@pytest.fixture
def scale_shift_op() -> Iterator[OpDef]:
    opdef = OpDef(
        unary("scale_shift", scale=FLOAT, shift=FLOAT),
        kernel=scale_shift_kernel,
        aten=("acekit_test::scale_shift",),
    )
    OPDEFS.register(opdef)
    try:
        yield opdef
    finally:
        OPDEFS.unregister("scale_shift")


class _Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.acekit_test.scale_shift(torch.relu(x), 2.0, shift=1.0)


def test_a_defined_op_binds_positional_and_keyword_arguments(scale_shift_op: OpDef) -> None:
    x = torch.randn(2, 5)
    for model in (_Scaled(), torch.export.export(_Scaled(), (x,))):
        graph = acekit.parse(model, (x,))
        (node,) = [n for n in graph.nodes if n.op == "scale_shift"]
        assert node.attrs == {"scale": 2.0, "shift": 1.0}
        with torch.no_grad():
            assert torch.allclose(graph.to_module()(x), _Scaled()(x))


def test_a_call_the_op_has_no_place_for_is_reported() -> None:
    """A definition without ``shift``: the call's ``shift=1.0`` is named, not dropped."""
    OPDEFS.register(
        OpDef(
            unary("scale_shift", scale=FLOAT),
            kernel=scale_shift_kernel,
            aten=("acekit_test::scale_shift",),
        )
    )
    try:
        with pytest.raises(UnsupportedOpsError, match="shift=1.0 has no counterpart"):
            acekit.parse(_Scaled(), (torch.randn(2, 3),), parser="fx")
    finally:
        OPDEFS.unregister("scale_shift")


class _CoreMath(torch.nn.Module):
    """Core ATen ops the IR gained with one definition each (and aten-only lowerings)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.GroupNorm(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")))
        a = torch.atan2(y, y.abs() + 1) + torch.fmod(y, 0.7) + torch.sign(y) * torch.log1p(y.abs())
        b = torch.tan(torch.atan(y) * 0.5) + torch.round(y * 4) / 4 + torch.expm1(y.clamp(max=1))
        c = torch.where(torch.logical_xor(y > 0, torch.isnan(y)), a, b)
        c = c + torch.sinh(torch.asinh(y)) - torch.cosh(y * 0.1) + torch.log2(y.abs() + 1)
        c = c / (1 + c.var(dim=(2, 3), keepdim=True) + torch.var(c, 1, False, True))
        values, indices = c.max(dim=1, keepdim=True)
        positive = torch.any(c > 0, dim=1, keepdim=True)
        ones = torch.ones_like(c).scatter(1, indices, 2.0)
        hits = torch.zeros_like(c).scatter_add(1, indices, values)
        extra = (ones + hits + torch.scatter(c, 1, indices, values)).sum(1, keepdim=True)
        return (
            values
            + indices
            + c.argmin(dim=1, keepdim=True)
            + positive * c.tanh().prod(1, True)
            + extra
        )


@pytest.mark.parametrize("path", ["fx", "export"])
def test_added_core_ops_parse_run_and_export(path: str, tmp_path: Path) -> None:
    import onnxruntime

    torch.manual_seed(0)
    model, x = _CoreMath().eval(), torch.randn(2, 3, 16, 16)
    source = model if path == "fx" else torch.export.export(model, (x,))
    graph = acekit.parse(source, (x,), parser="fx")
    ops = {node.op for node in graph.nodes}
    expected = {"atan2", "fmod", "sign", "log1p", "tan", "atan", "round", "expm1"}
    expected |= {"logical_xor", "isnan", "sinh", "asinh", "cosh", "log2", "argmin", "any"}
    expected |= {"prod", "amax", "argmax", "group_norm", "pad", "var", "scatter_elements"}
    assert expected <= ops, expected - ops
    module = graph.to_module()
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), atol=1e-5)
    onnx_path = tmp_path / "math.onnx"
    exported = to_module(graph, export=True)  # expm1 has an ONNX lowering
    torch.onnx.export(exported, (x,), str(onnx_path), dynamo=False, opset_version=17)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(actual), module(x), rtol=1e-4, atol=1e-4)


def test_core_aten_coverage_is_documented_and_current() -> None:
    """docs/coverage.md's "Core ATen opset" section is what the coverage script writes."""
    from acekit_fx.coverage import HEADING, coverage, render

    result = coverage()
    assert result.fraction >= 0.75 and "add.Tensor" in result.covered
    assert "convolution_backward.default" in result.uncovered
    page = (Path(__file__).parents[1] / "docs" / "coverage.md").read_text(encoding="utf-8")
    section = page[page.index(f"\n{HEADING}\n") + 1 :]
    section = section[: section.find("\n## ", 1) + 1] if "\n## " in section[1:] else section
    assert section == render(result), (
        "docs/coverage.md is stale: run `python -m acekit_fx.coverage --write docs/coverage.md`"
    )


def test_the_fx_parser_keeps_no_second_table_of_defined_calls() -> None:
    """Its own tables hold only calls no definition lists (no mapping defined twice)."""
    from acekit_fx.handlers import registry

    registry._ensure_loaded()  # the handler modules fill the tables when imported
    assert [f for f in registry.FUNCTIONS if OPDEFS.for_function(f)] == []
    assert [m for m in registry.METHODS if OPDEFS.for_method(m)] == []
    twice = [a for a in registry.ATEN if OPDEFS.for_aten("aten", *f"{a}.".split(".")[:2])]
    assert twice == []


class _Scatters(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.argmax(1, keepdim=True)
        added = torch.zeros_like(x).scatter_add(1, index, x)
        return added + x.scatter(1, index, 2.0) + torch.scatter(x, 1, index, x * 3)


@pytest.mark.parametrize("how", ["trace", "script"])
def test_torchscript_converts_scatters_with_their_reduction(how: str) -> None:
    x = torch.randn(3, 5)
    model = _Scatters()
    scripted = torch.jit.trace(model, (x,)) if how == "trace" else torch.jit.script(model)
    graph = acekit.parse(scripted, (x,), parser="torchscript")
    scatters = [n for n in graph.nodes if n.op == "scatter_elements"]
    assert [n.attrs.get("reduce") for n in scatters] == ["add", None, None]
    with torch.no_grad():
        assert torch.allclose(graph.to_module()(x), model(x))


class _IndexWrites(torch.nn.Module):
    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[rows] = x[rows] * 2
        return torch.index_put(y, (rows,), torch.ones_like(x[rows]), accumulate=True)


@pytest.mark.parametrize("how", ["fx", "export", "trace"])
def test_index_writes_are_index_put(how: str, tmp_path: Path) -> None:
    import onnxruntime

    model, x, rows = _IndexWrites(), torch.randn(5, 3), torch.tensor([0, 3])
    if how == "trace":
        graph = acekit.parse(torch.jit.trace(model, (x, rows)), (x, rows), parser="torchscript")
    else:
        source = model if how == "fx" else torch.export.export(model, (x, rows))
        graph = acekit.parse(source, (x, rows), parser="fx")
    puts = [n for n in graph.nodes if n.op == "index_put"]
    assert puts and puts[-1].attrs == {"positions": (0,), "accumulate": True}
    module = graph.to_module()
    with torch.no_grad():
        assert torch.allclose(module(x, rows), model(x, rows))
    path = tmp_path / "puts.onnx"
    torch.onnx.export(to_module(graph, export=True), (x, rows), str(path), dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, rows), strict=True)}
    (actual,) = session.run(None, feed)
    assert torch.allclose(torch.from_numpy(actual), model(x, rows))


def test_onnx_types_say_what_the_qdq_lowering_looks_through() -> None:
    from acekit.quant.qdq_onnx import onnx_ops

    assert onnx_ops(["flatten", "max_pool2d", "relu", "no_such_op"]) == {
        "Flatten",
        "Reshape",
        "MaxPool",
    }
