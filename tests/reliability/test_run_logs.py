"""One run, one log: concurrent runs in threads and processes, no file, read-only cwd, RNG."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import acekit
import acekit.logging as acekit_logging
from acekit.ir.graph import Graph
from acekit.logging import current_run, get_logger, start_run_log
from acekit.passes import Pass, PassResult, Pipeline
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import Settings, TrainingSettings
from tests.quant_support import SmallCNN, trained_like

SHAPE = (2, 3, 32, 32)
ROOT = Path(__file__).resolve().parents[2]
log = get_logger(__name__)

_barrier = threading.Barrier(1)


@attrs.frozen
class Meet(Pass):
    """Waits until every concurrent run reaches it, so the runs surely overlap."""

    name: ClassVar[str] = "meet"

    def run(self, graph: Graph) -> PassResult:
        """Log this thread's name, wait for the others, log again."""
        thread = threading.current_thread().name
        log.info(f"Meeting in {thread}")
        _barrier.wait(timeout=120)
        log.info(f"Leaving the meeting in {thread}")
        return PassResult(graph, False)


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    return trained_like(SmallCNN(), SHAPE)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(4)]


def _compile_meeting(
    model: torch.nn.Module, batches: list[torch.Tensor], logs: Path
) -> QuantizedModule:
    pipeline = Pipeline([Pipeline.from_spec("cleanup"), Meet(), Pipeline.from_spec("ptq")])
    return acekit.compile(
        model, example_inputs=(batches[0],), calibration_inputs=list(batches),
        pipeline=pipeline, logs_dir=logs,
    )  # fmt: skip


def _normalised(text: str, thread: str) -> list[str]:
    """The log's lines without what differs between identical runs (times, speeds)."""
    text = text.replace(thread, "THREAD")
    text = re.sub(r"^\[[\d :-]+\] ?", "", text, flags=re.M)
    text = re.sub(r"\[\d\d:\d\d<\d\d:\d\d, *[\d.]+(it/s|s/it)\]", "[time]", text)
    return text.splitlines()


def _specs(qm: QuantizedModule) -> list[Any]:
    return [(v.name, v.quant) for n in qm.graph.nodes for v in n.outputs if v.quant is not None]


def _only_file(folder: Path) -> Path:
    files = list(folder.iterdir())
    assert len(files) == 1, files
    return files[0]


def test_two_threads_compiling_at_once_write_two_complete_separate_logs(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    global _barrier
    _barrier = threading.Barrier(1)
    sequential = _compile_meeting(cnn, batches, tmp_path / "sequential")
    reference = _normalised(_only_file(tmp_path / "sequential").read_text("utf-8"), "MainThread")

    _barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def work(name: str) -> None:
        try:
            results[name] = _compile_meeting(cnn, batches, tmp_path / name)
        except BaseException as error:  # reported below, in the test's thread
            results[name] = error
            _barrier.abort()

    threads = [
        threading.Thread(target=work, args=(name,), name=name) for name in ("runner-a", "runner-b")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert current_run() is None
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(9))
    for name, other in (("runner-a", "runner-b"), ("runner-b", "runner-a")):
        qm = results[name]
        assert isinstance(qm, QuantizedModule), qm
        assert qm.report is not None and qm.report.log_path == _only_file(tmp_path / name)
        text = qm.report.log_path.read_text("utf-8")
        assert f"Meeting in {name}" in text and f"Leaving the meeting in {name}" in text
        assert f"in {other}\n" not in text
        # Complete: line for line the log of the same run made alone.
        assert _normalised(text, name) == reference
        # Identical results to the sequential run.
        with torch.no_grad():
            assert torch.equal(qm(x), sequential(x))
        assert _specs(qm) == _specs(sequential)


def test_a_line_logged_in_a_thread_without_a_run_reaches_no_run(tmp_path: Path) -> None:
    with start_run_log(tmp_path, console=False) as run:
        worker = threading.Thread(target=lambda: log.info("from a thread without a run"))
        worker.start()
        worker.join()
        log.info("from the run's thread")
    text = run.path.read_text("utf-8") if run.path else ""
    assert "from the run's thread" in text and "without a run" not in text


_PROCESS_SCRIPT = """
import sys
import torch
import acekit
from acekit.settings import Settings, TrainingSettings

steps, logs, onnx = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
    torch.nn.Flatten(), torch.nn.Linear(4 * 12 * 12, 10),
)
data = [torch.randn(1, 3, 16, 16) for _ in range(steps)]
settings = Settings(training=TrainingSettings(stats_steps=steps))
qm = acekit.compile(model.eval(), example_inputs=(data[0],), calibration_inputs=data,
                    settings=settings, logs_dir=logs)
if onnx:
    qm.export(onnx[0])
print(qm.report.log_path)
"""


def _python(script: str, *args: str, **options: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **options.pop("env", {})}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **options,
    )  # fmt: skip


