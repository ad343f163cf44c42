"""acekit.compile end to end: PTQ for ONNX Runtime, export, picture, save and load."""

from __future__ import annotations

import copy
import html
from pathlib import Path
from typing import Any

import pytest
import torch

import acekit
from acekit.fileio import OutputPathError
from acekit.quant.data import CalibrationDataError
from acekit.runtime.quantized import QuantizedModule, QuantizedModuleFileError
from acekit.settings import GlobalQuantizationSettings, LayerQuantizationSettings, Settings
from tests.quant_support import (
    FLOAT_COMPUTE_OPS,
    SmallCNN,
    TinyEncoder,
    op_counts,
    ort_session,
    run_ort,
    sqnr,
    trained_like,
)

SHAPE = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    return trained_like(SmallCNN(), SHAPE)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def calibration() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(*SHAPE) for _ in range(4)]


@pytest.fixture(scope="module")
def compiled(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path_factory: pytest.TempPathFactory
) -> QuantizedModule:
    logs = tmp_path_factory.mktemp("logs")
    return acekit.compile(
        cnn,
        example_inputs=(calibration[0],),
        calibration_inputs=calibration,
        logs_dir=str(logs),
    )


def _compile_cnn(
    cnn: torch.nn.Module, calibration: list[torch.Tensor], logs: Path, **options: Any
) -> QuantizedModule:
    return acekit.compile(
        cnn,
        example_inputs=(calibration[0],),
        calibration_inputs=calibration,
        logs_dir=str(logs),
        **options,
    )


def test_quantized_cnn_is_close_to_float_and_a_module(
    cnn: SmallCNN, compiled: QuantizedModule
) -> None:
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert sqnr(cnn(x), compiled(x)) > 25
    assert isinstance(compiled, torch.nn.Module)
    specs = [v.quant for n in compiled.graph.nodes for v in n.outputs if v.quant is not None]
    assert specs and all(s.is_calibrated for s in specs)


def test_onnxruntime_runs_every_conv_and_gemm_in_integer_kernels(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    path = compiled.export(tmp_path / "model.onnx")
    optimized = tmp_path / "optimized.onnx"
    session = ort_session(path, optimized)
    counts = op_counts(optimized)
    assert not [op for op in FLOAT_COMPUTE_OPS if counts[op]], counts
    assert counts["QLinearConv"] == 3 and counts["QGemm"] + counts["MatMulIntegerToFloat"] == 1
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        expected = compiled(x)
    actual = run_ort(session, x)
    step = float((expected.max() - expected.min()) / 255)
    within = float(((actual - expected).abs() <= step + 1e-6).float().mean())
    assert within >= 0.99, within


def test_export_refuses_an_existing_file_unless_overwrite(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("keep me")
    with pytest.raises(OutputPathError, match="exists"):
        compiled.export(path)
    assert path.read_text() == "keep me"
    assert compiled.export(path, overwrite=True) == path
    with pytest.raises(OutputPathError, match="does not exist"):
        compiled.export(tmp_path / "missing" / "model.onnx")


def test_a_failing_export_leaves_no_file(
    compiled: QuantizedModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        compiled.export(tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_save_and_load_give_the_same_module(compiled: QuantizedModule, tmp_path: Path) -> None:
    path = compiled.save(tmp_path / "run.acekit")
    loaded = acekit.load(path)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        assert torch.equal(compiled(x), loaded(x))
    assert loaded.settings == compiled.settings


def test_load_names_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "notes.acekit"
    path.write_text("not a model")
    with pytest.raises(QuantizedModuleFileError, match="notes.acekit"):
        acekit.load(path)


def test_visualize_shows_quantization(compiled: QuantizedModule, tmp_path: Path) -> None:
    written = compiled.visualize(tmp_path / "model.svg")
    text = html.unescape(written.read_text())
    assert "u8 per-tensor" in text and "s8 per-channel" in text


def test_the_users_model_is_not_modified(calibration: list[torch.Tensor], tmp_path: Path) -> None:
    model = trained_like(SmallCNN(), SHAPE).train()
    before = copy.deepcopy(model.state_dict())
    acekit.compile(
        model,
        example_inputs=(calibration[0],),
        calibration_inputs=calibration,
        logs_dir=str(tmp_path),
    )
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "source",
    [
        "tensor",
        "tuple",
        "dict",
        "pairs",
    ],
)
def test_calibration_inputs_forms(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path, source: str
) -> None:
    data = {
        "tensor": calibration[0],
        "tuple": (calibration[0],),
        "dict": {"x": calibration[0]},
        "pairs": torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.zeros(8)),
            batch_size=4,
        ),
    }[source]
    qm = acekit.compile(
        cnn, example_inputs=(calibration[0],), calibration_inputs=data, logs_dir=str(tmp_path)
    )
    assert all(
        v.quant.is_calibrated for n in qm.graph.nodes for v in n.outputs if v.quant is not None
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([torch.full(SHAPE, float("nan"))], "NaN"),
        ([torch.full(SHAPE, float("inf"))], "Inf"),
        ([], "empty"),
        ([torch.randn(2, 3, 16)], "shape"),
    ],
)
def test_bad_calibration_data_fails_before_parsing(
    cnn: SmallCNN,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: list[torch.Tensor],
    message: str,
) -> None:
    import acekit.quant.compile as compile_module

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed despite bad data")

    monkeypatch.setattr(compile_module, "parse_as_declared", no_parse)
    with pytest.raises(CalibrationDataError, match=message):
        acekit.compile(
            cnn,
            example_inputs=(torch.randn(*SHAPE),),
            calibration_inputs=data,
            logs_dir=str(tmp_path),
        )


