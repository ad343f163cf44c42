"""The FX parser plugin: symbolic tracing, dynamo and torch.export graphs, errors, logs."""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acekit
import acekit_fx
from acekit.api import ExampleInputsError, ParseError
from acekit.ir import Graph, Node
from acekit_fx import FxParser, TraceFailedError, UnsupportedOpsError
from tests.fx_support import assert_matches, fx_registered, messages, parse_log

__all__ = ["fx_registered", "parse_log"]  # fixtures used by name

HERE = __file__


def ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def only(graph: Graph, op: str) -> Node:
    found = [node for node in graph.nodes if node.op == op]
    assert len(found) == 1, f"{len(found)} {op} nodes"
    return found[0]


def parse(model: nn.Module, *inputs: torch.Tensor, **options: Any) -> Graph:
    return FxParser(**options).parse(model, inputs)


def check_runs(model: nn.Module, graph: Graph, *inputs: torch.Tensor) -> None:
    module = graph.to_module()
    with torch.no_grad():
        assert_matches(model(*inputs), module(*inputs))


# -- small models ---------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.conv(x)))
        out += x  # in place: later readers of `out` see the sum
        return self.relu(out)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


def test_conv_net_parses_with_module_paths_refs_and_matches() -> None:
    model = ConvNet().eval()
    x = torch.randn(2, 3, 16, 16)
    graph = parse(model, x)
    graph.verify()
    assert {"conv2d", "batch_norm", "relu", "add", "adaptive_avg_pool2d", "flatten", "dropout",
            "linear"} <= set(ops(graph))  # fmt: skip
    conv = graph.node("blocks_0_conv")
    assert conv.op == "conv2d"
    assert conv.subgraph == "ConvNet/blocks/0"
    assert conv.inputs[1].producer is not None
    assert conv.inputs[1].producer.attrs["ref"] == "blocks.0.conv.weight"
    assert graph.node("fc").subgraph == "ConvNet"
    assert conv.source_location is not None and conv.source_location.startswith(HERE)
    refs = {n.attrs["ref"] for n in graph.nodes if n.op == "parameter"}
    assert refs == set(model.state_dict())
    check_runs(model, graph, x)


def test_batch_norm_records_its_statistics_and_follows_the_mode() -> None:
    model = ConvNet().eval()
    graph = parse(model, torch.randn(2, 3, 8, 8))
    bn = graph.node("blocks_0_bn")
    assert [v.producer.attrs["ref"] for v in bn.inputs[1:]] == [  # type: ignore[union-attr]
        "blocks.0.bn.weight",
        "blocks.0.bn.bias",
        "blocks.0.bn.running_mean",
        "blocks.0.bn.running_var",
        "blocks.0.bn.num_batches_tracked",
    ]
    assert "training" not in bn.attrs


class Attention(nn.Module):
    def __init__(self, batch_first: bool, need_weights: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = self.norm(x)
        out, weights = self.attn(y, y, y, need_weights=self.need_weights)
        return out + x, weights


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_is_one_node_with_two_outputs(
    batch_first: bool, need_weights: bool
) -> None:
    model = Attention(batch_first, need_weights).eval()
    x = torch.randn(2, 5, 16)
    graph = parse(model, x)
    mha = only(graph, "multihead_attention")
    assert mha.name == "attn"
    assert len(mha.outputs) == 2
    assert mha.attrs["num_heads"] == 4
    assert mha.attrs["batch_first"] is batch_first
    refs = [v.producer.attrs["ref"] for v in mha.inputs[3:7]]  # type: ignore[union-attr]
    assert refs == ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                    "attn.out_proj.bias"]  # fmt: skip
    assert bool(mha.outputs[1].uses) is need_weights
    check_runs(model, graph, x)


