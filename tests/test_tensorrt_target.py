"""The TensorRT target: rules, the QDQ ONNX it writes (INT8, FP8, W4A16), and its checks.

TensorRT itself needs a GPU: the exported files are checked structurally (what TensorRT's
explicit quantization requires) and run in ONNX Runtime, which executes the same Q/DQ
arithmetic; the engine build is tested only where a GPU and the tensorrt package exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

import acekit
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import DeploymentSettings, Settings
from acekit.target import TargetOptionError
from acekit.testing import check_target
from acekit_tensorrt import TensorRTTarget
from acekit_tensorrt.rules import quantization_rules
from acekit_tensorrt.runner import tensorrt_available
from tests.quant_support import SmallCNN, TinyEncoder, ort_session, run_ort, sqnr, trained_like

SHAPE = (2, 3, 32, 32)


class DownsampleBlock(nn.Module):
    """A ResNet block whose shortcut is a strided 1x1 conv: both Add inputs come from convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.down = nn.Sequential(nn.Conv2d(3, 8, 1, stride=2), nn.BatchNorm2d(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.down(x))


def _settings(**options: Any) -> Settings:
    return Settings(
        deployment=DeploymentSettings(target_framework="tensorrt", target_options=options)
    )


def _compile(model: nn.Module, inputs: list[torch.Tensor], logs: Path, **options: Any) -> Any:
    return acekit.compile(
        model,
        settings=_settings(**options),
        example_inputs=(inputs[0],),
        calibration_inputs=inputs,
        logs_dir=str(logs),
    )


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(*SHAPE) for _ in range(4)]


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return trained_like(SmallCNN(), SHAPE)


@pytest.fixture(scope="module")
def int8(
    cnn: nn.Module, images: list[torch.Tensor], tmp_path_factory: pytest.TempPathFactory
) -> tuple[QuantizedModule, onnx.ModelProto, Path]:
    folder = tmp_path_factory.mktemp("trt")
    qm = _compile(cnn, images, folder)
    path = qm.export(folder / "model.onnx")
    return qm, onnx.load(str(path)), path


