"""The main job: ``acekit demo`` and ``acekit quantize`` write, measure and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from acekit.cli import main
from acekit.demo import run_demo


def test_demo_reports_speed_fidelity_and_files(tmp_path: Path) -> None:
    report = run_demo(tmp_path, image_size=64)
    assert report.compile.parsed_nodes == 193 and report.compile.parsed_ops < 193
    assert report.compile.quantized == 22 and report.compile.skipped == 0  # 20 convs, fc, pool
    assert report.latency is not None and report.latency.int8_ms > 0
    assert report.sqnr_db > 20
    assert report.deployed_sqnr_db is not None and report.deployed_sqnr_db > 25
    assert all(path.exists() for path in report.files)
    text = report.format()
    for line in ("ops parsed", "speedup", "SQNR", "top-1 agreement", "resnet18_int8.onnx"):
        assert line in text
    log = report.compile.log_path
    assert log is not None and "acekit report: resnet18" in log.read_text()


def test_quantize_command_on_a_factory(tmp_path: Path) -> None:
    data = tmp_path / "calibration.npy"
    np.save(data, np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32))
    code = main(
        [
            "quantize",
            "tests.quant_support:SmallCNN",
            "--input-shape",
            "2,3,32,32",
            "--calibration",
            str(data),
            "--weights-bits",
            "4",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert (tmp_path / "out" / "SmallCNN_int8.onnx").exists()
    log = next((tmp_path / "out" / "logs").glob("*.log")).read_text()
    assert "acekit report: SmallCNN" in log


def test_quantize_command_on_a_torchscript_file(tmp_path: Path) -> None:
    from tests.quant_support import SmallCNN, trained_like

    path = tmp_path / "model.pt"
    torch.jit.trace(trained_like(SmallCNN(), (2, 3, 32, 32)), torch.randn(1, 3, 32, 32)).save(
        str(path)
    )
    code = main(
        ["quantize", str(path), "--input-shape", "1,3,32,32", "--out", str(tmp_path / "out")]
    )
    assert code == 0 and (tmp_path / "out" / "model_int8.onnx").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nomodule"], "package.module:factory"),
        (["tests.quant_support:Missing"], "cannot load"),
        (["missing.pt"], "no such TorchScript file"),
        (["tests.quant_support:SmallCNN", "--calibration", "data.csv"], "--calibration"),
        (["tests.quant_support:SmallCNN", "--input-shape", "1,3,32"], "the model raised"),
    ],
)
def test_quantize_command_names_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["quantize", "--input-shape", "1,3,32,32", *args, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
