"""The settings' ``algorithms``: checked when built, placed around ptq, saved losslessly."""

from __future__ import annotations

from pathlib import Path

import pytest

from acekit.quant.compile import default_pipeline
from acekit.settings import GlobalQuantizationSettings, Settings, SettingsError


def test_algorithms_go_around_ptq_by_stage() -> None:
    quantization = GlobalQuantizationSettings(
        algorithms="adaround{iterations=50},cle,bias-correction"
    )
    assert default_pipeline(Settings(quantization=quantization)) == (
        "cleanup,cle,ptq,adaround{iterations=50},bias-correction"
    )
    assert default_pipeline(Settings()) == "cleanup,ptq,bias-correction"
    skipping = GlobalQuantizationSettings(automatic_skip_quantization=True)
    # Bias correction must know which layers auto-skip keeps in float.
    assert default_pipeline(Settings(quantization=skipping)) == (
        "cleanup,ptq,auto-skip,bias-correction"
    )
    none = GlobalQuantizationSettings(algorithms="")
    assert default_pipeline(Settings(quantization=none)) == "cleanup,ptq"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adaround{iterations=0}", "'iterations' must be >= 1"),
        ("fold-bn", "'fold-bn' is not a post-training algorithm; the installed ones are: "),
        ("adarund", "unknown pass 'adarund'"),
        ("cle{", "column 5"),
    ],
)
def test_bad_algorithms_fail_at_settings_time(spec: str, message: str) -> None:
    with pytest.raises(SettingsError, match="algorithms") as error:
        GlobalQuantizationSettings(algorithms=spec)
    assert message in str(error.value)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_algorithms_round_trip_through_files(tmp_path: Path, suffix: str) -> None:
    settings = Settings(
        quantization=GlobalQuantizationSettings(algorithms="cle,adaround{iterations=20}")
    )
    path = settings.save(tmp_path / f"settings{suffix}")
    assert Settings.from_file(path) == settings


def test_default_algorithms_follow_the_quantization_algorithm() -> None:
    # PTQ gets bias correction; QAT trains its biases, so it starts from none.
    assert GlobalQuantizationSettings().algorithms == "bias-correction"
    assert GlobalQuantizationSettings(quantization_algorithm="qat").algorithms == ""
    explicit = GlobalQuantizationSettings(quantization_algorithm="qat", algorithms="cle")
    assert explicit.algorithms == "cle"