def test_fewer_batches_than_stats_steps_is_logged(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    acekit.compile(
        cnn,
        example_inputs=(calibration[0],),
        calibration_inputs=calibration[:2],
        logs_dir=str(tmp_path),
    )
    log = next(tmp_path.glob("*.log")).read_text()
    assert "stats_steps is 20 but the calibration data gave 2 batches" in log
    assert "Calibrating Model" in log and "Processing Quantization statistics 1/" in log
    assert "Running pipeline: cleanup,ptq" in log
    assert "Quantization: Processed 1/" in log


def test_a_custom_pipeline_runs_and_is_logged(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile_cnn(
        cnn, calibration, tmp_path, pipeline="fold-bn,quantize,calibrate{observer=percentile}"
    )
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Running pipeline: fold-bn,quantize,calibrate{observer=percentile}" in log
    assert not [n for n in qm.graph.nodes if n.op == "batch_norm"]
    assert [n for n in qm.graph.nodes if n.op == "dropout"], "remove-dropout did not run"


def test_skip_settings_keep_layers_in_float(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(layers={"fc": LayerQuantizationSettings(skip_quantization=True)})
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    fc = qm.graph.node("fc")
    weight = fc.inputs[1].quant
    assert weight is not None and weight.skip and "skip_quantization" in weight.reason
    path = qm.export(tmp_path / "model.onnx")
    optimized = tmp_path / "optimized.onnx"
    ort_session(path, optimized)
    counts = op_counts(optimized)
    assert counts["QLinearConv"] == 3 and counts["Gemm"] == 1 and not counts["QGemm"]


def test_skip_tail_keeps_the_head_in_float(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(quantization=GlobalQuantizationSettings(skip_tail_quantization=True))
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    fc = qm.graph.node("fc")
    assert fc.inputs[1].quant is not None and fc.inputs[1].quant.skip
    assert qm.graph.node("conv2").inputs[1].quant is not None
    assert not qm.graph.node("conv2").inputs[1].quant.skip


def test_skip_until_and_downstream(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(layers={"conv1": LayerQuantizationSettings(skip_quantization_until="fc")})
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    skipped = {n.name for n in qm.graph.nodes if n.op in ("conv2d", "linear") and _skipped(n)}
    assert skipped == {"conv1", "conv2"}
    settings = Settings(
        layers={"conv2": LayerQuantizationSettings(skip_quantization_downstream=True)}
    )
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    skipped = {n.name for n in qm.graph.nodes if n.op in ("conv2d", "linear") and _skipped(n)}
    assert skipped == {"conv2", "fc"}


def test_an_unknown_layer_key_is_named(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(layers={"conv9": LayerQuantizationSettings(skip_quantization=True)})
    with pytest.raises(Exception, match="conv9.*did you mean"):
        _compile_cnn(cnn, calibration, tmp_path, settings=settings)


def test_four_bit_weights_use_sixteen_levels(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(
        quantization=GlobalQuantizationSettings(weights_num_bits=4),
        layers={"fc": LayerQuantizationSettings(weights_num_bits=8)},
    )
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    conv = qm.graph.node("conv1").inputs[1]
    assert conv.quant is not None and conv.quant.bits == 4 and conv.quant.qmax == 7
    fc = qm.graph.node("fc").inputs[1]
    assert fc.quant is not None and fc.quant.bits == 8
    path = qm.export(tmp_path / "w4.onnx")
    import onnx
    from onnx import numpy_helper

    weights = {
        init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer
    }
    conv_weight = next(v for k, v in weights.items() if k.startswith("conv1.weight"))
    assert conv_weight.dtype.name == "int8" and abs(conv_weight).max() <= 7


def test_automatic_skip_measures_and_skips_sensitive_layers(
    cnn: SmallCNN, calibration: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(
        quantization=GlobalQuantizationSettings(
            automatic_skip_quantization=True, sensitivity_threshold=1e-9
        )
    )
    qm = _compile_cnn(cnn, calibration, tmp_path, settings=settings)
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Most sensitive layers" in log
    assert "Automatic Quantization: Skipping Quantization for node: 'conv1'" in log
    assert all(_skipped(n) for n in qm.graph.nodes if n.op in ("conv2d", "linear"))


def test_transformer_attention_matmuls_run_in_integer_kernels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    x = torch.randn(1, 10, 32)
    qm = acekit.compile(
        model,
        example_inputs=(x,),
        calibration_inputs=[torch.randn(1, 10, 32) for _ in range(4)],
        logs_dir=str(tmp_path),
    )
    assert not [n for n in qm.graph.nodes if n.op == "multihead_attention"]
    assert len([n for n in qm.graph.nodes if n.op == "matmul"]) == 2
    with torch.no_grad():
        assert sqnr(model(x), qm(x)) > 20
    path = qm.export(tmp_path / "encoder.onnx")
    optimized = tmp_path / "optimized.onnx"
    session = ort_session(path, optimized)
    counts = op_counts(optimized)
    assert not [op for op in FLOAT_COMPUTE_OPS if counts[op]], counts
    with torch.no_grad():
        assert sqnr(qm(x), run_ort(session, x)) > 25


def _skipped(node: acekit.ir.Node) -> bool:
    weight = node.inputs[1].quant
    return weight is not None and weight.skip


def test_bert_encoder_runs_every_matmul_in_integer_kernels(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=500,
    )

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    torch.manual_seed(0)
    model = Encoder().eval()
    ids = torch.randint(0, 500, (1, 16))
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 12:] = 0
    qm = acekit.compile(
        model,
        example_inputs=(ids, mask),
        calibration_inputs=[(torch.randint(0, 500, (1, 16)), mask) for _ in range(3)],
        logs_dir=str(tmp_path),
    )
    assert not [n for n in qm.graph.nodes if n.op == "scaled_dot_product_attention"]
    optimized = tmp_path / "optimized.onnx"
    session = ort_session(qm.export(tmp_path / "encoder.onnx"), optimized)
    counts = op_counts(optimized)
    assert not [op for op in FLOAT_COMPUTE_OPS if counts[op]], counts
    with torch.no_grad():
        reference, simulated = model(ids, mask), qm(ids, mask)
    cosine = torch.nn.functional.cosine_similarity(reference[0, :12], simulated[0, :12], dim=-1)
    assert float(cosine.mean()) > 0.99
    names = [i.name for i in session.get_inputs()]
    deployed = session.run(None, {names[0]: ids.numpy(), names[1]: mask.numpy()})[0]
    assert torch.allclose(simulated, torch.from_numpy(deployed), atol=1e-4)


def test_a_float_layer_between_quantized_ones_is_reported(tmp_path: Path) -> None:
    import onnx

    from acekit_onnxruntime.export import layers_ort_will_quantize

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(8, 4, 3)
    ).eval()
    data = [torch.randn(1, 3, 16, 16) for _ in range(3)]
    settings = Settings(layers={"1": LayerQuantizationSettings(skip_quantization=True)})
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=(data[0],),
        calibration_inputs=data,
        logs_dir=str(tmp_path),
    )
    path = qm.export(tmp_path / "model.onnx")
    assert layers_ort_will_quantize(onnx.load(str(path))) == ["1.weight"]


def test_decomposed_attention_values_have_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 10, 32)
    qm = acekit.compile(
        TinyEncoder().eval(), example_inputs=(x,), calibration_inputs=x, logs_dir=str(tmp_path)
    )
    scores = next(n for n in qm.graph.nodes if n.name.endswith("_scores"))
    assert scores.output.type.shape == ("batch", 4, 10, 10)
