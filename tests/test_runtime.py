"""acekit.runtime: the torch module generated from a Graph, and the kernel table."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acekit.ir import Graph, OpSchema, TensorType, load_graph, save_graph
from acekit.ops import FLOAT, OPDEFS, OpDef, unary
from acekit.runtime import (
    CodegenError,
    KernelTable,
    get_kernel,
    has_kernel,
    to_module,
)
from acekit_fx import FxParser
from tests.fx_support import assert_matches, max_diff


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, dropout=0.1)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 3)
        self.register_buffer("offset", torch.full((3,), 0.5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x).flatten(2).transpose(1, 2)
        a, _ = self.attn(y, y, y, need_weights=False)
        y = self.norm(y + a).mean(1)
        return self.head(self.drop(F.gelu(y))) + self.offset


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():  # statistics that are not the defaults, so eval mode matters
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


def parse(model: nn.Module, x: torch.Tensor) -> Graph:
    return FxParser().parse(model, (x,))


def test_generated_module_matches_and_starts_in_eval_mode(net: Net) -> None:
    x = torch.randn(2, 3, 8, 8)
    module = to_module(parse(net, x))
    assert not module.training
    with torch.no_grad():
        assert_matches(net(x), module(x))


def test_backward_gives_the_original_gradients(net: Net) -> None:
    x = torch.randn(2, 3, 8, 8)
    module = parse(net, x).to_module()
    net(x).square().sum().backward()
    module(x).square().sum().backward()
    originals = dict(net.named_parameters())
    generated = dict(module.named_parameters())
    assert set(generated) == set(originals)
    for name, param in generated.items():
        assert param.grad is not None, name
        assert torch.allclose(param.grad, originals[name].grad, atol=1e-5), name  # type: ignore[arg-type]


def test_state_dict_keys_are_the_original_keys_and_load_back(net: Net) -> None:
    x = torch.randn(2, 3, 8, 8)
    module = parse(net, x).to_module()
    assert list(module.state_dict()) == list(net.state_dict()) or set(module.state_dict()) == set(
        net.state_dict()
    )
    assert "offset" not in module.state_dict()  # non-persistent, as in the original
    assert dict(module.named_buffers())["offset"].tolist() == [0.5, 0.5, 0.5]
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.1)
    module.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert_matches(net(x), module(x))


def test_deepcopy_is_independent(net: Net) -> None:
    x = torch.randn(2, 3, 8, 8)
    module = parse(net, x).to_module()
    clone = copy.deepcopy(module)
    with torch.no_grad():
        assert_matches(module(x), clone(x))
        clone.head.weight.zero_()  # type: ignore[union-attr,operator]
        assert max_diff(module(x), clone(x)) > 0


def test_moves_between_devices_and_dtypes(net: Net) -> None:
    x = torch.randn(2, 3, 8, 8)
    module = parse(net, x).to_module()
    on_meta = copy.deepcopy(module).to("meta")
    assert all(t.device.type == "meta" for t in on_meta.state_dict().values())
    assert on_meta(x.to("meta")).shape == (2, 3)
    doubled = copy.deepcopy(module).to(torch.float64)
    with torch.no_grad():
        assert_matches(net(x), doubled(x.double()).float())
    if torch.cuda.is_available():  # pragma: no cover - exercised on machines with a GPU
        on_gpu = copy.deepcopy(module).cuda()
        with torch.no_grad():
            assert_matches(net(x), on_gpu(x.cuda()).cpu())


def test_train_mode_runs_dropout_and_updates_batch_norm(net: Net) -> None:
    x = torch.randn(4, 3, 8, 8)
    module = parse(net, x).to_module().train()
    bn = module.get_submodule("features.1")
    before = bn.running_mean.clone()
    counted = int(bn.num_batches_tracked)
    torch.manual_seed(1)
    first = module(x)
    second = module(x)
    assert max_diff(first, second) > 0  # dropout draws new masks
    assert not torch.equal(bn.running_mean, before)
    assert int(bn.num_batches_tracked) == counted + 2
    net.train()
    torch.manual_seed(1)
    expected = net(x)
    module.load_state_dict(net.state_dict())
    module.eval()
    net.eval()
    with torch.no_grad():
        assert_matches(net(x), module(x))
    assert expected.shape == first.shape


def test_saved_and_loaded_graph_generates_the_same_module(net: Net, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    graph = parse(net, x)
    path = save_graph(graph, tmp_path / "net.acekit")
    loaded = load_graph(path)
    assert str(loaded) == str(graph)
    with torch.no_grad():
        assert_matches(net(x), loaded.to_module()(x))


def scale_by(input: torch.Tensor, *, factor: float) -> torch.Tensor:
    """The kernel of the test op ``scale_by`` (module level: generated modules pickle)."""
    return input * factor


def test_defined_ops_run_their_own_kernels() -> None:
    OPDEFS.register(OpDef(unary("scale_by", factor=FLOAT), kernel=scale_by))
    try:
        graph = Graph("Scaled")
        x = graph.add_input("x", TensorType(torch.float32, (2,)))
        node = graph.add_node("scale_by", [x], {"factor": 3.0}, name="scaled")
        graph.set_outputs([node.output])
        graph.verify()
        module = graph.to_module()
        assert module(torch.ones(2)).tolist() == [3.0, 3.0]
        assert has_kernel("scale_by") and KernelTable()["scale_by"] is scale_by
        with pytest.raises(ValueError, match="already defined"):
            OPDEFS.register(OpDef(unary("scale_by"), kernel=scale_by))
    finally:
        OPDEFS.unregister("scale_by")
    with pytest.raises(CodegenError, match="no kernel is registered for op 'scale_by'"):
        graph.to_module()


def test_every_core_op_has_a_kernel() -> None:
    from acekit.ir import OPS

    structural = {"input", "output", "parameter", "constant"}
    missing = [op for op in OPS if op not in structural and not has_kernel(op)]
    assert missing == []
    assert get_kernel("dropout").uses_training
    assert isinstance(OpSchema("x"), OpSchema)


def test_outputs_rebuild_their_structure() -> None:
    graph = Graph("Pair")
    x = graph.add_input("x", TensorType(torch.float32, (2,)))
    double = graph.add_node("add", [x, x], name="double")
    node = graph.set_outputs([x, double.output])
    node.attrs["structure"] = ("dict", (("x", 0), ("pair", ("tuple", (1, ("const", 7))))))
    graph.verify()
    result = graph.to_module()(torch.ones(2))
    assert result["x"].tolist() == [1.0, 1.0]
    assert result["pair"][0].tolist() == [2.0, 2.0] and result["pair"][1] == 7
