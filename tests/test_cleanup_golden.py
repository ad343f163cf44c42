"""Golden text-IR tests of the cleanup passes on small hand-built graphs."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from acekit.ir import Graph, Node
from acekit.passes import Pass, Pipeline
from acekit_cleanup import (
    CLEANUP_PRESET,
    EliminateCommonSubexpressions,
    FoldBatchNorm,
    FoldConstants,
    RemoveDropout,
    RemoveUnused,
    RemoveUseless,
)
from tests.cleanup_graphs import I64, Builder, t
from tests.step_counting import interpreter_steps


def golden(text: str) -> str:
    """An expected printout written as an indented block."""
    return textwrap.dedent(text).strip("\n")


def run(pass_: Pass, graph: Graph) -> dict[str, int | float]:
    """Run ``pass_``, verify its output and return its stats."""
    result = pass_(graph)
    assert result.graph is graph
    graph.verify()
    return dict(result.stats)


# -- remove-dropout ------------------------------------------------------------------------


def dropout_graph() -> Graph:
    """x -> dropout(training=True) -> relu -> dropout."""
    b = Builder()
    x = b.input("x", t(1, 4))
    d1 = b.op("dropout", x, name="drop", subgraph="Net/drop", type_=t(1, 4), p=0.1, training=True)
    r = b.op("relu", d1, name="relu", type_=t(1, 4))
    d2 = b.op("dropout", r, name="drop_1", subgraph="Net/drop_1", type_=t(1, 4), p=0.5)
    return b.done([d2])


def test_remove_dropout_golden(caplog: pytest.LogCaptureFixture) -> None:
    graph = dropout_graph()
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[1,4]  # Net
          %drop = dropout(%x) {p=0.1, training=True} : f32[1,4]  # Net/drop
          %relu = relu(%drop) : f32[1,4]  # Net
          %drop_1 = dropout(%relu) {p=0.5} : f32[1,4]  # Net/drop_1
          output(%drop_1)
        }
        """
    )
    with caplog.at_level(logging.INFO, logger="acekit"):
        stats = run(RemoveDropout(), graph)
    assert stats == {"removed": 2, "attention_zeroed": 0}
    assert "Removed 2 Dropout layers" in caplog.messages
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[1,4]  # Net
          %relu = relu(%x) : f32[1,4]  # Net
          output(%relu)
        }
        """
    )
    assert run(RemoveDropout(), graph)["removed"] == 0


def test_remove_dropout_zeroes_attention_dropout_unless_told_not_to() -> None:
    def build() -> Graph:
        b = Builder()
        q = b.input("q", t(1, 2, 3, 4))
        attn = b.op(
            "scaled_dot_product_attention",
            q,
            q,
            q,
            name="sdpa",
            type_=t(1, 2, 3, 4),
            dropout_p=0.1,
        )
        return b.done([attn])

    graph = build()
    assert run(RemoveDropout(), graph) == {"removed": 0, "attention_zeroed": 1}
    assert graph.node("sdpa").attrs["dropout_p"] == 0.0
    graph = build()
    assert run(RemoveDropout(attention_dropout=False), graph)["attention_zeroed"] == 0
    assert graph.node("sdpa").attrs["dropout_p"] == 0.1


def test_pass_options_are_validated() -> None:
    with pytest.raises(TypeError):
        RemoveDropout(attention_dropout="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FoldBatchNorm(include_training=1)  # type: ignore[arg-type]


# -- remove-unused ---------------------------------------------------------------------------


def test_remove_unused_golden(caplog: pytest.LogCaptureFixture) -> None:
    b = Builder()
    x = b.input("x", t(1, 4))
    unused_input = b.input("y", t(1, 4))
    w = b.param("fc.weight", torch.ones(4, 4))
    dead_w = b.param("dead.weight", torch.ones(4, 4))
    b.op("linear", x, dead_w, name="dead", type_=t(1, 4))
    dead_chain = b.op("relu", unused_input, name="dead_relu", type_=t(1, 4))
    b.op("gelu", dead_chain, name="dead_gelu", type_=t(1, 4))
    out = b.op("linear", x, w, name="fc", subgraph="Net/fc", type_=t(1, 4))
    graph = b.done([out])
    assert "dead.weight" in graph.tensors

    with caplog.at_level(logging.INFO, logger="acekit"):
        assert run(RemoveUnused(), graph) == {"removed": 4}
    assert "Removed 4 unnecessary nodes" in caplog.messages
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[1,4]  # Net
          %y = input() {index=1} : f32[1,4]  # Net
          %fc.weight = parameter() {ref='fc.weight', trainable=True} : f32[4,4]  # Net/fc
          %fc = linear(%x, %fc.weight) : f32[1,4]  # Net/fc
          output(%fc)
        }
        """
    )
    assert "dead.weight" not in graph.tensors
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="acekit"):
        assert run(RemoveUnused(), graph) == {"removed": 0}
    assert not caplog.messages


