"""torch.compile(model, backend="clika"): found through its entry point, runs the whole job."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.quant_support import SmallCNN, sqnr, trained_like


def test_the_backend_is_found_without_importing_acekit(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, torch
        from torch import nn
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4)]
        model = nn.Sequential(*layers)
        model.eval()
        x = torch.randn(1, 3, 16, 16)
        assert "acekit" not in sys.modules
        compiled = torch.compile(
            model,
            backend="clika",
            options={{"calibration_inputs": [torch.randn(1, 3, 16, 16) for _ in range(3)],
                      "logs_dir": r"{tmp_path / "logs"}"}},
        )
        with torch.no_grad():
            y = compiled(x)
            assert (y - model(x)).abs().max() < 0.1 * model(x).abs().max()
        print(compiled.export(r"{tmp_path / "model.onnx"}"))
        print(compiled.visualize(r"{tmp_path / "model.svg"}"))
        print(compiled.save(r"{tmp_path / "run.acekit"}"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert (tmp_path / "run.acekit").stat().st_size > 0
    assert list((tmp_path).glob("model.*"))


def test_backend_result_matches_acekit_compile(tmp_path: Path) -> None:
    import acekit
    from acekit_clika import quantized_module

    model = trained_like(SmallCNN(), (2, 3, 32, 32))
    torch.manual_seed(3)
    data = [torch.randn(2, 3, 32, 32) for _ in range(3)]
    options = {"calibration_inputs": data, "logs_dir": str(tmp_path)}
    compiled = torch.compile(model, backend="clika", options=options)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        via_backend = compiled(x)
        direct = acekit.compile(
            model, example_inputs=(x,), calibration_inputs=data, logs_dir=str(tmp_path)
        )(x)
    assert torch.allclose(via_backend, direct, atol=1e-6)
    assert sqnr(model(x).detach(), via_backend) > 25
    assert quantized_module(compiled).graph.name == "SmallCNN"


def test_asking_before_the_first_call_says_why(tmp_path: Path) -> None:
    from acekit_clika import ClikaBackendError

    compiled = torch.compile(SmallCNN().eval(), backend="clika")
    with pytest.raises(ClikaBackendError, match="call the compiled model once"):
        compiled.export(tmp_path / "model.onnx")


def test_unknown_options_are_named(tmp_path: Path) -> None:
    compiled = torch.compile(SmallCNN().eval(), backend="clika", options={"calibraton": []})
    with pytest.raises(Exception, match="calibraton"):
        compiled(torch.randn(1, 3, 32, 32))


def test_vit_b_16_through_the_backend_logs_the_seed_numbers(tmp_path: Path) -> None:
    import torchvision

    from acekit.settings import Settings, TrainingSettings

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    x = torch.randn(1, 3, 224, 224)
    settings = Settings(training=TrainingSettings(stats_steps=1))
    options = {"calibration_inputs": [x], "settings": settings, "logs_dir": str(tmp_path)}
    with torch.no_grad():
        torch.compile(model, backend="clika", options=options)(x)
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Starting to parse the model: 'VisionTransformer'" in log
    assert "1/236. Parsing node: 'x'" in log
    assert "Parsed to -> 'heads_head' (Subgraph: 'VisionTransformer/heads')" in log
    assert "Removed 37 Dropout layers" in log
    assert "Calibrating Model: 100%" in log


@pytest.mark.parametrize("dynamic", [None, True], ids=["recompiled", "dynamic"])
def test_the_compiled_model_runs_at_other_batch_sizes(tmp_path: Path, dynamic: bool | None) -> None:
    # At a new batch size dynamo compiles again with symbolic sizes (s0) among the graph
    # inputs (at once with dynamic=True): they are sizes, not model inputs, and the model
    # keeps the QuantizedModule of its first call.
    model = trained_like(SmallCNN(), (2, 3, 32, 32))
    data = [torch.randn(2, 3, 32, 32) for _ in range(3)]
    options = {"calibration_inputs": data, "logs_dir": str(tmp_path)}
    compiled = torch.compile(model, backend="clika", options=options, dynamic=dynamic)
    with torch.no_grad():
        compiled(data[0])
        qm = compiled.quantized_module()
        for batch in (5, 1):
            x = torch.randn(batch, 3, 32, 32)
            y = compiled(x)
            assert y.shape[0] == batch
            assert torch.allclose(y, qm(x), atol=1e-6)
    assert compiled.quantized_module() is qm
