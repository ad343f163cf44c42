"""The IR: building, rewriting, verifying, printing and saving graphs."""

from __future__ import annotations

import pytest
import torch

from acekit.ir import (
    OPS,
    AttrSpec,
    Granularity,
    Graph,
    GraphError,
    GraphFileError,
    OpSchema,
    QuantSpec,
    TensorType,
    VerificationError,
    load_graph,
    save_graph,
)
from tests.ir_builders import F32, vit_like_graph
from tests.step_counting import interpreter_steps


def small_graph() -> Graph:
    graph = Graph("Net")
    x = graph.add_input("x", TensorType(F32, ("batch", 3, 8, 8)), subgraph="Net")
    w = graph.add_parameter("conv.weight", torch.randn(4, 3, 3, 3), subgraph="Net/conv")
    conv = graph.add_node(
        "conv2d",
        [x, w],
        {"stride": (1, 1), "padding": (1, 1), "groups": 1},
        name="conv",
        subgraph="Net/conv",
        types=[TensorType(F32, ("batch", 4, 8, 8))],
    )
    relu = graph.add_node("relu", [conv.output], name="relu", subgraph="Net")
    graph.set_outputs([relu.output])
    return graph


def test_hand_built_graph_of_hundreds_of_nodes_verifies_with_subgraph_paths() -> None:
    graph = vit_like_graph(blocks=12)
    assert len(graph) > 300
    graph.verify()
    linear = graph.node("encoder_layers_encoder_layer_3_self_attention")
    assert linear.subgraph == "VisionTransformer/encoder/layers/encoder_layer_3/self_attention"
    assert "encoder.layers.encoder_layer_3.self_attention.weight" in graph.tensors


def test_printer_is_stable_and_names_subgraphs() -> None:
    assert str(small_graph()) == str(small_graph())
    assert str(small_graph()) == (
        "graph Net {\n"
        "  %x = input() {index=0} : f32[batch,3,8,8]  # Net\n"
        "  %conv.weight = parameter() {ref='conv.weight', trainable=True} : f32[4,3,3,3]"
        "  # Net/conv\n"
        "  %conv = conv2d(%x, %conv.weight) {groups=1, padding=(1, 1), stride=(1, 1)}"
        " : f32[batch,4,8,8]  # Net/conv\n"
        "  %relu = relu(%conv) : ?[*]  # Net\n"
        "  output(%relu)\n"
        "}"
    )


def test_insert_before_and_after_keep_topological_order() -> None:
    graph = small_graph()
    conv, relu = graph.node("conv"), graph.node("relu")
    clamp = graph.add_node("relu6", [conv.output], name="clamp", after=conv)
    assert conv.next is clamp and clamp.next is relu
    assert graph.replace_all_uses(conv.output, clamp.output) == 1
    assert clamp.inputs == (conv.output,)
    graph.verify()
    assert [n.name for n in graph.nodes] == ["x", "conv.weight", "conv", "clamp", "relu", "output"]
    with pytest.raises(GraphError, match="defined later"):
        graph.add_node("relu", [relu.output], before=conv)


def test_replace_all_uses_moves_every_reader() -> None:
    graph = small_graph()
    x = graph.value("x")
    ident = graph.add_node("identity", [x], name="ident", after=x.producer)
    moved = graph.replace_all_uses(x, ident.output)
    assert moved == 1
    assert [u.node.name for u in ident.output.uses] == ["conv"]
    with pytest.raises(GraphError, match="defined after"):
        graph.replace_all_uses(graph.value("conv.weight"), graph.value("relu"))


def test_erase_refuses_nodes_that_are_still_read_then_removes() -> None:
    graph = small_graph()
    conv = graph.node("conv")
    with pytest.raises(GraphError, match="read by relu"):
        graph.erase(conv)
    relu = graph.node("relu")
    graph.replace_all_uses(relu.output, conv.output)
    graph.erase(relu)
    graph.verify()
    assert not graph.has_node("relu")
    assert graph.outputs == [conv.output]


def test_erasing_a_parameter_node_drops_its_tensor() -> None:
    graph = Graph("g")
    p = graph.add_parameter("w", torch.ones(2))
    graph.set_outputs([])
    graph.erase(p.producer)  # type: ignore[arg-type]
    assert "w" not in graph.tensors


def test_erasing_a_parameter_keeps_a_tensor_other_nodes_read() -> None:
    graph = Graph("g")
    p = graph.add_parameter("w", torch.ones(2))
    twin = graph.add_node("parameter", attrs={"ref": "w", "trainable": False}, name="twin")
    const = graph.add_node("constant", attrs={"ref": "w"}, name="const")
    graph.set_outputs([])
    graph.erase(p.producer)  # type: ignore[arg-type]
    assert "w" in graph.tensors  # twin and const still read it
    graph.erase(const)
    assert "w" in graph.tensors
    graph.erase(twin)
    assert "w" not in graph.tensors


def test_erasing_parameters_costs_the_same_however_large_the_graph() -> None:
    # The last reader of a tensor is known from a count, not by scanning the graph:
    # erasing n parameter nodes is O(n), not O(n^2).
    def steps_per_erase(n: int) -> float:
        graph = Graph("g")
        values = [graph.add_parameter(f"w{i}", torch.zeros(1)) for i in range(n)]
        graph.set_outputs([])

        def erase_all() -> None:
            for value in values:
                graph.erase(value.producer)  # type: ignore[arg-type]

        steps = interpreter_steps(erase_all)
        assert not graph.tensors
        return steps / n

    small, large = steps_per_erase(100), steps_per_erase(2000)
    # A scan of the graph per erase would make each erase ~20x dearer in the larger graph.
    assert large <= small * 1.2, (small, large)


