"""Attention for OpenVINO: both inputs of an activation x activation MatMul have zero point 0.

OpenVINO's low-precision transformations fold no activation zero point into an int8
MatMul; with one, the attention ran in bf16 (all-MiniLM-L6-v2). The OpenVINO rules give
the MatMul its own input specs (``OpRule.activation`` / ``OpRule.nonnegative``): q, k and
v signed symmetric, the softmax unsigned from 0.
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import attrs
import onnx
import pytest
import torch
from torch import nn

import acekit
from acekit.ir.quant import Granularity, QuantSpec
from acekit.quant.rules import OpRule, QuantRules
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import DeploymentSettings, Settings
from acekit.target import OnnxGraphView
from acekit.testing import ConformanceError, check_rules
from acekit_openvino import OpenVINOTarget
from acekit_openvino.rules import quantization_rules
from tests.quant_support import sqnr

TOKENS, DIM, HEADS = 16, 32, 4
#: ONNX ops between a tensor's DequantizeLinear and the MatMul reading it (the head split).
MOVES = frozenset({"Reshape", "Transpose"})


class SelfAttention(nn.Module):
    """BERT's eager self-attention (separate q, k, v projections, as all-MiniLM-L6-v2)."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(DIM, DIM) for _ in range(3))
        self.out = nn.Linear(DIM, DIM)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], TOKENS, HEADS, DIM // HEADS).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(DIM // HEADS)
        context = torch.matmul(scores.softmax(-1), v)
        return self.out(context.transpose(1, 2).reshape(x.shape[0], TOKENS, DIM))


def test_an_op_rule_s_own_spec_replaces_the_activation_template() -> None:
    template = QuantSpec(bits=8, signed=False, symmetric=False)
    signed = QuantSpec(bits=8, signed=True, symmetric=True)
    unsigned = QuantSpec(bits=8, signed=False, symmetric=False)
    rules = QuantRules(
        activation=template,
        weight=QuantSpec(granularity=Granularity.PER_CHANNEL, axis=0),
        ops={},
    )
    plain = OpRule(activations=(0,))
    own = OpRule(activations=(0, 1), activation=signed, nonnegative=unsigned)
    only_signed = OpRule(activations=(0, 1), activation=signed)
    assert rules.input_spec(plain, 6) == attrs.evolve(template, bits=6)
    assert rules.input_spec(plain, nonnegative=True) == template
    assert rules.input_spec(own) == signed
    assert rules.input_spec(own, 4) == attrs.evolve(signed, bits=4)
    assert rules.input_spec(own, nonnegative=True) == unsigned
    assert rules.input_spec(only_signed, nonnegative=True) == signed


def test_openvino_matmul_inputs_are_symmetric_or_unsigned_from_zero() -> None:
    rule = quantization_rules({}).ops["matmul"]
    assert rule.activation is not None and rule.nonnegative is not None
    assert rule.activation.signed and rule.activation.symmetric and rule.activation.qmin == -127
    assert not rule.nonnegative.signed and rule.nonnegative.qmin == 0
    # Only the MatMul's inputs: convolutions and linear layers keep u8 with a zero point.
    assert quantization_rules({}).ops["linear"].activation is None


def test_the_kit_checks_an_op_rule_s_own_spec() -> None:
    rules = quantization_rules({})
    bad = attrs.evolve(
        rules.ops["matmul"], activation=QuantSpec(granularity=Granularity.PER_CHANNEL)
    )
    target = types.SimpleNamespace(
        name="ov-bad",
        quantization_rules=lambda options: attrs.evolve(rules, ops={**rules.ops, "matmul": bad}),
    )
    with pytest.raises(ConformanceError, match="op 'matmul' activation spec: per-channel"):
        check_rules(target)


