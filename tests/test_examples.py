"""The examples run and show what they claim."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_digits_qat_meets_its_goals(capsys: pytest.CaptureFixture[str]) -> None:
    digits = _load("digits_qat")
    assert digits.main([]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].endswith("%"):
            rows[cells[0]] = (float(cells[1].rstrip(" %")), cells[2])
    fp32 = rows["FP32"][0]
    w8, w4, qat = rows["W8A8 PTQ"], rows["W4A8 PTQ"], rows["W4A8 QAT (6 epochs)"]
    assert w8[0] >= fp32 - 0.5
    # Bias correction (on by default) keeps 4-bit PTQ within a point of FP32 untrained.
    assert w4[0] >= fp32 - 1.0 and qat[0] >= fp32 - 1.0
    for simulated, deployed in (w8, w4, qat):
        assert deployed == f"{simulated:.2f} %", "ONNX Runtime and qm(x) disagree"
