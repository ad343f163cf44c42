"""Calibration data is never silently lost: generators, one-shot reuse, dtypes, memory."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import acekit
from acekit.ir.graph import Graph
from acekit.quant.compile import quantize_parsed
from acekit.quant.data import CalibrationData, CalibrationDataError
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings
from tests.quant_support import SmallCNN, trained_like

SHAPE = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    return trained_like(SmallCNN(), SHAPE)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    # Each batch its own range, so that dropping one changes the scales.
    return [torch.randn(*SHAPE, generator=generator) * (i + 1) for i in range(4)]


def _compile(model: torch.nn.Module, data: Any, logs: Path, **options: Any) -> QuantizedModule:
    return acekit.compile(
        model, example_inputs=(torch.zeros(SHAPE),), calibration_inputs=data,
        logs_dir=logs, **options,
    )  # fmt: skip


def _scales(qm: QuantizedModule) -> dict[str, Any]:
    return {
        value.name: (value.quant.scale, value.quant.zero_point, value.quant.skip)
        for node in qm.graph.nodes
        for value in node.outputs
        if value.quant is not None
    }


def _log(qm: QuantizedModule) -> str:
    assert qm.report is not None and qm.report.log_path is not None
    return qm.report.log_path.read_text(encoding="utf-8")


def test_a_generator_of_four_batches_calibrates_on_all_four(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    from_list = _compile(cnn, batches, tmp_path)
    from_generator = _compile(cnn, (b for b in batches), tmp_path)
    from_iterator = _compile(cnn, iter(batches), tmp_path)
    assert from_generator.report is not None and from_iterator.report is not None
    assert from_generator.report.calibration_batches == 4
    assert from_iterator.report.calibration_batches == 4
    assert _scales(from_generator) == _scales(from_list)
    assert _scales(from_iterator) == _scales(from_list)
    # Why fewer than stats_steps (20) were used is in the log.
    assert "gave 4 batches: calibrated on 4" in _log(from_generator)


def test_a_one_batch_generator_is_not_empty(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    qm = _compile(cnn, (b for b in batches[:1]), tmp_path)
    assert qm.report is not None and qm.report.calibration_batches == 1
    assert _scales(qm) == _scales(_compile(cnn, batches[:1], tmp_path))


def test_calibration_reads_exactly_stats_steps_batches_and_says_so(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    source = iter(batches)
    settings = Settings(training=TrainingSettings(stats_steps=3))
    qm = _compile(cnn, source, tmp_path, settings=settings)
    assert qm.report is not None and qm.report.calibration_batches == 3
    assert "Calibrated on 3 batches" in _log(qm)
    # The fourth batch is still the caller's: nothing was read and thrown away.
    assert torch.equal(next(source), batches[3])


def test_a_generator_with_auto_skip_gives_the_same_model_as_a_list(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    settings = Settings(
        quantization=GlobalQuantizationSettings(
            automatic_skip_quantization=True, sensitivity_threshold=0.001
        )
    )
    from_list = _compile(cnn, batches, tmp_path, settings=settings)
    from_generator = _compile(cnn, (b for b in batches), tmp_path, settings=settings)
    assert from_generator.report is not None and from_list.report is not None
    assert from_generator.report.skipped == from_list.report.skipped > 0
    assert _scales(from_generator) == _scales(from_list)


def test_one_shot_data_is_kept_only_as_far_as_later_readers_need(
    batches: list[torch.Tensor],
) -> None:
    example = (batches[0],)
    data = CalibrationData((b for b in batches), example, ["x"], keep=2)
    data.first()
    assert len(list(data.batches(limit=4))) == 4
    again = list(data.batches(limit=2))
    assert all(torch.equal(a, b) for a, (b,) in zip(batches, again, strict=False))
    assert len(data._kept) == 2  # bounded: not the whole data set
    # A read that would need dropped batches is refused, not served half.
    with pytest.raises(CalibrationDataError, match="one-shot generator.*Pass a list"):
        list(data.batches(limit=3))


def test_a_re_iterable_source_is_read_afresh(batches: list[torch.Tensor]) -> None:
    class Batches:
        def __iter__(self) -> Iterator[torch.Tensor]:
            return iter(batches)

    data = CalibrationData(Batches(), (batches[0],), ["x"])
    data.first()
    assert len(list(data.batches())) == len(list(data.batches())) == 4
    assert data._kept == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_float_data_of_another_precision_is_converted_and_logged(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path, dtype: torch.dtype
) -> None:
    qm = _compile(cnn, (b.to(dtype) for b in batches), tmp_path)
    assert qm.report is not None and qm.report.calibration_batches == 4
    text = _log(qm)
    assert text.count(f"input 'x' is {dtype}") == 1
    assert "converting it to torch.float32" in text
    reference = _scales(_compile(cnn, [b.to(dtype).float() for b in batches], tmp_path))
    assert _scales(qm) == reference


def test_data_that_cannot_be_converted_is_refused_before_parsing(
    batches: list[torch.Tensor], tmp_path: Path
) -> None:
    parsed = []

    def parse() -> Graph:
        parsed.append(True)
        raise AssertionError("parsing must not start")

    for bad, message in [
        ([b.to(torch.int64) for b in batches], "dtype torch.int64, the example input"),
        ([b.to(torch.complex64) for b in batches], "dtype torch.complex64"),
        ([torch.full(SHAPE, 1e39, dtype=torch.float64)], "contains Inf values"),
    ]:
        with pytest.raises(CalibrationDataError, match=message):
            quantize_parsed(
                parse, example_inputs=(batches[0],), input_names=["x"],
                calibration_inputs=(b for b in bad), logs_dir=tmp_path,
            )  # fmt: skip
    assert parsed == []


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_calibration_memory_is_flat_from_20_to_200_batches(cnn: SmallCNN, tmp_path: Path) -> None:
    shape = (8, 3, 64, 64)
    batch_bytes = 8 * 3 * 64 * 64 * 4  # 384 KiB: 180 kept batches would be 67 MiB
    rss: dict[int, int] = {}

    def stream(count: int) -> Iterator[torch.Tensor]:
        # Runs inside calibration: the memory the run holds as each batch is read.
        generator = torch.Generator().manual_seed(0)
        for index in range(count):
            rss[index] = _rss_bytes()
            yield torch.randn(*shape, generator=generator)

    # Calibration alone: a post-training algorithm that reads the data again (the default
    # bias correction) makes a one-shot source keep the batches it will replay.
    settings = Settings(
        training=TrainingSettings(stats_steps=200),
        quantization=GlobalQuantizationSettings(algorithms=""),
    )
    qm = acekit.compile(
        cnn, example_inputs=(torch.zeros(shape),), calibration_inputs=stream(200),
        settings=settings, logs_dir=tmp_path,
    )  # fmt: skip
    assert qm.report is not None and qm.report.calibration_batches == 200
    growth = rss[199] - rss[20]
    assert growth < 60 * batch_bytes, f"RSS grew {growth / 2**20:.1f} MiB from batch 20 to 200"


def test_islice_and_map_iterators_count_as_one_shot(batches: list[torch.Tensor]) -> None:
    for source in (itertools.islice(iter(batches), 4), map(lambda b: b, batches)):
        data = CalibrationData(source, (batches[0],), ["x"])
        assert data.one_shot
        data.first()
        assert len(list(data.batches())) == 4