class Sdpa(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, c // 4).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(1, 2).reshape(b, n, c)


def test_scaled_dot_product_attention_is_an_op() -> None:
    model = Sdpa().eval()
    x = torch.randn(2, 6, 16)
    graph = parse(model, x)
    sdpa = only(graph, "scaled_dot_product_attention")
    assert sdpa.attrs["is_causal"] is True
    assert only(graph, "unbind").outputs == tuple(sdpa.inputs[:3])
    check_runs(model, graph, x)


class ShapeMath(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        torch._assert(x.dim() == 4, "expected NCHW")
        y = x.reshape(b, c, h * w).transpose(1, 2)
        return y.mean(1) * x.size(0) + y[:, 0] + y[:, -2:].sum(1) + y[:, ::2].sum(1)


def test_shape_arithmetic_stays_in_the_graph_and_follows_the_batch(
    parse_log: pytest.LogCaptureFixture,
) -> None:
    model = ShapeMath()
    graph = parse(model, torch.randn(2, 3, 4, 4))
    assert {"shape", "gather", "dim", "eq", "assert", "mul", "pack", "reshape", "select",
            "slice"} <= set(ops(graph))  # fmt: skip
    shape = graph.node("shape_1")
    assert shape.outputs[0].type.shape == (4,)
    assert graph.node("gather_1").attrs["index"] == 0
    lines = messages(parse_log)
    assert "Parsed to -> 'shape_1' (Subgraph: 'ShapeMath')" in lines
    assert "Parsed to -> 'gather_1' (Subgraph: 'ShapeMath')" in lines
    reshape = only(graph, "reshape")
    assert reshape.inputs[1].producer.op == "pack"  # type: ignore[union-attr]
    module = graph.to_module()
    for batch in (2, 5):  # the shape is read at run time, not baked in
        x = torch.randn(batch, 3, 4, 4)
        assert_matches(model(x), module(x))


class InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y.add_(1)
        z = y.clone()
        z.mul_(3)
        return y + z


def test_in_place_ops_become_functional_and_later_reads_see_them() -> None:
    model = InPlace()
    x = torch.randn(3, 4)
    graph = parse(model, x)
    assert "add_" not in ops(graph)
    check_runs(model, graph, x)


class Dynamic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: neither tracer can follow it
            return self.fc(x)
        return -x


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Dynamic()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + 1


def test_data_dependent_control_flow_names_module_line_and_what_to_try() -> None:
    with pytest.raises(TraceFailedError) as caught:
        parse(Outer(), torch.randn(2, 4))
    error = caught.value
    line = inspect.getsourcelines(Dynamic.forward)[1] + 1
    assert error.module == "Outer/body"
    assert error.location == f"{HERE}:{line}"
    text = str(error)
    assert "Outer/body" in text and f"{HERE}:{line}" in text
    assert "parser='torchscript'" in text
    assert "leaf_modules" in text
    assert error.export_reason is not None


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:  # shape-dependent: symbolic tracing cannot, torch.export can
            return self.fc(x) * 2
        return self.fc(x)


class HasShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch = ShapeBranch()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.branch(x)))


def test_leaf_module_is_captured_by_torch_export_and_inlined() -> None:
    model = HasShapeBranch().eval()
    x = torch.randn(3, 4)
    graph = parse(model, x, leaf_modules=(ShapeBranch,), fallback_to_export=False)
    linear = [n for n in graph.nodes if n.op == "linear"]
    assert [n.inputs[1].producer.attrs["ref"] for n in linear] == [  # type: ignore[union-attr]
        "branch.fc.weight",
        "head.weight",
    ]
    assert graph.node("branch").op == "mul"
    check_runs(model, graph, x)


def test_untraceable_model_falls_back_to_torch_export(
    parse_log: pytest.LogCaptureFixture,
) -> None:
    model = HasShapeBranch().eval()
    x = torch.randn(3, 4)
    graph = parse(model, x)
    assert any("parsing it through torch.export instead" in m for m in messages(parse_log))
    check_runs(model, graph, x)
    with pytest.raises(TraceFailedError, match="HasShapeBranch/branch"):
        parse(model, x, fallback_to_export=False)


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.fft.fft(x).real
        y = y.logcumsumexp(1)
        out, _ = self.rnn(y.unsqueeze(0))
        return torch.fft.ifft(out).real + torch.sort(y, dim=1).values


def test_every_unsupported_op_is_listed_at_once() -> None:
    with pytest.raises(UnsupportedOpsError) as caught:
        parse(Unsupported(), torch.randn(2, 4))
    error = caught.value
    assert error.model_name == "Unsupported"
    names = error.op_names
    assert "torch._C._fft.fft_fft" in names or any("fft" in n for n in names)
    assert "Tensor.logcumsumexp" in names
    assert "torch.sort" in names
    assert any("GRU" in n for n in names)
    assert len([n for n in names if "fft" in n]) == 2
    source_lines = inspect.getsource(Unsupported.forward)
    assert "logcumsumexp" in source_lines
    found = next(op for op in error.ops if op.op == "Tensor.logcumsumexp")
    assert found.subgraph == "Unsupported"
    assert found.location is not None and found.location.startswith(HERE + ":")
    assert found.node == "logcumsumexp"
    assert "Tensor.logcumsumexp (node 'logcumsumexp', in 'Unsupported' at" in str(error)


