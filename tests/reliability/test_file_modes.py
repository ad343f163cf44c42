"""Files a deployment can read: modes, overwrites, fsync, killed writers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import acekit
from acekit.fileio import TMP_SUFFIX, atomic_torch_save, atomic_write
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import Settings
from tests.quant_support import SmallCNN, trained_like

SHAPE = (1, 3, 32, 32)
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModule:
    cnn = trained_like(SmallCNN(), SHAPE)
    data = [torch.randn(*SHAPE, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    return acekit.compile(
        cnn,
        example_inputs=(data[0],),
        calibration_inputs=data,
        logs_dir=tmp_path_factory.mktemp("logs"),
    )


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for the test; the old one comes back after."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX)]


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_umasks_mode(
    compiled: QuantizedModule, tmp_path: Path, umask: Any, mask: int, expected: int
) -> None:
    umask(mask)
    written = [
        atomic_write(tmp_path / "plain.bin", lambda tmp: tmp.write_bytes(b"data")),
        compiled.save(tmp_path / "model.acekit"),
        compiled.export(tmp_path / "model.onnx"),
        compiled.visualize(tmp_path / "model.dot"),
        Settings().save(tmp_path / "settings.toml"),
    ]
    assert {path.name: _mode(path) for path in written} == {p.name: expected for p in written}
    assert _temporaries(tmp_path) == []


def test_an_overwritten_file_keeps_its_mode(
    compiled: QuantizedModule, tmp_path: Path, umask: Any
) -> None:
    umask(0o077)
    for name, mode in [("model.acekit", 0o640), ("model.onnx", 0o644), ("model.dot", 0o604)]:
        path = tmp_path / name
        path.write_bytes(b"old")
        path.chmod(mode)
        if name.endswith(".acekit"):
            compiled.save(path)
        elif name.endswith(".onnx"):
            compiled.export(path, overwrite=True)
        else:
            compiled.visualize(path)
        assert path.read_bytes() != b"old"
        assert _mode(path) == mode, name


def test_data_is_synced_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(source: Any, target: Any) -> None:
        events.append(("replace", os.fspath(source)))
        replace(source, target)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name synced descriptors")
    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "model.pt")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1] == events[1][1] and events[0][1].endswith(TMP_SUFFIX)
    assert events[2][1] == str(tmp_path)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []


_KILLED_WRITER = """
import sys
import time
from acekit.fileio import atomic_write

def write(tmp):
    with open(tmp, "wb") as handle:
        handle.write(b"new" * 100000)
        handle.flush()
        print("writing", flush=True)
        time.sleep(120)

atomic_write(sys.argv[1], write)
"""


def test_sigkill_mid_save_leaves_the_old_file_and_no_temporary_that_matters(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    path = tmp_path / "model.acekit"
    compiled.save(path)
    old = path.read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    assert path.read_bytes() == old
    assert acekit.load(path).graph is not None
    [stray] = _temporaries(tmp_path)
    assert stray.name.startswith(f".{path.name}.{writer.pid}.")

    # The next save works at once; the fresh leftover is left alone (it might be a
    # writer on another machine) until it has been still for a while.
    compiled.save(path)
    assert _temporaries(tmp_path) == [stray]
    an_hour_ago = time.time() - 3600
    os.utime(stray, (an_hour_ago, an_hour_ago))
    compiled.save(path)
    assert _temporaries(tmp_path) == []
    assert acekit.load(path).graph is not None


def test_a_live_writers_temporary_is_never_removed(tmp_path: Path) -> None:
    live = tmp_path / f".model.pt.{os.getppid()}.0123abcd{TMP_SUFFIX}"
    live.write_bytes(b"in progress")
    os.utime(live, (0, 0))
    atomic_torch_save({"w": torch.ones(1)}, tmp_path / "model.pt")
    assert live.exists()
