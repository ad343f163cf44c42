"""A bias far larger than its layer's weights: the weight scale widens so it fits int32.

gMLP's spatial gate (timm's gmlp_*) has weights ~1e-6 and a bias of 1: on the grid
``s_input * s_weight`` that bias needs ~2.5e9 steps, more than int32 holds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import acekit
from tests.quant_support import ort_session, run_ort, sqnr


class Gate(nn.Module):
    """A near-zero linear layer whose output is its bias (as gMLP's gate starts)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        nn.init.normal_(self.fc.weight, std=1e-6)
        nn.init.ones_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


def test_a_bias_too_large_for_its_grid_keeps_its_value(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Gate().eval()
    data = torch.randn(8, 16)
    qm = acekit.compile(model, example_inputs=(data[:1],), calibration_inputs=data, logs_dir=None)
    s_weight = qm.graph.value("fc.weight").quant.scale
    # x also feeds a float multiply, so only fc's branch of it (an identity) is quantized.
    (fc,) = [node for node in qm.graph.nodes if node.op == "linear"]
    s_input = fc.inputs[0].quant.scale[0]
    # From max|w| / 127 (~1e-8) the weight scales widened until a bias of 1 fits int32.
    assert all(1.0 / (s_input * s) < 2**31 - 1 for s in s_weight)
    x = torch.randn(4, 16)
    with torch.no_grad():
        expected, simulated = model(x), qm(x)
    assert sqnr(expected, simulated) > 30
    session = ort_session(qm.export(tmp_path / "gate.onnx"))
    deployed = run_ort(session, x)
    assert sqnr(simulated, deployed) > 40
