"""mixed-precision: per-layer widths fit the budget and beat a uniform low width."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from acekit.settings import GlobalQuantizationSettings, SettingsError
from tests.algorithm_support import assert_deploys_like_simulation, compile_with
from tests.quant_support import SmallCNN, trained_like

SHAPE = (8, 3, 32, 32)


def _weight_bytes(graph: object) -> tuple[int, dict[str, int]]:
    total, widths = 0, {}
    for node in graph.nodes:  # type: ignore[attr-defined]
        if node.op not in ("conv2d", "linear"):
            continue
        value = node.inputs[1]
        spec = value.quant
        bits = 32 if spec is None or spec.skip else spec.bits
        widths[node.name] = bits
        ref = str(value.producer.attrs["ref"])
        total += math.ceil(graph.tensors[ref].numel() * bits / 8)  # type: ignore[attr-defined]
    return total, widths


def test_mixed_precision_fits_the_budget_and_beats_uniform_low_bits(tmp_path: Path) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    generator = torch.Generator().manual_seed(4)
    data = [torch.randn(*SHAPE, generator=generator) for _ in range(2)]
    uniform8 = compile_with(model, data, "cleanup,ptq", tmp_path / "a")
    size8, _ = _weight_bytes(uniform8.graph)
    budget = int(size8 * 0.6)
    mixed = compile_with(
        model,
        data,
        f"cleanup,ptq,mixed-precision{{budget_bytes={budget},bits='2:4:8'}}",
        tmp_path / "b",
    )
    size, widths = _weight_bytes(mixed.graph)
    assert size <= budget
    assert len(set(widths.values())) > 1, widths
    uniform4 = compile_with(model, data, "cleanup,ptq", tmp_path / "c", weights_bits=4)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        reference = model(x)
        assert (mixed(x) - reference).norm() < (uniform4(x) - reference).norm()
    log = next((tmp_path / "b").rglob("*.log")).read_text()
    assert "Mixed precision trade-off" in log and "Mixed precision per layer" in log
    assert_deploys_like_simulation(mixed, x, tmp_path)


def test_mixed_precision_needs_a_budget_at_settings_time() -> None:
    with pytest.raises(SettingsError, match="budget_bytes"):
        GlobalQuantizationSettings(algorithms="mixed-precision")
    with pytest.raises(SettingsError, match="bits must be weight widths"):
        GlobalQuantizationSettings(algorithms="mixed-precision{budget_bytes=10,bits='4:x'}")