# -- remove-useless --------------------------------------------------------------------------


def useless_graph() -> Graph:
    """A chain of nodes that change nothing, between two that do."""
    b = Builder()
    x = b.input("x", t(1, 4))
    n = b.input("n", t(dtype=I64))
    zero = b.const(0, t(dtype=I64), name="zero")
    one = b.const(1.0, t(), name="one")
    b.graph.tensors["zeros"] = torch.zeros(2, 4)
    zeros = b.graph.add_node("constant", attrs={"ref": "zeros"}, name="zeros", types=[t(2, 4)])
    a = b.op("add", x, zero, name="add", type_=t(1, 4))
    m = b.op("mul", one, a, name="mul", type_=t(1, 4))
    broadcast = b.op("add", m, zeros.output, name="add_broadcast", type_=t(2, 4))
    i = b.op("identity", broadcast, name="identity", type_=t(2, 4))
    c = b.op("contiguous", i, name="contiguous", type_=t(2, 4))
    r = b.op("reshape", c, name="reshape", type_=t(2, 4), shape=(2, 4))
    r = b.op("reshape", r, name="reshape_1", type_=t(4, 1, 2), shape=(4, 1, 2))
    p = b.op("permute", r, name="permute", type_=t(4, 1, 2), dims=(0, 1, 2))
    p = b.op("permute", p, name="permute_1", type_=t(4, 2, 1), dims=(0, 2, 1))
    p = b.op("transpose", p, name="transpose", type_=t(4, 2, 1), dim0=-1, dim1=-1)
    p = b.op("transpose", p, name="transpose_1", type_=t(2, 4, 1), dim0=0, dim1=1)
    promoted = b.op("add", n, b.const(0.0, t(), name="zero_f"), name="add_promotes", type_=t())
    b.node("assert", b.const(True, name="true"), name="assert", num_outputs=0)
    b.node("assert", b.const(False, name="false"), name="assert_1", num_outputs=0)
    return b.done([p, promoted])


