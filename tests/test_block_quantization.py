"""Group-wise (block) weight scales: the math, GPTQ with groups, TensorRT's W4A16 blocks,
ONNX Runtime's ``block_size`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import TensorProto
from torch import nn

import acekit
from acekit.ir.serialize import graph_from_dict, graph_to_dict
from acekit.quant import qmath
from acekit.settings import (
    DeploymentSettings,
    GlobalQuantizationSettings,
    Settings,
    SettingsError,
    TrainingSettings,
)
from acekit_tensorrt import TensorRTTarget
from tests.quant_support import ort_session, run_ort

BLOCK = 128


def test_block_quantization_is_per_channel_quantization_of_each_block() -> None:
    weight = torch.randn(6, 3 * BLOCK)
    low, high = qmath.block_range(weight, 0, BLOCK)
    scale, zero = qmath.qparams_from_range(low, high, bits=4, signed=True, symmetric=True)
    assert scale.shape == (6 * 3,)
    blocked = qmath.fake_quantize_exact(weight, scale, zero, -7, 7, axis=0, block_size=BLOCK)
    # The same as quantizing every [1, BLOCK] slice with its own per-channel scale.
    rows = weight.reshape(-1, BLOCK)
    low_r, high_r = rows.amin(1), rows.amax(1)
    scale_r, zero_r = qmath.qparams_from_range(low_r, high_r, bits=4, signed=True, symmetric=True)
    expected = qmath.fake_quantize_exact(rows, scale_r, zero_r, -7, 7, axis=0).reshape(6, -1)
    torch.testing.assert_close(blocked, expected, rtol=0, atol=0)
    # A short last block: ONNX's blocked DequantizeLinear semantics (element i, block i // B).
    short = qmath.expand_blocks(torch.arange(4.0), (2, 5), 0, 3)
    assert short.tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 3, 3]]


class Mlp(nn.Module):
    """Two linear layers with inputs wide enough for 128-blocks (K = 256 and 384)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(256, 384)
        self.fc2 = nn.Linear(384, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _settings(steps: int = 4, **options: Any) -> Settings:
    return Settings(
        training=TrainingSettings(stats_steps=steps),
        deployment=DeploymentSettings(
            target_framework="tensorrt", target_options={"mode": "int4_weight_only", **options}
        ),
    )


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    torch.manual_seed(3)
    return Mlp().eval()


@pytest.fixture(scope="module")
def data() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    # Correlated inputs (a shared low-rank part): GPTQ's Hessian has structure to use.
    mix = torch.randn(16, 256, generator=generator)
    return [
        torch.randn(128, 16, generator=generator) @ mix
        + 0.1 * torch.randn(128, 256, generator=generator)
        for _ in range(4)
    ]


def _compile(model: nn.Module, data: list[torch.Tensor], logs: Path, **kwargs: Any) -> Any:
    return acekit.compile(
        model,
        settings=_settings(),
        example_inputs=(data[0],),
        calibration_inputs=data,
        logs_dir=str(logs),
        **kwargs,
    )


def _weights(qm: Any) -> dict[str, tuple[Any, torch.Tensor]]:
    found = {}
    for node in qm.graph.nodes:
        if node.op == "linear":
            value = node.inputs[1]
            found[node.name] = (value.quant, qm.graph.tensors[str(value.producer.attrs["ref"])])
    return found


@pytest.mark.parametrize("shape", [(8, 256), (2, 5, 256)], ids=["gemm", "matmul"])
def test_tensorrt_w4a16_writes_128_blocks_along_k_that_onnxruntime_runs_like_qm(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path, shape: tuple[int, ...]
) -> None:
    inputs = [d[: shape[0] * (shape[1] if len(shape) == 3 else 1)].reshape(shape) for d in data]
    qm = _compile(mlp, inputs, tmp_path)
    for spec, weight in _weights(qm).values():
        assert spec.block_size == BLOCK and spec.bits == 4
        assert len(spec.scale) == weight.shape[0] * weight.shape[1] // BLOCK
    path = qm.export(tmp_path / "w4a16.onnx")
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 21
    initializers = {i.name: i for i in model.graph.initializer}
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 2 and not [n for n in model.graph.node if n.op_type == "Reshape"]
    for dq in dqs:
        attributes = {a.name: a.i for a in dq.attribute}
        assert attributes["block_size"] == BLOCK
        weight, scale, zero = (initializers[name] for name in dq.input)
        assert weight.data_type == TensorProto.INT4 and zero.data_type == TensorProto.INT4
        # The scale has the weight's layout with K cut into blocks along the block axis.
        k_axis = attributes["axis"]
        expected = list(weight.dims)
        expected[k_axis] //= BLOCK
        assert list(scale.dims) == expected
    x = torch.randn(*shape)
    with torch.no_grad():
        expected_out = qm(x)
    actual = TensorRTTarget().load(path, engine="onnxruntime")(x)[0]
    torch.testing.assert_close(actual, expected_out, rtol=1e-5, atol=1e-5)


def test_block_specs_survive_saving_the_graph(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile(mlp, data, tmp_path)
    copy = graph_from_dict(graph_to_dict(qm.graph))
    specs = {n.name: n.inputs[1].quant for n in copy.nodes if n.op == "linear"}
    assert specs == {name: spec for name, (spec, _) in _weights(qm).items()}


def test_gptq_with_groups_beats_nearest_on_the_group_grid(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    nearest = _compile(mlp, data, tmp_path / "n", pipeline="cleanup,ptq")
    rounded = _compile(mlp, data, tmp_path / "g", pipeline="cleanup,ptq,gptq")
    x = torch.cat(data)
    inputs = {"fc1": x, "fc2": torch.relu(mlp.fc1(x)).detach()}
    for name, (spec, weight) in _weights(rounded).items():
        assert spec.block_size == BLOCK
        scale = qmath.expand_blocks(torch.tensor(spec.scale), weight.shape, 0, BLOCK)
        grid = weight.detach() / scale
        torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
        assert grid.round().abs().max() <= 7
        original = getattr(mlp, name).weight.detach()
        near_spec, near_weight = _weights(nearest)[name]
        near_q = qmath.fake_quantize_exact(
            near_weight.detach(),
            torch.tensor(near_spec.scale),
            torch.tensor(near_spec.zero_point),
            -7,
            7,
            0,
            BLOCK,
        )
        error_gptq = float((inputs[name] @ (weight.detach() - original).T).pow(2).mean())
        error_nearest = float((inputs[name] @ (near_q - original).T).pow(2).mean())
        assert error_gptq < error_nearest, (name, error_gptq, error_nearest)
    path = rounded.export(tmp_path / "gptq.onnx")
    probe = torch.randn(4, 256)
    with torch.no_grad():
        expected = rounded(probe)
    actual = TensorRTTarget().load(path, engine="onnxruntime")(probe)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("target", "options", "message"),
    [
        ("tensorrt", {"block_size": 128}, "mode 'int8' has per-channel weight scales only"),
        ("tensorrt", {"mode": "int4_weight_only", "block_size": 100}, "must be one of 32"),
        ("openvino", {"block_size": 128}, "unknown option"),
    ],
)
def test_block_size_on_a_target_or_mode_without_blocks_fails_at_settings_time(
    target: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match="block_size") as error:
        DeploymentSettings(target_framework=target, target_options=options)
    assert message in str(error.value)


def test_block_size_option_reaches_the_rules() -> None:
    from acekit_tensorrt.rules import quantization_rules

    assert quantization_rules({"mode": "int4_weight_only"}).weight_block_size == BLOCK
    small = quantization_rules({"mode": "int4_weight_only", "block_size": 32})
    assert small.weight_block_size == 32
    assert quantization_rules({}).weight_block_size is None
    # A weight whose K is not a multiple of the block keeps per-channel scales.
    rules = quantization_rules({"mode": "int4_weight_only"})
    assert rules.weight_spec(0, 4, per_channel=200).block_size is None
    assert rules.weight_spec(0, 4, per_channel=256).block_size == BLOCK


def test_adaround_and_bias_correction_keep_the_block_grid(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile(
        mlp, data, tmp_path, pipeline="cleanup,ptq,adaround{iterations=20},bias-correction"
    )
    for spec, weight in _weights(qm).values():
        scale = qmath.expand_blocks(torch.tensor(spec.scale), weight.shape, 0, BLOCK)
        grid = weight.detach() / scale
        torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
    path = qm.export(tmp_path / "adaround.onnx")
    probe = torch.randn(4, 256)
    with torch.no_grad():
        expected = qm(probe)
    actual = TensorRTTarget().load(path, engine="onnxruntime")(probe)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def _ort_settings(block: int | None, bits: int = 4, **extra: Any) -> Settings:
    options = ({} if block is None else {"block_size": block}) | extra
    return Settings(
        training=TrainingSettings(stats_steps=4),
        quantization=GlobalQuantizationSettings(weights_num_bits=bits),
        deployment=DeploymentSettings(target_framework="onnxruntime", target_options=options),
    )


def _ort_compile(
    model: nn.Module,
    data: list[torch.Tensor],
    logs: Path,
    block: int | None,
    pipeline: str,
    **options: Any,
) -> Any:
    return acekit.compile(
        model,
        settings=_ort_settings(block, **options),
        example_inputs=(data[0],),
        calibration_inputs=data,
        pipeline=pipeline,
        logs_dir=str(logs),
    )


def _layer_error(qm: Any, mlp: nn.Module, data: list[torch.Tensor]) -> dict[str, float]:
    """Each linear layer's squared output error from its rounded weight, on float inputs."""
    x = torch.cat(data)
    inputs = {"fc1": x, "fc2": torch.relu(mlp.fc1(x)).detach()}
    errors = {}
    for name, (spec, weight) in _weights(qm).items():
        original = getattr(mlp, name).weight.detach()
        scale = torch.tensor(spec.scale)
        if spec.block_size is None:
            rounded = qmath.fake_quantize_exact(
                weight.detach(), scale, torch.tensor(spec.zero_point), spec.qmin, spec.qmax, 0
            )
        else:
            rounded = qmath.fake_quantize_exact(
                weight.detach(),
                scale,
                torch.tensor(spec.zero_point),
                spec.qmin,
                spec.qmax,
                0,
                spec.block_size,
            )
        errors[name] = float((inputs[name] @ (rounded - original).T).pow(2).mean())
    return errors


@pytest.fixture(scope="module")
def heavy() -> nn.Module:
    """The MLP with a few input columns of large weights (as SmoothQuant leaves them,
    moving activation outliers into the weights): they set every channel's range, which
    the other blocks of the channel do not need."""
    torch.manual_seed(3)
    model = Mlp().eval()
    with torch.no_grad():
        for layer in (model.fc1, model.fc2):
            layer.weight[:, 5:9] *= 8.0
    return model


@pytest.mark.parametrize("pipeline", ["cleanup,ptq", "cleanup,ptq,gptq"])
def test_onnxruntime_group_wise_weights_lower_the_layer_error_and_deploy_like_qm(
    heavy: nn.Module, data: list[torch.Tensor], tmp_path: Path, pipeline: str
) -> None:
    mlp = heavy
    per_channel = _ort_compile(mlp, data, tmp_path / "c", None, pipeline)
    blocked = _ort_compile(mlp, data, tmp_path / "b", 32, pipeline)
    for spec, weight in _weights(blocked).values():
        assert spec.block_size == 32 and spec.bits == 4
        assert len(spec.scale) == weight.shape[0] * weight.shape[1] // 32
    for spec, _ in _weights(per_channel).values():
        assert spec.block_size is None
    coarse, fine = _layer_error(per_channel, mlp, data), _layer_error(blocked, mlp, data)
    for name in coarse:
        assert fine[name] < 0.5 * coarse[name], (name, fine[name], coarse[name])
    # The QDQ export runs in ONNX Runtime and computes what the simulation does; the
    # bias of a group-wise layer stays float (no single accumulator scale).
    path = blocked.export(tmp_path / "blocked.onnx")
    probe = torch.randn(4, 256)
    with torch.no_grad():
        expected = blocked(probe)
    session = ort_session(path)
    actual = run_ort(session, probe)
    step = float((expected.max() - expected.min()) / 255)
    assert float(((actual - expected).abs() <= step + 1e-6).float().mean()) >= 0.99


def test_group_wise_weights_below_8_bits_get_clipped_block_ranges(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _ort_compile(mlp, data, tmp_path, 32, "cleanup,ptq", block_symmetric=True)
    for name, (spec, weight) in _weights(qm).items():
        blocks = weight.detach().reshape(-1, 32)
        scale = torch.tensor(spec.scale)
        minmax = blocks.abs().amax(1) / 7
        assert bool((scale < minmax * 0.999).any()), name  # some blocks clipped
        q = torch.clamp(torch.round(blocks / scale[:, None]), -7, 7) * scale[:, None]
        full = torch.clamp(torch.round(blocks / minmax[:, None]), -7, 7) * minmax[:, None]
        error, error_minmax = (q - blocks).pow(2).sum(1), (full - blocks).pow(2).sum(1)
        assert torch.all(error <= error_minmax + 1e-7), name


def test_onnxruntime_blocks_are_affine_by_default_and_fit_better_than_symmetric_ones(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    symmetric = _ort_compile(mlp, data, tmp_path / "s", 32, "cleanup,ptq", block_symmetric=True)
    affine = _ort_compile(mlp, data, tmp_path / "a", 32, "cleanup,ptq")
    for spec, _ in _weights(symmetric).values():
        assert spec.symmetric and set(spec.zero_point) == {0}
    for spec, _ in _weights(affine).values():
        assert not spec.symmetric and (spec.qmin, spec.qmax) == (-8, 7)
        assert len(set(spec.zero_point)) > 1  # one zero point per block
    coarse, fine = _layer_error(symmetric, mlp, data), _layer_error(affine, mlp, data)
    for name in coarse:
        assert fine[name] < coarse[name], (name, fine[name], coarse[name])
    # The zero points reach the export: ONNX Runtime computes what the simulation does.
    path = affine.export(tmp_path / "affine.onnx")
    probe = torch.randn(4, 256)
    with torch.no_grad():
        expected = affine(probe)
    actual = run_ort(ort_session(path), probe)
    step = float((expected.max() - expected.min()) / 255)
    assert float(((actual - expected).abs() <= step + 1e-6).float().mean()) >= 0.99


def test_gptq_act_order_keeps_contiguous_groups_on_their_grid_and_beats_nearest(
    mlp: nn.Module, data: list[torch.Tensor], tmp_path: Path
) -> None:
    nearest = _ort_compile(mlp, data, tmp_path / "n", 32, "cleanup,ptq", block_symmetric=True)
    ordered = _ort_compile(
        mlp, data, tmp_path / "o", 32, "cleanup,ptq,gptq{act_order=true}", block_symmetric=True
    )
    for spec, weight in _weights(ordered).values():
        scale = qmath.expand_blocks(torch.tensor(spec.scale), weight.shape, 0, 32)
        grid = weight.detach() / scale
        torch.testing.assert_close(grid, grid.round(), rtol=0, atol=1e-3)
        assert grid.round().abs().max() <= 7
    before, after = _layer_error(nearest, mlp, data), _layer_error(ordered, mlp, data)
    for name in before:
        assert after[name] < before[name], (name, after[name], before[name])
