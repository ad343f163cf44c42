"""The OpenVINO target: rules, IR and ONNX export, running in OpenVINO, missing package."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from torch import nn

import acekit
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import DeploymentSettings, Settings
from acekit.target import TargetOptionError
from acekit.testing import check_target
from acekit_openvino import OpenVINOTarget
from acekit_openvino.export import OpenVINOExportError
from acekit_openvino.rules import quantization_rules
from acekit_openvino.runtime import OpenVINONotInstalledError
from tests.quant_support import SmallCNN, TinyEncoder, sqnr, trained_like

pytest.importorskip("openvino")

SHAPE = (2, 3, 32, 32)


def _compile(model: nn.Module, inputs: list[torch.Tensor], logs: Path) -> Any:
    return acekit.compile(
        model,
        settings=Settings(deployment=DeploymentSettings(target_framework="openvino")),
        example_inputs=(inputs[0],),
        calibration_inputs=inputs,
        logs_dir=str(logs),
    )


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(*SHAPE) for _ in range(4)]


@pytest.fixture(scope="module")
def compiled(
    images: list[torch.Tensor], tmp_path_factory: pytest.TempPathFactory
) -> QuantizedModule:
    return _compile(trained_like(SmallCNN(), SHAPE), images, tmp_path_factory.mktemp("ov"))


def test_rules_are_u8_activations_and_s8_symmetric_per_channel_weights() -> None:
    rules = quantization_rules({})
    assert not rules.activation.signed and rules.activation.bits == 8
    assert rules.weight.signed and rules.weight.symmetric and rules.weight.qmin == -127
    assert rules.ops["conv2d"].output and rules.ops["matmul"].activations == (0, 1)
    assert not {"softmax", "layer_norm", "gelu"} & set(rules.ops)
    # Only a residual Add (one input computed by a conv) reads quantized inputs.
    assert "conv2d" in rules.ops["add"].epilogue_of


def test_unknown_option_is_named() -> None:
    with pytest.raises(TargetOptionError, match="mode"):
        quantization_rules({"mode": "fp8"})
    with pytest.raises(TargetOptionError, match="opset"):
        quantization_rules({"opset": 9})


def test_ir_has_int8_weights_and_runs_every_layer_in_u8(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    xml = compiled.export(tmp_path / "model.xml")
    assert xml.with_suffix(".bin").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]
    layers = ET.parse(xml).getroot().find("layers")
    assert layers is not None
    types = [
        data.get("element_type")
        for layer in layers
        if layer.get("type") == "Const" and (data := layer.find("data")) is not None
    ]
    assert types.count("i8") == 4  # three conv weights and the linear weight
    assert "f16" not in types
    fake_quantize = [layer for layer in layers if layer.get("type") == "FakeQuantize"]
    assert fake_quantize
    runner = OpenVINOTarget().load(xml, precision="f32")
    assert runner.linear_precisions() == {("Convolution", "u8"): 3, ("FullyConnected", "u8"): 1}
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert sqnr(compiled(x), runner(x)[0]) > 35


def test_onnx_export_runs_in_openvino(compiled: QuantizedModule, tmp_path: Path) -> None:
    path = compiled.export(tmp_path / "model.onnx")
    runner = OpenVINOTarget().load(path)
    assert all(precision == "u8" for _, precision in runner.linear_precisions())
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert sqnr(compiled(x), runner(x)[0]) > 35


def test_weights_have_no_zero_point_input(compiled: QuantizedModule, tmp_path: Path) -> None:
    # OpenVINO turns a weight zero point (even all 0) into a Subtract and may then run the
    # layer in bf16; symmetric weights are written without it (ONNX's default is 0).
    model = onnx.load(str(compiled.export(tmp_path / "model.onnx")))
    weights = {init.name for init in model.graph.initializer}
    weight_dqs = [
        node
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in weights
    ]
    assert weight_dqs and all(len(node.input) == 2 for node in weight_dqs)


class TwoBlocks(nn.Module):
    """A stem and two ResNet basic blocks: block 1's output feeds block 2's conv and Add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(4))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for first, second in zip(self.convs[::2], self.convs[1::2], strict=True):
            x = torch.relu(x + second(torch.relu(first(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_a_block_output_has_one_quantizer_for_the_next_conv_and_add(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [torch.randn(*SHAPE) for _ in range(4)]
    qm = _compile(TwoBlocks().eval(), data, tmp_path)
    # Every residual Add reads both inputs quantized, and the shortcut shares the
    # quantizer of the conv that reads the same block output (as NNCF places it).
    adds = [node for node in qm.graph.nodes if node.op == "add"]
    assert len(adds) == 2
    for add in adds:
        assert all(value.quant is not None for value in add.inputs), add.name
    assert not [node for node in qm.graph.nodes if node.name.endswith("_quantized")]
    runner = OpenVINOTarget().load(qm.export(tmp_path / "blocks.xml"), precision="f32")
    # Read unrounded, the shortcut got a dequantize of its own that OpenVINO ran as a
    # bf16 snippet Subgraph beside the int8 convolutions.
    executed = runner.executed_precisions()
    assert executed[("Convolution", "u8")] == 5, executed
    assert not [key for key in executed if key[0] == "Subgraph" and key[1] == "bf16"], executed
    x = data[0]
    with torch.no_grad():
        assert sqnr(qm(x), runner(x)[0]) > 30


def test_attention_matmuls_run_in_u8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    data = [torch.randn(1, 10, 32) for _ in range(4)]
    qm = _compile(model, data, tmp_path)
    runner = OpenVINOTarget().load(qm.export(tmp_path / "encoder.xml"), precision="f32")
    precisions = runner.linear_precisions()
    assert precisions and all(p in ("u8", "i8") for _, p in precisions), precisions
    # q, k and v are quantized once, above the split of the packed in-projection (as NNCF
    # places them): OpenVINO then runs no FakeQuantize on its own after the split.
    passthrough = quantization_rules({}).passthrough
    splits = [node for node in qm.graph.nodes if node.op == "unbind"]
    assert splits and all(out.quant is None for s in splits for out in s.outputs)
    for split in splits:
        value = split.inputs[0]
        while value.producer is not None and value.producer.op in passthrough:
            assert value.quant is None
            value = value.producer.inputs[0]
        assert value.quant is not None and value.producer is not None
        assert value.producer.op == "linear"
    x = data[0]
    with torch.no_grad():
        assert sqnr(qm(x), runner(x)[0]) > 25


def test_unknown_suffix_is_refused_before_writing(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    with pytest.raises(OpenVINOExportError, match=r"writes IR to a \.xml path"):
        compiled.export(tmp_path / "model.bin")
    assert not list(tmp_path.iterdir())


def test_missing_openvino_says_what_to_install(
    compiled: QuantizedModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert "openvino" in acekit.plugin.get_registry().targets
    with pytest.raises(OpenVINONotInstalledError, match=r"pip install 'acekit\[openvino\]'"):
        compiled.export(tmp_path / "model.xml")
    assert not list(tmp_path.iterdir())
    # The QDQ ONNX needs no OpenVINO to be written; running it does, and says so.
    onnx_path = compiled.export(tmp_path / "model.onnx")
    assert onnx_path.exists()
    with pytest.raises(OpenVINONotInstalledError, match=r"pip install 'acekit\[openvino\]'"):
        OpenVINOTarget().load(onnx_path)


def test_openvino_target_passes_the_conformance_kit(tmp_path: Path) -> None:
    # QDQ ONNX: the kit counts any second file as left behind, and IR has its .bin.
    report = check_target("openvino", tmp_path, suffix=".onnx")
    assert report.integer_ops is not None and report.integer_ops >= report.quantized_ops > 0