def test_remove_useless_golden(caplog: pytest.LogCaptureFixture) -> None:
    graph = useless_graph()
    with caplog.at_level(logging.INFO, logger="acekit"):
        stats = run(RemoveUseless(), graph)
    # add, mul, identity, contiguous, reshape, permute, transpose and assert(True): 8
    # bypassed, and the constants 0, 1.0 and True only they read went with them.
    assert stats == {"removed": 11, "bypassed": 8}
    assert "Removed 11 unnecessary nodes" in caplog.messages
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[1,4]  # Net
          %n = input() {index=1} : i64[]  # Net
          %zeros = constant() {ref='zeros'} : f32[2,4]
          %add_broadcast = add(%x, %zeros) : f32[2,4]  # Net
          %reshape_1 = reshape(%add_broadcast) {shape=(4, 1, 2)} : f32[4,1,2]  # Net
          %permute_1 = permute(%reshape_1) {dims=(0, 2, 1)} : f32[4,2,1]  # Net
          %transpose_1 = transpose(%permute_1) {dim0=0, dim1=1} : f32[2,4,1]  # Net
          %zero_f = constant() {value=0.0} : f32[]
          %add_promotes = add(%n, %zero_f) : f32[]  # Net
          %false = constant() {value=False} : ?[*]
          assert(%false)  # Net
          output(%transpose_1, %add_promotes)
        }
        """
    )


def test_remove_useless_moves_only_size_one_axes_and_keeps_unknown_shapes() -> None:
    b = Builder()
    x = b.input("x", t(4, 1, 1))
    sym = b.input("s", t("batch", 4))
    p = b.op("permute", x, name="swap_ones", type_=t(4, 1, 1), dims=(0, 2, 1))
    p = b.op("permute", p, name="to_front", type_=t(1, 4, 1), dims=(1, 0, 2))
    r = b.op("reshape", sym, name="sym_reshape", type_=t("batch", 4), shape=(-1, 4))
    graph = b.done([p, r])
    assert run(RemoveUseless(), graph) == {"removed": 1, "bypassed": 1}
    assert [n.name for n in graph.nodes] == ["x", "s", "to_front", "sym_reshape", "output"]
    assert graph.node("to_front").inputs[0].name == "x"


def test_remove_useless_collapses_reshape_chains_and_undone_permutes() -> None:
    b = Builder()
    x = b.input("x", t(2, 4, 3))
    flat = b.op("flatten", x, name="flatten", type_=t(2, 12), start_dim=1)
    back = b.op("reshape", flat, name="reshape", type_=t(2, 4, 3), shape=(2, 4, 3))
    moved = b.op("permute", back, name="permute", type_=t(3, 2, 4), dims=(2, 0, 1))
    undone = b.op("permute", moved, name="permute_1", type_=t(2, 4, 3), dims=(1, 2, 0))
    swapped = b.op("transpose", undone, name="transpose", type_=t(2, 3, 4), dim0=1, dim1=2)
    kept = b.op("relu", swapped, name="relu", type_=t(2, 3, 4))
    other = b.op("reshape", swapped, name="reshape_1", type_=t(6, 4), shape=(6, 4))
    graph = b.done([kept, other])
    assert run(RemoveUseless(), graph) == {"removed": 4, "bypassed": 3}
    # flatten and the permute pair went; the transpose, still read by relu, stays and
    # reshape_1 keeps reading it (a transpose is not a pure reshape).
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[2,4,3]  # Net
          %transpose = transpose(%x) {dim0=1, dim1=2} : f32[2,3,4]  # Net
          %relu = relu(%transpose) : f32[2,3,4]  # Net
          %reshape_1 = reshape(%transpose) {shape=(6, 4)} : f32[6,4]  # Net
          output(%relu, %reshape_1)
        }
        """
    )


def test_remove_unused_keeps_effects() -> None:
    b = Builder()
    x = b.input("x", t(1))
    condition = b.op("gt", x, b.const(0.0, t(), name="zero"), name="gt", type_=t(dtype=torch.bool))
    b.node("assert", condition, name="assert", num_outputs=0, message="x must be positive")
    graph = b.done([x])
    assert run(RemoveUnused(), graph) == {"removed": 0}
    assert [n.name for n in graph.nodes] == ["x", "zero", "gt", "assert", "output"]


# -- cse -----------------------------------------------------------------------------------


def cse_graph() -> Graph:
    """Duplicate reshapes and muls, near-equal constants, dropouts, equal weights."""
    b = Builder()
    x = b.input("x", t(2, 4))
    w1 = b.param("a.weight", torch.ones(4, 4))
    w2 = b.param("b.weight", torch.ones(4, 4))
    one_i = b.const(1, t(dtype=I64), name="one")
    one_f = b.const(1.0, t(), name="one_f")
    one_b = b.const(True, name="true")
    one_i2 = b.const(1, t(dtype=I64), name="one_1")
    s1 = b.op("reshape", x, name="r1", type_=t(8), shape=(8,))
    s2 = b.op("reshape", x, name="r2", type_=t(8), shape=(8,))
    m1 = b.op("mul", s1, one_i, name="m1", type_=t(8))
    m2 = b.op("mul", s2, one_i2, name="m2", type_=t(8))
    m3 = b.op("mul", s2, one_f, name="m3", type_=t(8))
    d1 = b.op("dropout", x, name="d1", type_=t(2, 4), p=0.5)
    d2 = b.op("dropout", x, name="d2", type_=t(2, 4), p=0.5)
    l1 = b.op("linear", x, w1, name="l1", type_=t(2, 4))
    l2 = b.op("linear", x, w2, name="l2", type_=t(2, 4))
    return b.done([m1, m2, m3, one_b, d1, d2, l1, l2])