@pytest.fixture(scope="module")
def attention(tmp_path_factory: pytest.TempPathFactory) -> tuple[QuantizedModule, torch.Tensor]:
    torch.manual_seed(0)
    model = SelfAttention().eval()
    data = [torch.randn(1, TOKENS, DIM) for _ in range(4)]
    qm = acekit.compile(
        model,
        settings=Settings(deployment=DeploymentSettings(target_framework="openvino")),
        example_inputs=(data[0],),
        calibration_inputs=data,
        pipeline="cleanup,ptq",
        logs_dir=str(tmp_path_factory.mktemp("logs")),
    )
    return qm, torch.randn(1, TOKENS, DIM)


def test_q_k_v_are_s8_symmetric_and_the_softmax_u8_from_zero(
    attention: tuple[QuantizedModule, torch.Tensor],
) -> None:
    qm, _ = attention
    passthrough = quantization_rules({}).passthrough
    matmuls = [node for node in qm.graph.nodes if node.op == "matmul"]
    assert len(matmuls) == 2
    seen = {}
    for node in matmuls:
        for value in node.inputs:
            while value.producer is not None and value.producer.op in passthrough:
                value = value.producer.inputs[0]
            assert value.producer is not None and value.quant is not None
            seen[value.producer.op, value.name] = value.quant
    assert len(seen) == 4  # q, k, v and the softmax
    for (op, _), spec in seen.items():
        assert spec.zero_point == (0,)
        assert spec.signed == (op != "softmax")
        assert spec.symmetric == (op != "softmax")


def _dequantize(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear tensor ``name`` comes from, through the head split's moves."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in MOVES:
        node = producers.get(node.input[0])
    return node if node is not None and node.op_type == "DequantizeLinear" else None


def test_the_export_has_zero_point_0_on_both_matmul_inputs_and_matches_qm(
    attention: tuple[QuantizedModule, torch.Tensor], tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    qm, x = attention
    path = qm.export(tmp_path / "attention.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    view = OnnxGraphView(model)
    zero_points = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        sources = [_dequantize(model, name) for name in node.input]
        if any(dq is None or view.constant(dq.input[0]) is not None for dq in sources):
            continue  # a Linear layer's MatMul (its weight is an initializer)
        for dq in sources:
            assert dq is not None and len(dq.input) == 3
            zero_point = view.constant(dq.input[2])
            assert zero_point is not None
            zero_points.append(zero_point)
    assert len(zero_points) == 4  # q, k^T; softmax, v
    assert not any(zp.any() for zp in zero_points)
    assert sorted(str(zp.dtype) for zp in zero_points) == ["int8", "int8", "int8", "uint8"]
    for exported in (path, qm.export(tmp_path / "attention.xml")):
        runner = OpenVINOTarget().load(exported)
        with torch.no_grad():
            assert sqnr(qm(x), runner(x)[0]) > 30
        executed = runner.executed_precisions()
        # The attention runs as one snippet Subgraph (CPUs with AMX/VNNI) or as MatMuls;
        # with zero points on its inputs the Subgraph ran bf16 (f32 under an f32 hint).
        attention_ops = {p for (op, p) in executed if op in ("Subgraph", "MatMul")}
        assert attention_ops and attention_ops <= {"i8", "u8"}, executed
        assert all(p in ("u8", "i8") for _, p in runner.linear_precisions()), executed


class SharedInput(nn.Module):
    """One tensor read by a Linear (u8 with a zero point) and by a MatMul (zero point 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(x)
        return self.second(y) + torch.matmul(y, y.transpose(-1, -2)).softmax(-1) @ y


def test_a_tensor_read_by_a_linear_and_a_matmul_is_symmetric(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [torch.randn(1, TOKENS, DIM) for _ in range(2)]
    qm = acekit.compile(
        SharedInput().eval(),
        settings=Settings(deployment=DeploymentSettings(target_framework="openvino")),
        example_inputs=(data[0],),
        calibration_inputs=data,
        pipeline="cleanup,ptq",
        logs_dir=str(tmp_path),
    )
    first = next(node for node in qm.graph.nodes if node.op == "linear")
    spec = first.outputs[0].quant
    assert spec is not None and spec.signed and spec.symmetric and spec.zero_point == (0,)
