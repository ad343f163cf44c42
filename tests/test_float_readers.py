"""Float readers of a quantized tensor (a post-norm residual add) read it unrounded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import acekit
from acekit.ir.graph import Graph
from tests.algorithm_support import assert_deploys_like_simulation, compile_with
from tests.quant_support import SmallCNN, op_counts, ort_session, trained_like

SHAPE = (4, 6, 32)


class PostNormBlock(nn.Module):
    """A BERT-style post-norm MLP block: the LayerNorm output feeds the MLP and the residual."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.down = nn.Linear(2 * dim, dim)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.out_norm(h + self.down(torch.relu(self.up(h))))


def _quantized_values(graph: Graph) -> list[acekit.ir.Value]:
    return [
        v
        for n in graph.nodes
        for v in n.outputs
        if v.quant is not None and not v.quant.skip and n.op != "parameter"
    ]


def test_the_residual_add_reads_the_unrounded_layer_norm_output(tmp_path: Path) -> None:
    model = trained_like(PostNormBlock(), SHAPE)
    data = [torch.randn(*SHAPE, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    qm = compile_with(model, data, "cleanup,ptq", tmp_path)
    (norm,) = [n for n in qm.graph.nodes if n.name == "norm"]
    (add,) = [n for n in qm.graph.nodes if n.op == "add"]
    (up,) = [n for n in qm.graph.nodes if n.name == "up"]
    assert norm.outputs[0].quant is None
    assert norm.outputs[0] in add.inputs
    twin = up.inputs[0]
    assert twin.producer is not None and twin.producer.op == "identity"
    assert twin.producer.inputs[0] is norm.outputs[0]
    assert twin.quant is not None and twin.quant.scale is not None
    # Every quantized activation is read only by ops that run it quantized.
    for value in _quantized_values(qm.graph):
        assert {u.op for u in value.users} <= {"linear", "matmul"}, value
    log = next(tmp_path.rglob("*.log")).read_text()
    assert "tensors are quantized only for their integer readers" in log
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(9))
    assert_deploys_like_simulation(qm, x, tmp_path)
    # ONNX Runtime drops the identity: the deployed graph is the same size.
    optimized = tmp_path / "optimized.onnx"
    ort_session(qm.export(tmp_path / "block.onnx", overwrite=True), optimized)
    counts = op_counts(optimized)
    assert counts["Identity"] == 0 and counts["QuantizeLinear"] == 2, counts


def test_a_fused_conv_output_keeps_one_quantized_tensor(tmp_path: Path) -> None:
    """``DQ -> Conv -> Relu -> Q`` fuses only with one Q: outputs are never split."""
    model = trained_like(SmallCNN(), (2, 3, 32, 32))
    data = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    qm = compile_with(model, data, "cleanup,ptq", tmp_path)
    assert not [n for n in qm.graph.nodes if n.op == "identity"]
    optimized = tmp_path / "optimized.onnx"
    ort_session(qm.export(tmp_path / "cnn.onnx"), optimized)
    assert op_counts(optimized)["QLinearConv"] == 3
