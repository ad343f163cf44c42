"""mixed-precision: per-layer widths fit the budget and beat a uniform low width."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch

from acekit.settings import GlobalQuantizationSettings, SettingsError
from acekit_algorithms.mp_search import Budget, predicted_error, search
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
    with pytest.raises(SettingsError, match="give a budget: budget_bytes"):
        GlobalQuantizationSettings(algorithms="mixed-precision")
    with pytest.raises(SettingsError, match="bits must be weight widths"):
        GlobalQuantizationSettings(algorithms="mixed-precision{budget_bytes=10,bits='4:x'}")


def _latency(graph: object, rules: object) -> float:
    """The layers' estimated latency relative to float, from the target's cost model."""
    spent = whole = 0.0
    for node in graph.nodes:  # type: ignore[attr-defined]
        if node.op not in ("conv2d", "linear"):
            continue
        weight = graph.tensors[str(node.inputs[1].producer.attrs["ref"])]  # type: ignore[attr-defined]
        dims = node.outputs[0].type.shape
        macs = math.prod(d for d in dims[1:] if isinstance(d, int)) * (
            weight.numel() // weight.shape[0]
        )
        spec = node.inputs[1].quant
        bits = None if spec is None or spec.skip else spec.bits
        spent += macs * rules.mac_cost(bits)  # type: ignore[attr-defined]
        whole += macs
    return spent / whole


def test_latency_budget_is_kept_and_the_curve_is_drawn(tmp_path: Path) -> None:
    from acekit.plugin import get_registry

    model = trained_like(SmallCNN(), SHAPE)
    generator = torch.Generator().manual_seed(4)
    data = [torch.randn(*SHAPE, generator=generator) for _ in range(2)]
    picture = tmp_path / "curve.svg"
    mixed = compile_with(
        model,
        data,
        f"cleanup,ptq,mixed-precision{{budget_latency=0.5,plot='{picture}'}}",
        tmp_path / "logs",
    )
    rules = get_registry().targets["onnxruntime"].quantization_rules({})
    latency = _latency(mixed.graph, rules)
    assert latency <= 0.5
    _, widths = _weight_bytes(mixed.graph)
    # The default cost model runs 2..8-bit weights in 8-bit kernels at the same cost, so
    # the search takes 8 bits everywhere and spends what is left on float layers.
    assert set(widths.values()) <= {8, 32} and 32 in widths.values(), widths
    log = next((tmp_path / "logs").rglob("*.log")).read_text()
    assert "Mixed precision trade-off" in log and "latency" in log
    root = ElementTree.parse(picture).getroot()
    assert root.tag.endswith("svg")
    (line,) = [e for e in root.iter() if e.tag.endswith("polyline")]
    points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
    steps = [row for row in log.splitlines() if re.match(r"^\s+\d+\s+[\d.]+\s+[\d.]+$", row)]
    assert len(points) == len(steps) >= 2
    # x grows (more latency) and y falls (SVG's y axis points down: error falls).
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(points))


def test_picture_goes_beside_the_run_log_and_both_budgets_hold(tmp_path: Path) -> None:
    model = trained_like(SmallCNN(), SHAPE)
    generator = torch.Generator().manual_seed(4)
    data = [torch.randn(*SHAPE, generator=generator) for _ in range(2)]
    uniform8 = compile_with(model, data, "cleanup,ptq", tmp_path / "a")
    budget = int(_weight_bytes(uniform8.graph)[0] * 0.7)
    mixed = compile_with(
        model,
        data,
        f"cleanup,ptq,mixed-precision{{budget_bytes={budget},budget_latency=0.4}}",
        tmp_path / "b",
    )
    assert _weight_bytes(mixed.graph)[0] <= budget
    (log,) = (tmp_path / "b").rglob("*.log")
    picture = log.with_name(f"{log.stem}_mixed_precision.svg")
    svg = ElementTree.parse(picture).getroot()
    # One panel per budget.
    assert len([e for e in svg.iter() if e.tag.endswith("polyline")]) == 2


def test_search_curve_falls_in_error_and_keeps_every_budget() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        layers = int(torch.randint(1, 8, (1,), generator=generator))
        # Options ordered narrow -> float: error falls, cost grows.
        errors = torch.rand(layers, 4, generator=generator).sort(1, descending=True).values
        sizes = torch.rand(layers, 4, generator=generator).sort(1).values * 100
        latency = torch.rand(layers, 4, generator=generator).sort(1).values
        budgets = [
            Budget("bytes", sizes.tolist(), float(sizes[:, 1].sum())),
            Budget("latency", latency.tolist(), float(latency[:, 2].sum())),
        ]
        choice, curve = search(errors.tolist(), budgets)
        assert all(b.error < a.error for a, b in itertools.pairwise(curve))
        for step in curve[1:]:
            assert all(t <= b.limit + 1e-9 for t, b in zip(step.totals, budgets, strict=True))
        assert curve[-1].totals == tuple(b.total(choice) for b in budgets)
        assert math.isclose(curve[-1].error, predicted_error(errors.tolist(), choice))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mixed-precision{budget_latency=0}", "above 0 and at most 1"),
        ("mixed-precision{budget_latency=1.5}", "above 0 and at most 1"),
        ("mixed-precision{budget_latency='fast'}", "budget_latency"),
        ("mixed-precision{budget_bytes=0}", "budget_bytes"),
        ("mixed-precision{budget_bytes=100,plot='curve.png'}", "must be the path of an .svg"),
    ],
)
def test_bad_budgets_fail_at_settings_time(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match="algorithms") as error:
        GlobalQuantizationSettings(algorithms=spec)
    assert message in str(error.value)