def test_four_processes_write_four_complete_logs_and_the_same_export_bytes(
    tmp_path: Path,
) -> None:
    # The last two processes compile the same model on the same data and export it:
    # their files must be byte for byte the same. (Each process costs seconds of
    # imports, so the four that share a log folder also prove that exports are stable.)
    logs = tmp_path / "logs"
    runs = [(1, []), (2, []), (3, [tmp_path / "first.onnx"]), (3, [tmp_path / "second.onnx"])]
    processes = [
        _python(_PROCESS_SCRIPT, str(steps), str(logs), *map(str, onnx)) for steps, onnx in runs
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    paths = [Path(out.strip()) for out, _ in outputs]
    assert sorted(paths) == sorted(logs.iterdir())
    for (steps, _), path in zip(runs, paths, strict=True):
        text = path.read_text("utf-8")
        assert text.count("acekit Version:") == 1
        assert re.findall(r"^\+ stats_steps = (\d+)$", text, re.M) == [str(steps)]
        assert f"Calibrated on {steps} batches" in text
        assert text.rstrip().endswith("Quantization: done")
    first, second = ((tmp_path / name).read_bytes() for name in ("first.onnx", "second.onnx"))
    assert len(first) > 1000 and first == second


def test_log_names_are_unique_within_one_microsecond(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Frozen(acekit_logging._dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2026, 1, 2, 3, 4, 5, 6)

    monkeypatch.setattr(acekit_logging._dt, "datetime", Frozen)
    names = [acekit_logging._new_log_path(tmp_path).name for _ in range(3)]
    assert names == [
        "acekit_2026-01-02_03-04-05.000006.log",
        "acekit_2026-01-02_03-04-05.000006-1.log",
        "acekit_2026-01-02_03-04-05.000006-2.log",
    ]


def test_logs_dir_none_writes_no_file(
    cnn: SmallCNN,
    batches: list[torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    qm = acekit.compile(
        cnn, example_inputs=(batches[0],), calibration_inputs=batches, logs_dir=None
    )
    assert qm.report is not None and qm.report.log_path is None
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert "Running pipeline: cleanup,ptq" in err and "Created log at" not in err


_READ_ONLY_SCRIPT = """
import os
import torch
import acekit

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
x = torch.randn(1, 3, 8, 8)
qm = acekit.compile(model, example_inputs=(x,), calibration_inputs=[x])
print(qm.report.log_path)
print(sorted(os.listdir(".")))
"""


def _read_only_cwd(folder: Path, argv: list[str]) -> tuple[list[str], dict[str, Any]] | None:
    """A command running ``argv`` in ``folder`` made read-only, or None when impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return argv, {"cwd": folder}
    # Permissions do not stop root: a read-only mount in a private mount namespace does.
    if shutil.which("unshare") is None:
        return None
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        return None
    script = 'mount -t tmpfs -o ro tmpfs "$0" && cd "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(folder), *argv], {}


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_read_only_working_folder_does_not_break_compile(tmp_path: Path) -> None:
    folder, temp = tmp_path / "read-only", tmp_path / "temp"
    folder.mkdir()
    temp.mkdir()
    command = _read_only_cwd(folder, [sys.executable, "-c", _READ_ONLY_SCRIPT])
    if command is None:
        pytest.skip("running as root without mount namespaces: cannot make a read-only folder")
    argv, options = command
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, **options)
    folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    log_path, listing = result.stdout.splitlines()[-2:]
    assert listing == "[]"
    assert Path(log_path).parent == temp / f"acekit-logs-{os.getuid()}"
    assert "Quantization: done" in Path(log_path).read_text("utf-8")
    assert "cannot write the run log to 'logs'" in result.stderr
    assert f"writing it to '{log_path}' instead" in result.stderr
    assert "pass logs_dir= a writable folder, or logs_dir=None" in result.stderr


def test_compile_leaves_the_callers_random_generators_alone(
    cnn: SmallCNN, batches: list[torch.Tensor], tmp_path: Path
) -> None:
    def draw() -> tuple[float, float, torch.Tensor]:
        return random.random(), float(np.random.rand()), torch.rand(3)

    def seed() -> None:
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(123)

    seed()
    expected = draw()
    seed()
    acekit.compile(cnn, example_inputs=(batches[0],), calibration_inputs=batches, logs_dir=tmp_path)
    actual = draw()
    assert actual[:2] == expected[:2] and torch.equal(actual[2], expected[2])


def test_the_seed_still_applies_inside_the_run(cnn: SmallCNN, tmp_path: Path) -> None:
    data = TensorDataset(torch.randn(16, *SHAPE[1:], generator=torch.Generator().manual_seed(2)))

    def scales(seed: int) -> list[Any]:
        # A shuffling loader without its own generator draws from torch's global one.
        loader = DataLoader(data, batch_size=2, shuffle=True)
        torch.manual_seed(1000 + seed)  # the caller's state must not matter
        settings = Settings(training=TrainingSettings(stats_steps=2, random_seed=seed))
        qm = acekit.compile(
            cnn, example_inputs=(data[0][0][None],), calibration_inputs=loader,
            settings=settings, logs_dir=tmp_path,
        )  # fmt: skip
        return [v.quant.scale for n in qm.graph.nodes for v in n.outputs if v.quant is not None]

    assert scales(0) == scales(0)
    assert scales(0) != scales(1)