class TwoModes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        self.b = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_training_model_is_parsed_in_eval_mode_and_keeps_its_modes(
    parse_log: pytest.LogCaptureFixture,
) -> None:
    model = TwoModes().train()
    model.b.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(3, 4)
    graph = parse(model, x)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert any("is in training mode: parsing it in eval mode" in m for m in messages(parse_log))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    module = graph.to_module()
    model.eval()
    with torch.no_grad():
        assert_matches(model(x), module(x))


def test_the_model_is_never_modified_nor_aliased() -> None:
    model = ConvNet().eval()
    graph = parse(model, torch.randn(1, 3, 8, 8))
    for name, tensor in model.state_dict().items():
        held = graph.tensors[name]
        assert torch.equal(held, tensor)
        assert held.data_ptr() != tensor.data_ptr(), name


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ((), "needs 1 input"),
        ((torch.randn(1, 3, 8, 8), torch.randn(1)), "takes at most 1 input"),
        (("image.png",), "example input 0 for 'ConvNet' is a str"),
        ({"x": torch.randn(1, 3, 8, 8)}, "must be a tensor or a tuple of tensors"),
    ],
)
def test_bad_example_inputs_fail_before_tracing(
    monkeypatch: pytest.MonkeyPatch, inputs: Any, match: str
) -> None:
    def no_trace(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("traced despite bad inputs")

    monkeypatch.setattr(acekit_fx.parser, "symbolic_trace", no_trace)
    with pytest.raises(ExampleInputsError, match=match) as caught:
        acekit.parse(ConvNet(), inputs, parser=FxParser())
    assert "ConvNet" in str(caught.value)
    with pytest.raises(ExampleInputsError):
        FxParser().parse(ConvNet(), inputs if isinstance(inputs, tuple) else (inputs,))


# -- the reference: torchvision ViT-B/16 ----------------------------------------------------


def test_vit_b_16_parses_in_236_nodes_with_the_seed_log(
    parse_log: pytest.LogCaptureFixture,
) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    x = torch.randn(1, 3, 224, 224)
    graph = parse(model, x)
    lines = messages(parse_log)
    assert lines[0] == "Starting to parse the model: 'VisionTransformer'"
    parsing = [line for line in lines if ". Parsing node: " in line]
    assert len(parsing) == 236
    assert lines[1:5] == [
        "1/236. Parsing node: 'x'",
        "Parsed to -> 'x' (Subgraph: 'VisionTransformer')",
        "2/236. Parsing node: 'getattr_1'",
        "Parsed to -> 'shape_1' (Subgraph: 'VisionTransformer')",
    ]
    assert lines[5:7] == [
        "3/236. Parsing node: 'getitem'",
        "Parsed to -> 'gather_1' (Subgraph: 'VisionTransformer')",
    ]
    assert lines[-3:] == [
        "235/236. Parsing node: 'heads_head'",
        "Parsed to -> 'heads_head' (Subgraph: 'VisionTransformer/heads')",
        "236/236. Parsing node: 'output'",
    ]
    attention = [n for n in graph.nodes if n.op == "multihead_attention"]
    assert len(attention) == 12
    assert attention[0].subgraph == "VisionTransformer/encoder/layers/encoder_layer_0"
    assert graph.node("class_token").attrs["ref"] == "class_token"
    assert graph.node("encoder_pos_embedding").attrs["ref"] == "encoder.pos_embedding"
    assert (
        graph.node("encoder.layers.encoder_layer_0.ln_1.weight").attrs["ref"]
        == "encoder.layers.encoder_layer_0.ln_1.weight"
    )
    assert sum(n.op == "dropout" for n in graph.nodes) == 37
    check_runs(model, graph, x)


# -- dynamo and torch.export ----------------------------------------------------------------


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x))).mean((2, 3)).unsqueeze(1)
        a, _ = self.attn(y, y, y)
        return self.fc(a.squeeze(1)) + 1


def test_dynamo_backend_graph_gets_its_parameters_back() -> None:
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    graphs: list[Graph] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        graph = FxParser().parse_graph_module(gm, example_inputs, name="Mixed")
        graphs.append(graph)
        module = graph.to_module()
        positions = acekit_fx.user_input_positions(gm, example_inputs)
        return lambda *args: module(*(args[i] for i in positions))  # a tuple, as dynamo wants

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        assert_matches(model(x), compiled(x))
    (graph,) = graphs
    assert [n.name for n in graph.input_nodes] == ["x"]
    refs = {n.attrs["ref"] for n in graph.nodes if n.op == "parameter"}
    assert refs == set(model.state_dict()) - {"bn.num_batches_tracked"}
    assert only(graph, "multihead_attention").attrs["num_heads"] == 2
    assert graph.outputs[0].producer is not None