def test_cse_golden(caplog: pytest.LogCaptureFixture) -> None:
    graph = cse_graph()
    with caplog.at_level(logging.INFO, logger="acekit"):
        assert run(EliminateCommonSubexpressions(), graph) == {"removed": 3}
    assert "Removed 3 unnecessary nodes" in caplog.messages
    # 1, 1.0 and True stay apart; dropouts (random) and equal parameters never merge.
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[2,4]  # Net
          %a.weight = parameter() {ref='a.weight', trainable=True} : f32[4,4]  # Net/a
          %b.weight = parameter() {ref='b.weight', trainable=True} : f32[4,4]  # Net/b
          %one = constant() {value=1} : i64[]
          %one_f = constant() {value=1.0} : f32[]
          %true = constant() {value=True} : ?[*]
          %r1 = reshape(%x) {shape=(8,)} : f32[8]  # Net
          %m1 = mul(%r1, %one) : f32[8]  # Net
          %m3 = mul(%r1, %one_f) : f32[8]  # Net
          %d1 = dropout(%x) {p=0.5} : f32[2,4]  # Net
          %d2 = dropout(%x) {p=0.5} : f32[2,4]  # Net
          %l1 = linear(%x, %a.weight) : f32[2,4]  # Net
          %l2 = linear(%x, %b.weight) : f32[2,4]  # Net
          output(%m1, %m1, %m3, %true, %d1, %d2, %l1, %l2)
        }
        """
    )


@pytest.mark.parametrize("op", ["stochastic_depth", "dropout2d", "dropout"])
def test_cse_never_merges_random_ops(op: str) -> None:
    # Two equal stochastic_depth nodes draw their own noise in training: merging them
    # would make both drop the same rows.
    attrs: dict[str, Any] = {"p": 0.2, "mode": "row"} if op == "stochastic_depth" else {"p": 0.2}
    b = Builder()
    x = b.input("x", t(2, 4))
    first = b.op(op, x, name="first", type_=t(2, 4), **attrs)
    second = b.op(op, x, name="second", type_=t(2, 4), **attrs)
    graph = b.done([first, second])
    assert run(EliminateCommonSubexpressions(), graph) == {"removed": 0}
    assert [n.name for n in graph.nodes if n.op == op] == ["first", "second"]


def test_cse_merges_tensor_constants_by_bits() -> None:
    b = Builder()
    x = b.input("x", t(2))
    tensors = {
        "k0": torch.tensor([1.0, 2.0]),
        "k1": torch.tensor([1.0, 2.0]),
        "k2": torch.tensor([-0.0, 2.0]),
        "k3": torch.tensor([0.0, 2.0]),
    }
    outs = []
    for ref, tensor in tensors.items():
        b.graph.tensors[ref] = tensor
        k = b.graph.add_node("constant", attrs={"ref": ref}, name=ref, types=[t(2)]).output
        outs.append(b.op("add", x, k, name=f"add_{ref}", type_=t(2)))
    graph = b.done(outs)
    assert run(EliminateCommonSubexpressions(), graph) == {"removed": 2}
    assert sorted(graph.tensors) == ["k0", "k2", "k3"]
    assert [n.name for n in graph.nodes if n.op == "add"] == ["add_k0", "add_k2", "add_k3"]


# -- fold-bn ---------------------------------------------------------------------------------


def conv_bn_graph(
    *,
    conv_bias: bool,
    training: bool = False,
    second_reader: bool = False,
    batch: int | str = 1,
    rank_check: bool = False,
) -> Graph:
    """conv2d -> batch_norm -> relu with random weights and statistics.

    ``rank_check`` adds what timm's ``BatchNormAct2d`` parses to: an assert that the
    conv's output has rank 4 (``dim -> eq -> assert``).
    """
    torch.manual_seed(0)
    b = Builder("M")
    x = b.input("x", t(batch, 3, 5, 5))
    w = b.param("conv.weight", torch.randn(4, 3, 3, 3))
    inputs = [x, w]
    if conv_bias:
        inputs.append(b.param("conv.bias", torch.randn(4)))
    gamma = b.param("bn.weight", torch.rand(4) + 0.5)
    beta = b.param("bn.bias", torch.randn(4))
    mean = b.param("bn.running_mean", torch.randn(4), trainable=False)
    var = b.param("bn.running_var", torch.rand(4) + 0.5, trainable=False)
    conv = b.op(
        "conv2d",
        *inputs,
        name="conv",
        subgraph="M/conv",
        type_=t(batch, 4, 3, 3),
        stride=(1, 1),
        padding=(0, 0),
        dilation=(1, 1),
        groups=1,
    )
    if rank_check:
        rank = b.op("dim", conv, name="dim", type_=t(dtype=I64))
        four = b.const(4, t(dtype=I64), name="four")
        is_4d = b.op("eq", rank, four, name="eq", type_=t(dtype=torch.bool))
        b.node("assert", is_4d, name="assert", num_outputs=0, message="expected 4D input")
    bn = b.op(
        "batch_norm",
        conv,
        gamma,
        beta,
        mean,
        var,
        name="bn",
        subgraph="M/bn",
        type_=t(batch, 4, 3, 3),
        eps=1e-5,
        momentum=0.1,
        training=training,
    )
    out = b.op("relu", bn, name="relu", type_=t(batch, 4, 3, 3))
    outputs = [out, conv] if second_reader else [out]
    return b.done(outputs)


def evaluate_conv_bn(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """Run the conv -> (bn) -> relu graphs above with torch.nn.functional."""
    values: dict[str, torch.Tensor] = {"x": x}
    for node in graph.nodes:
        ins = [values[v.name] for v in node.inputs]
        if node.op == "parameter":
            values[node.name] = graph.tensors[node.attrs["ref"]]
        elif node.op == "conv2d":
            values[node.name] = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None)
        elif node.op == "batch_norm":
            values[node.name] = F.batch_norm(
                ins[0], ins[3], ins[4], ins[1], ins[2], eps=node.attrs["eps"]
            )
        elif node.op == "relu":
            values[node.name] = F.relu(ins[0])
        elif node.op == "output":
            return ins[0]
    raise AssertionError("no output")


def test_fold_bn_golden_conv_without_bias(caplog: pytest.LogCaptureFixture) -> None:
    graph = conv_bn_graph(conv_bias=False)
    x = torch.randn(1, 3, 5, 5)
    expected = evaluate_conv_bn(graph, x)
    original_weight = graph.tensors["conv.weight"].clone()
    with caplog.at_level(logging.INFO, logger="acekit"):
        assert run(FoldBatchNorm(), graph) == {"folded": 1, "removed": 4}
    assert "Folded 1 BatchNorm layers" in caplog.messages
    assert str(graph) == golden(
        """
        graph M {
          %x = input() {index=0} : f32[1,3,5,5]  # M
          %conv.weight = parameter() {ref='conv.weight', trainable=True} : f32[4,3,3,3]  # M/conv
          %conv.bias = parameter() {ref='conv.bias', trainable=True} : f32[4]  # M/conv
          %conv = conv2d(%x, %conv.weight, %conv.bias) {dilation=(1, 1), groups=1, padding=(0, 0), stride=(1, 1)} : f32[1,4,3,3]  # M/conv
          %relu = relu(%conv) : f32[1,4,3,3]  # M
          output(%relu)
        }
        """  # noqa: E501
    )
    assert sorted(graph.tensors) == ["conv.bias", "conv.weight"]
    torch.testing.assert_close(evaluate_conv_bn(graph, x), expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(graph.tensors["conv.weight"], original_weight)


def test_fold_bn_with_conv_bias_keeps_parameter_names() -> None:
    graph = conv_bn_graph(conv_bias=True)
    x = torch.randn(1, 3, 5, 5)
    expected = evaluate_conv_bn(graph, x)
    assert run(FoldBatchNorm(), graph) == {"folded": 1, "removed": 5}
    assert [n.name for n in graph.nodes] == [
        "x",
        "conv.weight",
        "conv.bias",
        "conv",
        "relu",
        "output",
    ]
    torch.testing.assert_close(evaluate_conv_bn(graph, x), expected, atol=1e-5, rtol=1e-5)


def test_fold_bn_leaves_training_bn_and_shared_results() -> None:
    graph = conv_bn_graph(conv_bias=False, training=True)
    before = str(graph)
    assert run(FoldBatchNorm(), graph) == {"folded": 0, "removed": 0}
    assert str(graph) == before
    assert run(FoldBatchNorm(include_training=True), graph)["folded"] == 1

    graph = conv_bn_graph(conv_bias=False, second_reader=True)
    before = str(graph)
    assert run(FoldBatchNorm(), graph)["folded"] == 0
    assert str(graph) == before


def test_a_rank_check_on_a_free_batch_folds_away_and_lets_bn_fold() -> None:
    # The rank does not depend on the free batch size: the check must not keep a second
    # reader on the conv's output (efficientnetv2 kept 107 BatchNorms unfolded).
    graph = conv_bn_graph(conv_bias=False, batch="batch", rank_check=True)
    x = torch.randn(3, 3, 5, 5)
    with torch.no_grad():
        expected = graph.to_module().eval()(x)
    Pipeline.from_spec("cleanup").run(graph, verify=True)
    assert {node.op for node in graph.nodes} == {"input", "parameter", "conv2d", "relu", "output"}
    with torch.no_grad():
        torch.testing.assert_close(graph.to_module().eval()(x), expected)


def test_fold_bn_into_linear_and_shared_weight() -> None:
    torch.manual_seed(1)
    b = Builder("M")
    x = b.input("x", t(2, 3))
    w = b.param("fc.weight", torch.randn(4, 3))
    gamma = b.param("bn.weight", torch.rand(4) + 0.5)
    beta = b.param("bn.bias", torch.randn(4))
    mean = b.param("bn.running_mean", torch.randn(4), trainable=False)
    var = b.param("bn.running_var", torch.rand(4) + 0.5, trainable=False)
    fc = b.op("linear", x, w, name="fc", subgraph="M/fc", type_=t(2, 4))
    bn = b.op("batch_norm", fc, gamma, beta, mean, var, name="bn", type_=t(2, 4), eps=1e-3)
    tied = b.op("linear", x, w, name="tied", subgraph="M/tied", type_=t(2, 4))
    graph = b.done([bn, tied])
    inputs = torch.randn(2, 3)
    tensors = dict(graph.tensors)
    expected = F.batch_norm(
        F.linear(inputs, tensors["fc.weight"]),
        tensors["bn.running_mean"],
        tensors["bn.running_var"],
        tensors["bn.weight"],
        tensors["bn.bias"],
        eps=1e-3,
    )
    assert run(FoldBatchNorm(), graph)["folded"] == 1
    fc_node = graph.node("fc")
    weight_node, bias_node = (v.producer for v in fc_node.inputs[1:])
    assert weight_node is not None and bias_node is not None
    # The tied weight is still read by `tied`, so `fc` got parameters of its own.
    assert weight_node.name == "fc.weight_1" and bias_node.name == "fc.bias"
    assert weight_node.subgraph == "M/fc"
    assert graph.node("tied").inputs[1].name == "fc.weight"
    folded = F.linear(inputs, graph.tensors["fc.weight_1"], graph.tensors["fc.bias"])
    torch.testing.assert_close(folded, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_fold_bn_into_conv1d_runs_the_same_in_the_generated_module(affine: bool) -> None:
    torch.manual_seed(2)
    b = Builder("M")
    x = b.input("x", t(2, 3, 7))
    w = b.param("conv.weight", torch.randn(5, 3, 3))
    if affine:
        gamma, beta = b.param("bn.weight", torch.rand(5) + 0.5), b.param("bn.bias", torch.randn(5))
    else:
        gamma = beta = b.const(None, name="none")
    mean = b.param("bn.running_mean", torch.randn(5), trainable=False)
    var = b.param("bn.running_var", torch.rand(5) + 0.5, trainable=False)
    conv = b.op("conv1d", x, w, name="conv", type_=t(2, 5, 5))
    bn = b.op("batch_norm", conv, gamma, beta, mean, var, name="bn", type_=t(2, 5, 5))
    graph = b.done([bn])
    inputs = torch.randn(2, 3, 7)
    with torch.no_grad():
        expected = graph.to_module().eval()(inputs)
        assert run(FoldBatchNorm(), graph)["folded"] == 1
        actual = graph.to_module().eval()(inputs)
    assert [n.op for n in graph.nodes] == ["input", "parameter", "parameter", "conv1d", "output"]
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# -- registration, preset and cost ---------------------------------------------------------


def test_plugin_registers_passes_and_cleanup_preset() -> None:
    from acekit.plugin import get_registry

    registry = get_registry()
    for name in (
        "fold-constants",
        "remove-useless",
        "remove-unused",
        "remove-dropout",
        "cse",
        "fold-bn",
    ):
        assert name in registry.passes
    assert registry.presets["cleanup"] == CLEANUP_PRESET
    pipeline = Pipeline.from_spec("cleanup,fold-bn{include_training=true}")
    assert pipeline.spec() == "cleanup,fold-bn{include_training=true}"
    assert [p.name for p in pipeline.flatten()] == [*CLEANUP_PRESET.split(","), "fold-bn"]


def _chain(op: str, length: int) -> Graph:
    """``x`` through ``length`` nodes of ``op``."""
    b = Builder()
    value = b.input("x", t(1, 4))
    for _ in range(length):
        value = b.op(op, value, type_=t(1, 4))
    b.graph.set_outputs([value])
    return b.graph


@pytest.mark.parametrize(
    ("op", "make"),
    [("dropout", RemoveDropout), ("identity", RemoveUseless), ("relu", RemoveUnused)],
)
def test_erasing_many_nodes_is_linear(
    op: str, make: Callable[[], Pass], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fresh(length: int) -> Graph:
        graph = _chain(op, length)
        if op == "relu":
            graph.set_outputs([graph.inputs[0]])
        return graph

    # Deterministic: the pass walks the node list a bounded number of times, never once
    # per erased node.
    visited = 0
    walk = vars(Graph)["nodes"].fget
    assert walk is not None

    def counting(graph: Graph) -> Iterator[Node]:
        nonlocal visited
        for node in walk(graph):
            visited += 1
            yield node

    graph = fresh(2_000)
    monkeypatch.setattr(Graph, "nodes", property(counting))
    make()(graph)
    monkeypatch.undo()
    assert len(graph) == 2
    assert visited <= 4 * 2_002

    # And the work per node stays flat: 16x the nodes, about 16x the steps (a scan per
    # erased node would make it 256x). Counted, not timed, so load cannot fail it.
    def steps_per_node(length: int) -> float:
        graph = fresh(length)
        return interpreter_steps(lambda: make()(graph)) / length

    small, large = steps_per_node(250), steps_per_node(4_000)
    assert large < 2 * small, (small, large)


# -- fold-constants --------------------------------------------------------------------------


def shape_arithmetic_graph(batch: int | str = 1) -> Graph:
    """What ``n, c, h, w = x.shape; assert h == 8; x.reshape(n, 3, h * w)`` parses to."""
    b = Builder()
    x = b.input("x", t(batch, 3, 8, 8))
    weight = b.param("scale.weight", torch.ones(3))
    buffer = b.param("shift.offset", torch.full((3,), 0.5), trainable=False)
    shape = b.op("shape", x, name="shape", type_=t(4, dtype=I64))
    n = b.op("gather", shape, name="gather", type_=t(dtype=I64), index=0)
    h = b.op("gather", shape, name="gather_1", type_=t(dtype=I64), index=2)
    w = b.op("gather", shape, name="gather_2", type_=t(dtype=I64), index=3)
    eight = b.const(8, t(dtype=I64), name="eight")
    eq = b.op("eq", h, eight, name="eq", type_=t(dtype=torch.bool))
    b.node("assert", eq, name="assert", num_outputs=0, message="Wrong image height!")
    hw = b.op("mul", h, w, name="mul", type_=t(dtype=I64))
    size = b.op("pack", n, hw, name="pack", type_=t(3, dtype=I64), values=(None, 3, None))
    reshaped = b.op("reshape", x, size, name="reshape", type_=t(batch, 3, 64))
    scaled = b.op("mul", weight, b.const(2.0, t(), name="two"), name="mul_1", type_=t(3))
    shifted = b.op("add", buffer, b.const(1.0, t(), name="one"), name="add", type_=t(3))
    return b.done([reshaped, scaled, shifted])


def test_fold_constants_golden_static_shapes(caplog: pytest.LogCaptureFixture) -> None:
    graph = shape_arithmetic_graph()
    with caplog.at_level(logging.INFO, logger="acekit"):
        stats = run(FoldConstants(), graph)
    # shape, 3 gathers, eq, mul, pack, add and the assert (proven) folded away.
    assert stats == {"folded": 9, "constants": 2, "inlined": 1, "removed": 11}
    assert "Removed 11 unnecessary nodes" in caplog.messages
    # The trainable weight stays a parameter; the buffer's arithmetic became a constant.
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[1,3,8,8]  # Net
          %scale.weight = parameter() {ref='scale.weight', trainable=True} : f32[3]  # Net/scale
          %reshape = reshape(%x) {shape=(1, 3, 64)} : f32[1,3,64]  # Net
          %two = constant() {value=2.0} : f32[]
          %mul_1 = mul(%scale.weight, %two) : f32[3]  # Net
          %constant_1 = constant() {ref='folded_constants.constant_1'} : f32[3]  # Net; from add
          output(%reshape, %mul_1, %constant_1)
        }
        """
    )
    assert sorted(graph.tensors) == ["folded_constants.constant_1", "scale.weight"]
    torch.testing.assert_close(graph.tensors["folded_constants.constant_1"], torch.full((3,), 1.5))
    assert run(FoldConstants(), graph)["removed"] == 0