def test_many_inserts_between_two_nodes_renumber_order_keys() -> None:
    graph = small_graph()
    conv = graph.node("conv")
    anchor = conv
    for _ in range(64):  # halves the key gap each time: forces renumbering
        anchor = graph.add_node("identity", [conv.output], after=conv)
    graph.verify()
    assert conv.is_before(anchor)


def test_verifier_lists_every_problem_with_node_and_subgraph() -> None:
    graph = small_graph()
    conv = graph.node("conv")
    conv.attrs["stride"] = "two"
    conv.attrs["bogus"] = 1
    graph.value("conv.weight").quant = QuantSpec(granularity=Granularity.PER_CHANNEL, axis=9)
    with pytest.raises(VerificationError) as caught:
        graph.verify()
    message = str(caught.value)
    assert "'conv' (conv2d, Subgraph: 'Net/conv')" in message
    assert "attribute 'stride' must be ints" in message
    assert "unknown attribute 'bogus'" in message
    assert "axis 9 is out of range" in message
    assert len(caught.value.problems) == 3


def test_verifier_finds_unknown_ops_missing_tensors_and_missing_output() -> None:
    graph = Graph("g")
    x = graph.add_input("x")
    graph.add_node("frobnicate", [x])
    p = graph.add_parameter("w", torch.ones(1))
    del graph.tensors["w"]
    assert p.producer is not None
    with pytest.raises(VerificationError) as caught:
        graph.verify()
    text = str(caught.value)
    assert "op 'frobnicate' is not in the schema table" in text
    assert "tensor 'w' is not held by the graph" in text
    assert "expected exactly one output node, found 0" in text


def test_verifier_checks_input_counts_against_schema() -> None:
    graph = Graph("g")
    x = graph.add_input("x")
    graph.set_outputs([graph.add_node("add", [x]).output])
    with pytest.raises(VerificationError, match="takes 2 inputs"):
        graph.verify()


def test_plugins_extend_the_op_table() -> None:
    table = OPS.copy()
    table.register(OpSchema("my_op", ("input",), {"alpha": AttrSpec("float", required=True)}))
    graph = Graph("g")
    x = graph.add_input("x")
    graph.set_outputs([graph.add_node("my_op", [x], {"alpha": 0.5}).output])
    graph.verify(table)
    with pytest.raises(VerificationError, match="my_op"):
        graph.verify()
    with pytest.raises(ValueError, match="already"):
        table.register(OpSchema("my_op"))


def test_quant_spec_ranges_and_consistency() -> None:
    s8 = QuantSpec(bits=8, signed=True, symmetric=True)
    assert (s8.qmin, s8.qmax) == (-127, 127)
    u8 = QuantSpec(bits=8, signed=False, symmetric=False, scale=[0.1], zero_point=[3])
    assert (u8.qmin, u8.qmax) == (0, 255)
    assert u8.problems() == []
    assert QuantSpec(scale=[0.1, 0.2], zero_point=[0, 0]).problems() == [
        "2 scales given, 1 expected"
    ]
    assert QuantSpec.skipped("sensitive").problems() == []
    assert str(QuantSpec.skipped("sensitive")) == "skip(sensitive)"


def test_save_load_round_trip_is_lossless(tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph = vit_like_graph(blocks=2)
    graph.value("x").quant = QuantSpec(
        bits=8, signed=False, symmetric=False, scale=[0.02], zero_point=[128]
    )
    graph.node("encoder_layers_encoder_layer_0_ln_1").source_location = "model.py:12"
    path = save_graph(graph, tmp_path / "g.acekit")
    loaded = load_graph(path)
    loaded.verify()
    assert str(loaded) == str(graph)
    assert loaded.node("encoder_layers_encoder_layer_0_ln_1").source_location == "model.py:12"
    assert loaded.value("x").quant == graph.value("x").quant
    assert loaded.tensors.keys() == graph.tensors.keys()
    for key, tensor in graph.tensors.items():
        assert torch.equal(loaded.tensors[key], tensor)
    # The loaded graph is rewritable like a fresh one.
    loaded.add_node("relu", [loaded.value("x")])


def test_load_rejects_files_that_are_not_graphs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "bogus.acekit"
    bogus.write_bytes(b"not a graph")
    with pytest.raises(GraphFileError, match="bogus.acekit"):
        load_graph(bogus)
    torch.save({"format": "other"}, tmp_path / "other.acekit")
    with pytest.raises(GraphFileError, match="not an acekit graph"):
        load_graph(tmp_path / "other.acekit")


def test_tensor_type_accepts_symbolic_dims_and_rejects_garbage() -> None:
    t = TensorType(F32, ("batch", 3, 224, 224))
    assert t.rank == 4 and str(t) == "f32[batch,3,224,224]"
    assert TensorType.of(torch.zeros(2, 3, dtype=torch.int64)) == TensorType(torch.int64, (2, 3))
    with pytest.raises(TypeError):
        TensorType(F32, (1.5,))  # type: ignore[arg-type]
