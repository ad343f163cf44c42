"""Bad input to the post-training algorithms: clear errors early, clear notes otherwise.

Options out of range or of the wrong type fail when the settings are built; an
algorithm with too little calibration data says how much it needs; one that does not
apply to a model says so in the log and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from acekit.settings import GlobalQuantizationSettings, SettingsError
from tests.algorithm_support import compile_with
from tests.quant_support import SmallCNN, trained_like


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adaround{iterations=1.5}", "option 'iterations' of pass 'adaround' must be an integer"),
        ("adaround{iterations=true}", "must be an integer; got True"),
        ("adaround{warmup=1}", "'warmup' must be < 1"),
        ("adaround{learning_rate=0}", "'learning_rate' must be > 0"),
        ("gptq{damping=2}", "'damping' must be <= 1"),
        ("gptq{block=2.5}", "option 'block' of pass 'gptq' must be an integer"),
        ("gptq{sequential=1}", "option 'sequential' of pass 'gptq' must be true or false"),
        ("cle{batches=1.5}", "must be an integer (or none); got 1.5"),
        ("smoothquant{alpha=2}", "'alpha' must be <= 1"),
        ("smoothquant{outlier_ratio=0.5}", "'outlier_ratio' must be >= 1"),
        ("bias-correction{sequential='yes'}", "must be true or false; got 'yes'"),
        ("mixed-precision{budget_bytes=1.5}", "'budget_bytes' of pass 'mixed-precision'"),
        ("mixed-precision{budget_latency=2}", "above 0 and at most 1"),
    ],
)
def test_options_out_of_range_fail_at_settings_time(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match="algorithms") as error:
        GlobalQuantizationSettings(algorithms=spec)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) <= 3  # one message, the spec, a caret


class Wide(nn.Module):
    """One linear layer with 64 inputs per output: its rounding needs 64 input vectors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_adaround_with_too_little_data_says_how_much_it_needs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Wide().eval()
    data = [torch.randn(8, 64) for _ in range(2)]
    qm = compile_with(model, data, "cleanup,ptq,adaround{iterations=5}", tmp_path, weights_bits=4)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert (
        "AdaRound: keeping nearest rounding for 'fc': reconstructing it needs at least 64 "
        "input vectors (its inputs per output), the calibration data gave 16 (use at least 8 "
        "batches" in log
    )
    assert "AdaRound: 0 layers" in log
    # Nothing changed: the layer keeps its float weight (rounded to nearest when run).
    torch.testing.assert_close(qm.graph.tensors["fc.weight"].detach(), model.fc.weight.detach())


def test_gptq_with_too_little_data_says_how_much_it_needs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = [torch.randn(8, 64) for _ in range(2)]
    compile_with(Wide().eval(), data, "cleanup,ptq,gptq", tmp_path, weights_bits=4)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert (
        "its Hessian needs at least 64 input vectors, the calibration data gave 16 "
        "(use at least 8 batches)" in log
    )


class NoPairs(nn.Module):
    """Two linear layers with no activation between them and no LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_algorithms_that_do_not_apply_say_why_and_change_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NoPairs().eval()
    data = [torch.randn(16, 8) for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pipeline = (
        "cleanup,cle,smoothquant,adaround,gptq,bias-correction,"
        "mixed-precision{budget_bytes=100},ptq"
    )
    qm = compile_with(model, data, pipeline, tmp_path)
    log = next(tmp_path.rglob("*.log")).read_text()
    for line in (
        "Cross-layer equalization: did nothing: no conv/linear pair joined by a ReLU-like",
        "SmoothQuant: did nothing: ",
        "AdaRound: did nothing: no conv/linear layer has calibrated quantized weights "
        "(run it after ptq)",
        "GPTQ: did nothing: no linear or ungrouped conv2d layer has calibrated",
        "Bias correction: did nothing: no conv/linear layer has calibrated",
        "Mixed precision: did nothing: no conv/linear layer has calibrated",
    ):
        assert line in log, line
    for ref in ("a.weight", "a.bias", "b.weight", "b.bias"):
        assert torch.equal(qm.graph.tensors[ref].detach(), before[ref])


def test_smoothquant_on_a_cnn_says_there_is_no_layer_norm(tmp_path: Path) -> None:
    shape = (2, 3, 32, 32)
    data = [torch.randn(*shape) for _ in range(2)]
    compile_with(trained_like(SmallCNN(), shape), data, "cleanup,smoothquant,ptq", tmp_path)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert "SmoothQuant: did nothing" in log and "LayerNorm" in log