def test_fold_constants_keeps_an_assert_that_always_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = shape_arithmetic_graph()
    graph.node("eight").attrs["value"] = 9
    with caplog.at_level(logging.INFO, logger="acekit"):
        run(FoldConstants(), graph)
    assert graph.node("assert").inputs[0].producer.attrs == {"value": False}  # type: ignore[union-attr]
    assert any("always fails" in message for message in caplog.messages)


def test_fold_constants_with_symbolic_batch_folds_static_dims_only() -> None:
    graph = shape_arithmetic_graph(batch="batch")
    assert run(FoldConstants(), graph)["folded"] == 6
    assert str(graph) == golden(
        """
        graph Net {
          %x = input() {index=0} : f32[batch,3,8,8]  # Net
          %scale.weight = parameter() {ref='scale.weight', trainable=True} : f32[3]  # Net/scale
          %shape = shape(%x) : i64[4]  # Net
          %gather = gather(%shape) {index=0} : i64[]  # Net
          %pack = pack(%gather) {values=(None, 3, 64)} : i64[3]  # Net
          %reshape = reshape(%x, %pack) : f32[batch,3,64]  # Net
          %two = constant() {value=2.0} : f32[]
          %mul_1 = mul(%scale.weight, %two) : f32[3]  # Net
          %constant_1 = constant() {ref='folded_constants.constant_1'} : f32[3]  # Net; from add
          output(%reshape, %mul_1, %constant_1)
        }
        """
    )


def test_fold_constants_options() -> None:
    graph = shape_arithmetic_graph()
    stats = run(FoldConstants(fold_buffers=False, static_shapes=False), graph)
    assert stats == {"folded": 0, "constants": 0, "inlined": 0, "removed": 0}
    graph = shape_arithmetic_graph()
    run(FoldConstants(max_elements=2), graph)
    assert graph.node("add").op == "add"  # its 3-element result is over the cap
    with pytest.raises(ValueError):
        FoldConstants(max_elements=-1)
    assert Pipeline.from_spec("fold-constants{max_elements=16}").flatten() == [
        FoldConstants(max_elements=16)
    ]
