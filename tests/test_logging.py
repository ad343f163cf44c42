"""Tests of acekit.logging: the run log file, console lines, JSON lines, restoring state."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from acekit.logging import (
    LOGGER_NAME,
    current_run,
    get_logger,
    progress,
    run_logging,
    start_run_log,
)

STAMP = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]"
FILE_NAME = re.compile(r"acekit_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{6}\.log")

log = get_logger(__name__)


@pytest.fixture(autouse=True)
def no_run_left_open() -> Iterator[None]:
    """Close whatever a failing test left open, so the next test starts clean."""
    yield
    while (run := current_run()) is not None:
        run.close()


def _state() -> tuple[int, bool, list[logging.Handler]]:
    logger = logging.getLogger(LOGGER_NAME)
    return logger.level, logger.propagate, list(logger.handlers)


def test_log_file_and_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with start_run_log(tmp_path / "logs", extra_versions={"acekit_onnxruntime": "0.1.0"}) as run:
        assert current_run() is run
    assert run.closed and current_run() is None
    assert run.path.parent == tmp_path / "logs"
    assert FILE_NAME.fullmatch(run.path.name)
    lines = run.path.read_text(encoding="utf-8").splitlines()
    assert re.fullmatch(rf"{STAMP} acekit Version: \S+", lines[0])
    assert re.fullmatch(rf"{STAMP} 'torch' Version: \S+", lines[1])
    assert re.fullmatch(rf"{STAMP} Python Version: {re.escape(sys.version)}", lines[2])
    assert re.fullmatch(rf"{STAMP} 'acekit_onnxruntime' Version: 0\.1\.0", lines[3])
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"Created log at: {run.path}"


def test_console_lines_are_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_logging(tmp_path) as run:
        capsys.readouterr()
        log.info("Starting to parse the model: 'VisionTransformer'", model="VisionTransformer")
        log.info("Removed %d Dropout layers", 37, removed=37)
        log.info("100% literal percent")
        log.debug("file only")
        log.warning("Visualization: file exists: 'x.svg', Overwriting.")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(rf"{STAMP} Starting to parse the model: 'VisionTransformer'", lines[0])
    assert re.fullmatch(rf"{STAMP} Removed 37 Dropout layers", lines[1])
    assert re.fullmatch(rf"{STAMP} 100% literal percent", lines[2])
    assert re.fullmatch(rf"{STAMP} WARNING: Visualization: file exists: .*", lines[3])
    assert len(lines) == 4
    text = run.path.read_text(encoding="utf-8")
    assert "file only" in text
    assert "removed=" not in text and "model=" not in text


def test_settings_block_layout(tmp_path: Path) -> None:
    with run_logging(tmp_path, console=False) as run:
        run.log_block("Training Settings:\n+ stats_steps = 20\n")
        log.info("Starting initial model validation: 'VisionTransformer'")
    lines = run.path.read_text(encoding="utf-8").splitlines()[3:]
    assert re.fullmatch(STAMP, lines[0])
    assert lines[1:4] == ["Training Settings:", "+ stats_steps = 20", ""]
    assert re.fullmatch(rf"{STAMP} Starting initial model validation: .*", lines[4])


def test_json_file_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_logging(tmp_path, json=True, extra_versions={"p": "1"}) as run:
        log.info("Removed 37 Dropout layers", pass_name="remove-dropout", removed=37)
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
    records = [json.loads(line) for line in run.path.read_text(encoding="utf-8").splitlines()]
    assert records[3]["event"] == "'p' Version: 1"
    assert records[0]["package"] == "acekit"
    assert records[1] == {**records[1], "package": "torch", "level": "info"}
    removed = records[4]
    assert removed["event"] == "Removed 37 Dropout layers"
    assert removed["removed"] == 37 and removed["pass_name"] == "remove-dropout"
    assert removed["logger"] == f"acekit.{__name__}"
    assert set(removed) >= {"timestamp", "level", "logger", "event"}
    assert records[5]["level"] == "error"
    assert "ValueError: bad" in records[5]["exception"]
    # The console stays human.
    assert re.search(rf"^{STAMP} Removed 37 Dropout layers$", capsys.readouterr().err, re.M)


def test_json_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_logging(tmp_path, json="console"):
        capsys.readouterr()
        log.info("hello", n=1)
    record = json.loads(capsys.readouterr().err.strip())
    assert (record["event"], record["n"]) == ("hello", 1)


def test_close_restores_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _state()
    config_before = structlog.get_config()
    run = start_run_log(tmp_path)
    assert _state() != before
    assert structlog.get_config() == config_before
    run.close()
    run.close()
    assert _state() == before
    log.info("after close")
    assert "after close" not in run.path.read_text(encoding="utf-8")
    assert "after close" not in capsys.readouterr().err


def test_quiet_without_a_run(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        log.info("not shown")
        log.warning("shown", x=1)
    assert [r.getMessage() for r in caplog.records] == ["shown"]


def test_plugin_loggers_live_under_acekit(tmp_path: Path) -> None:
    with run_logging(tmp_path, console=False) as run:
        get_logger("acekit_fx.parser").info("1/236. Parsing node: 'x'")
        logging.getLogger("acekit.passes").info("stdlib record")
    text = run.path.read_text(encoding="utf-8")
    assert "Parsing node: 'x'" in text and "stdlib record" in text


def test_nested_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _state()
    with run_logging(tmp_path / "a") as outer:
        with run_logging(tmp_path / "b") as same:
            assert same is outer
        inner = start_run_log(tmp_path / "c")
        log.info("inner event")
        inner.close()
        log.info("outer event")
        assert current_run() is outer
    assert _state() == before
    assert not (tmp_path / "b").exists()
    assert "inner event" in inner.path.read_text(encoding="utf-8")
    assert "inner event" not in outer.path.read_text(encoding="utf-8")
    assert "outer event" in outer.path.read_text(encoding="utf-8")
    assert capsys.readouterr().err.count("inner event") == 1


def test_closing_outer_closes_inner(tmp_path: Path) -> None:
    before = _state()
    outer = start_run_log(tmp_path, console=False)
    inner = start_run_log(tmp_path, console=False)
    assert outer.path != inner.path
    outer.close()
    assert inner.closed and current_run() is None
    assert _state() == before


def test_failure_traceback_goes_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), run_logging(tmp_path) as run:
        raise RuntimeError("parser exploded")
    text = run.path.read_text(encoding="utf-8")
    assert "ERROR: Run failed: RuntimeError: parser exploded" in text
    assert "Traceback" in text
    assert "parser exploded" not in capsys.readouterr().err


def test_progress_without_a_tty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_logging(tmp_path) as run:
        capsys.readouterr()
        assert list(progress(range(20), "Calibrating Model")) == list(range(20))
    err = capsys.readouterr().err
    summary = rf"{STAMP} Calibrating Model: 100%\|##########\| 20/20 \[\d\d:\d\d<00:00, .*it/s\]"
    # No bar on a pipe, so the console gets the summary line instead.
    assert re.fullmatch(summary, err.strip())
    assert re.search(summary, run.path.read_text(encoding="utf-8"))


def test_progress_forced_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    screen = io.StringIO()
    with run_logging(tmp_path) as run:
        capsys.readouterr()
        for i in progress(iter(range(10)), "Calibrating Model", total=10, force=True, file=screen):
            if i == 4:
                break
    assert "Calibrating Model:" in screen.getvalue() and "|" in screen.getvalue()
    assert "Calibrating Model" not in capsys.readouterr().err
    assert re.search(r"Calibrating Model:  50%\|#####     \| 5/10", run.path.read_text("utf-8"))


def test_progress_without_a_run_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    assert sum(progress([1, 2, 3], "Counting")) == 6
    assert capsys.readouterr() == ("", "")