def test_make_backend_runs_the_generated_module() -> None:
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    seen: list[Graph] = []

    def on_graph(graph: Graph) -> Graph:
        seen.append(graph)
        return graph

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=acekit_fx.make_backend(on_graph, name="Mixed"))
    with torch.no_grad():
        assert_matches(model(x), compiled(x))
    assert len(seen) == 1 and seen[0].name == "Mixed"


def test_symbolic_sizes_from_dynamo_are_shapes_of_the_input() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y.reshape(y.shape[0], -1)

    model = Flat().eval()
    seen: list[Graph] = []

    def on_graph(graph: Graph) -> Graph:
        seen.append(graph)
        return graph

    torch._dynamo.reset()
    backend = acekit_fx.make_backend(on_graph)
    compiled = torch.compile(model, backend=backend, dynamic=True)
    with torch.no_grad():
        for batch in (2, 5):
            x = torch.randn(batch, 3, 8, 8)
            assert_matches(model(x), compiled(x))
    (graph,) = seen  # one graph serves both batch sizes
    assert [n.name for n in graph.input_nodes] == ["x"]
    assert any(n.op == "shape" and n.inputs[0].producer.op == "input" for n in graph.nodes)


def test_exported_program_parses_with_state_dict_refs(fx_registered: None) -> None:
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x,))
    graph = acekit.parse(program, ())
    assert graph.name == "Mixed"
    refs = {n.attrs["ref"] for n in graph.nodes if n.op == "parameter"}
    assert refs == set(model.state_dict())
    assert "linear" in ops(graph) and "conv2d" in ops(graph)
    with torch.no_grad():
        assert_matches(model(x), graph.to_module()(x))


def test_addmm_of_a_transposed_weight_becomes_linear() -> None:
    class Mm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))
            self.bias = nn.Parameter(torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addmm(self.bias, x, self.weight.t())

    model = Mm()
    x = torch.randn(2, 4)
    program = torch.export.export(model, (x,))
    graph = FxParser().parse_exported_program(program)
    assert "linear" in ops(graph) and "transpose" not in ops(graph)
    with torch.no_grad():
        assert_matches(model(x), graph.to_module()(x))


# -- the public API -------------------------------------------------------------------------


def test_torchvision_stochastic_depth_is_an_op() -> None:
    # acekit_fx registers torchvision's function without importing torchvision (which
    # would import torch._dynamo on every parse): the model's own import is what counts.
    tv_ops = pytest.importorskip("torchvision.ops")

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.drop = tv_ops.StochasticDepth(0.2, "row")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.drop(self.fc(x))

    model, x = Residual().eval(), torch.randn(2, 4)
    graph = parse(model, x)
    assert only(graph, "stochastic_depth").attrs == {"p": 0.2, "mode": "row"}
    check_runs(model, graph, x)


def test_torchvision_models_keep_their_source_lines() -> None:
    # torchvision's path starts like torch's (``.../torch`` + ``vision``): its frames are
    # the model's code, which errors and the printed graph name.
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=4).eval()
    graph = parse(model, torch.randn(1, 3, 32, 32))
    location = graph.node("conv1").source_location
    assert location is not None and "torchvision/models/resnet.py:" in location


def test_acekit_parse_chooses_the_fx_parser(fx_registered: None) -> None:
    model = ConvNet().eval()
    x = torch.randn(1, 3, 8, 8)
    graph = acekit.parse(model, x)
    assert graph.name == "ConvNet"
    assert acekit.parse(model, (x,), parser="fx").name == "ConvNet"
    with pytest.raises(ParseError, match="no parser called 'nope'.*'fx'"):
        acekit.parse(model, (x,), parser="nope")


def test_fx_parser_does_not_claim_torchscript_modules() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, not gone
        scripted = torch.jit.script(nn.Linear(2, 2))
    assert acekit_fx.acekit_choose_parser(scripted, ()) is None
    assert acekit_fx.acekit_choose_parser(nn.Linear(2, 2), ()) == "fx"
    assert acekit_fx.acekit_choose_parser("model.pt", ()) is None


def test_dict_and_list_outputs_keep_their_structure() -> None:
    class Structured(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, Any]:
            return {"double": x * 2, "parts": [x + 1, (x - 1, x.shape[0])]}

    model = Structured()
    x = torch.randn(2, 3)
    graph = parse(model, x)
    result = graph.to_module()(x)
    assert set(result) == {"double", "parts"}
    assert isinstance(result["parts"], list) and isinstance(result["parts"][1], tuple)
    assert result["parts"][1][1] == 2
    assert_matches(model(x)["double"], result["double"])