class _Lookup:
    """Producers, readers and initializers of an ONNX graph by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.types = {i.name: i.data_type for i in model.graph.initializer}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def from_dq(self, name: str) -> bool:
        node = self.producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    def of_type(self, op: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type == op]


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def test_rules_are_signed_symmetric_and_per_channel() -> None:
    rules = quantization_rules({})
    assert rules.activation.signed and rules.activation.symmetric
    assert rules.weight.signed and rules.weight.symmetric and rules.weight.bits == 8
    assert rules.ops["conv2d"].weight_axis == 0 and not rules.ops["conv2d"].output
    assert rules.ops["conv_transpose2d"].weight_axis == 1
    assert rules.ops["matmul"].activations == (0, 1)
    assert "conv2d" in rules.ops["add"].epilogue_of
    assert not {"softmax", "layer_norm", "gelu"} & set(rules.ops)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "int8"}, "precision"),
        ({"mode": "int16"}, "int16"),
        ({"mode": "fp8", "opset": 17}, "opset 17 is too old for mode 'fp8'"),
        ({"mode": "int4_weight_only", "opset": 19}, "needs opset >= 21"),
        ({"opset": "17"}, "must be an integer"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TargetOptionError, match=message):
        quantization_rules(options)


def test_bad_options_fail_when_settings_are_built() -> None:
    with pytest.raises(ValueError, match="opset 17 is too old for mode 'fp8'"):
        _settings(mode="fp8", opset=17)


def test_int8_export_has_the_form_tensorrt_fuses(
    int8: tuple[QuantizedModule, onnx.ModelProto, Path],
) -> None:
    _, model, _ = int8
    onnx.checker.check_model(model, full_check=True)
    graph = _Lookup(model)
    assert not graph.of_type("Min") and not graph.of_type("Max") and not graph.of_type("Identity")
    for node in graph.of_type("QuantizeLinear") + graph.of_type("DequantizeLinear"):
        zero = node.input[2]
        assert graph.types[zero] == TensorProto.INT8 and not graph.initializers[zero].any()
        assert node.input[1] in graph.initializers  # scales are constants
    for node in graph.of_type("Conv") + graph.of_type("Gemm"):
        assert graph.from_dq(node.input[0]) and graph.from_dq(node.input[1]), node.name
        weight_dq = graph.producer[node.input[1]]
        weight = weight_dq.input[0]
        assert graph.types[weight] == TensorProto.INT8  # int8 initializer, no runtime Q
        assert graph.initializers[weight].min() >= -127
        assert _axis(weight_dq) == 0
        assert graph.initializers[weight_dq.input[1]].shape == (
            graph.initializers[weight].shape[0],
        )
        assert graph.types[node.input[2]] == TensorProto.FLOAT  # bias stays float
        # No output quantization: Conv -> ReLU -> next op's input Q, never Conv -> Q.
        assert all(r.op_type != "QuantizeLinear" for r in graph.readers.get(node.output[0], []))


def test_residual_add_quantizes_only_the_shortcut(
    int8: tuple[QuantizedModule, onnx.ModelProto, Path],
) -> None:
    _, model, _ = int8
    graph = _Lookup(model)
    (add,) = graph.of_type("Add")
    from_dq = [graph.from_dq(name) for name in add.input]
    from_conv = [graph.producer[name].op_type == "Conv" for name in add.input]
    assert sorted(from_dq) == [False, True]
    assert from_conv == [not q for q in from_dq]


def test_downsample_shortcut_is_quantized_and_the_main_branch_fuses(
    images: list[torch.Tensor], tmp_path: Path
) -> None:
    model = trained_like(DownsampleBlock(), SHAPE)
    qm = _compile(model, images, tmp_path)
    graph = _Lookup(onnx.load(str(qm.export(tmp_path / "block.onnx"))))
    (add,) = graph.of_type("Add")
    main, shortcut = add.input
    assert graph.producer[main].op_type == "Conv"  # conv2: the deeper input, fused
    dq = graph.producer[shortcut]
    assert dq.op_type == "DequantizeLinear"
    quantized = graph.producer[graph.producer[dq.input[0]].input[0]]
    assert quantized.op_type == "Conv" and quantized.input[1] != graph.producer[main].input[1]


def test_int8_runs_in_onnxruntime_and_matches_the_module(
    int8: tuple[QuantizedModule, onnx.ModelProto, Path],
) -> None:
    qm, _, path = int8
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        expected = qm(x)
    actual = TensorRTTarget().load(path, engine="onnxruntime")(x)[0]
    step = float((expected.max() - expected.min()) / 255)
    within = float(((actual - expected).abs() <= step + 1e-6).float().mean())
    assert within >= 0.99, within


def test_attention_matmuls_take_quantized_inputs_and_norms_stay_float(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    data = [torch.randn(1, 10, 32) for _ in range(4)]
    qm = _compile(model, data, tmp_path)
    path = qm.export(tmp_path / "encoder.onnx")
    graph = _Lookup(onnx.load(str(path)))
    matmuls = graph.of_type("MatMul") + graph.of_type("Gemm")
    assert len(matmuls) >= 6  # 4 projections/MLP + head, 2 attention matmuls
    for node in matmuls:
        assert graph.from_dq(node.input[0]) and graph.from_dq(node.input[1]), node.name
    for op in ("Softmax", "LayerNormalization", "ReduceMean", "Erf"):
        for node in graph.of_type(op):
            assert not graph.from_dq(node.input[0]), node.name
    x = data[0]
    with torch.no_grad():
        assert sqnr(qm(x), run_ort(ort_session(path), x)) > 25


def test_fp8_export_uses_e4m3_and_runs(
    cnn: nn.Module, images: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile(cnn, images, tmp_path, mode="fp8", opset=19)
    path = qm.export(tmp_path / "fp8.onnx")
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 19
    graph = _Lookup(model)
    pairs = graph.of_type("QuantizeLinear") + graph.of_type("DequantizeLinear")
    assert pairs and all(graph.types[n.input[2]] == TensorProto.FLOAT8E4M3FN for n in pairs)
    for node in graph.of_type("Conv") + graph.of_type("Gemm"):
        assert graph.from_dq(node.input[0]) and graph.from_dq(node.input[1])
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert sqnr(cnn(x), run_ort(ort_session(path), x)) > 10


def test_int4_weight_only_quantizes_linear_weights_in_blocks(
    cnn: nn.Module, images: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile(cnn, images, tmp_path, mode="int4_weight_only", opset=21)
    path = qm.export(tmp_path / "w4a16.onnx")
    graph = _Lookup(onnx.load(str(path)))
    assert not graph.of_type("QuantizeLinear")  # activations stay float
    (dq,) = graph.of_type("DequantizeLinear")
    assert graph.types[dq.input[0]] == TensorProto.INT4
    assert {a.name for a in dq.attribute} == {"axis", "block_size"}
    assert graph.producer[graph.of_type("Gemm")[0].input[1]] is dq
    for conv in graph.of_type("Conv"):
        assert not graph.from_dq(conv.input[1])
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert sqnr(qm(x), run_ort(ort_session(path), x)) > 60


def test_engine_without_a_gpu_says_what_to_install(
    int8: tuple[QuantizedModule, onnx.ModelProto, Path],
) -> None:
    if tensorrt_available():
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(ImportError, match=r"pip install 'acekit\[tensorrt\]'"):
        TensorRTTarget().load(int8[2], engine="tensorrt")


@pytest.mark.skipif(not tensorrt_available(), reason="needs an NVIDIA GPU and tensorrt")
def test_tensorrt_builds_an_int8_engine_that_matches(
    int8: tuple[QuantizedModule, onnx.ModelProto, Path],
) -> None:
    qm, _, path = int8
    runner = TensorRTTarget().load(path, engine="tensorrt")
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        expected = qm(x)
    actual = runner(x)[0].cpu()
    assert np.isfinite(actual.numpy()).all()
    assert sqnr(expected, actual) > 25


@pytest.mark.parametrize(
    "options", [{}, {"mode": "int4_weight_only"}], ids=["int8", "int4_weight_only"]
)
def test_tensorrt_target_passes_the_conformance_kit(
    options: dict[str, Any], tmp_path: Path
) -> None:
    report = check_target("tensorrt", tmp_path, options=options)
    assert report.quantized_ops > 0 and report.max_step_error <= 1.0


@pytest.mark.slow
def test_seed_flow_vit_b_16_through_the_clika_backend_exports_for_tensorrt(
    tmp_path: Path,
) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)
    data = [torch.randn(1, 3, 224, 224) for _ in range(2)]
    options = {"settings": _settings(), "calibration_inputs": data, "logs_dir": str(tmp_path)}
    compiled = torch.compile(model, backend="clika", options=options)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = compiled(x)
    path = compiled.export(tmp_path / "vit.onnx")
    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto, full_check=True)
    graph = _Lookup(model_proto)
    matmuls = graph.of_type("MatMul") + graph.of_type("Gemm")
    assert len(matmuls) >= 12 * 6  # per layer: qkv, two attention matmuls, out, two MLP
    assert all(graph.from_dq(n.input[0]) and graph.from_dq(n.input[1]) for n in matmuls)
    for op in ("Softmax", "LayerNormalization"):
        assert graph.of_type(op)
        assert not any(graph.from_dq(n.input[0]) for n in graph.of_type(op))
    assert sqnr(expected, run_ort(ort_session(path), x)) > 25
