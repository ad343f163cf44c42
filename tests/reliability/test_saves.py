"""Output paths and saves: checked before work, and a crash or SIGKILL mid-save leaves
the previous file as it was.

The kill test runs an export and a settings save in a child process that stops both
just before the rename, the new files complete beside the old ones, and kills it there
with SIGKILL. (A SIGKILL in the middle of acekit.fileio's atomic write, which ``save`` uses,
is test_file_modes.py's.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import acekit
from acekit.fileio import OutputPathError
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import Settings
from tests.reliability.models import Tiny

SHAPE = (2, 3, 16, 16)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> QuantizedModule:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Tiny().eval()
        data = [torch.randn(*SHAPE) for _ in range(3)]
    logs = tmp_path_factory.mktemp("logs")
    return acekit.compile(
        model, example_inputs=(data[0],), calibration_inputs=data, logs_dir=str(logs)
    )


@pytest.fixture(scope="module")
def saved(compiled: QuantizedModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled model saved once: what the child processes load."""
    return compiled.save(tmp_path_factory.mktemp("saved") / "tiny.acekit")


# -- paths checked before work ---------------------------------------------------------------


def test_export_refuses_an_existing_file_and_leaves_it(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the user's file")
    with pytest.raises(OutputPathError, match="exists; pass overwrite=True"):
        compiled.export(path)
    assert path.read_bytes() == b"the user's file"
    compiled.export(path, overwrite=True)
    assert path.read_bytes().startswith(b"\x08")  # an ONNX protobuf now


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("folder", "is a directory"),
        ("missing/model.onnx", "does not exist"),
        ("a_file/model.onnx", "does not exist"),
    ],
)
def test_export_to_a_path_that_cannot_be_a_file_is_refused(
    compiled: QuantizedModule, tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(OutputPathError, match=message):
        compiled.export(tmp_path / where)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_export_into_a_read_only_folder_is_refused(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="not writable"):
            compiled.export(folder / "model.onnx")
    finally:
        folder.chmod(0o700)


def test_save_without_overwrite_refuses_an_existing_file(
    compiled: QuantizedModule, tmp_path: Path
) -> None:
    path = tmp_path / "run.acekit"
    path.write_bytes(b"older run")
    with pytest.raises(OutputPathError, match="exists"):
        compiled.save(path, overwrite=False)
    assert path.read_bytes() == b"older run"


# -- an exception mid-save -------------------------------------------------------------------


def test_an_error_mid_save_leaves_the_old_file(
    compiled: QuantizedModule, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.acekit"
    path.write_bytes(saved.read_bytes())

    def half_then_fail(payload: object, file: object) -> None:
        Path(str(file)).write_bytes(saved.read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        compiled.save(path)
    assert path.read_bytes() == saved.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["run.acekit"]


def test_an_error_mid_export_leaves_the_old_file(
    compiled: QuantizedModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    path = compiled.export(tmp_path / "model.onnx")
    before = path.read_bytes()

    def half_then_fail(model: object, file: str) -> None:
        Path(file).write_bytes(before[:100])
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        compiled.export(path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# -- SIGKILL mid-save ------------------------------------------------------------------------

#: The child: an export and a settings save that each stop before the rename, say so on
#: stdout and wait there to be killed. One process does both, in two threads: a process
#: costs seconds of imports.
CHILD = """
import os, sys, threading, time

source, onnx_path, settings_path = sys.argv[1:4]
printing = threading.Lock()

def before_rename(src, dst):
    with printing:
        sys.stdout.write(f"stalled {os.path.basename(dst)}\\n")
        sys.stdout.flush()
    time.sleep(600)

import acekit
from acekit.settings import Settings

model = acekit.load(source)  # loads the plugins before the two threads need them
os.replace = before_rename
settings = Settings.from_dict({"training": {"stats_steps": 3}})
threading.Thread(target=settings.save, args=(settings_path,), daemon=True).start()
model.export(onnx_path, overwrite=True)
"""


def test_sigkill_mid_export_and_mid_settings_save_leaves_the_old_files(
    compiled: QuantizedModule, saved: Path, tmp_path: Path
) -> None:
    targets = [compiled.export(tmp_path / "model.onnx"), Settings().save(tmp_path / "s.toml")]
    before = [target.read_bytes() for target in targets]
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(saved), *map(str, targets)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    try:
        assert child.stdout is not None
        lines = {child.stdout.readline(), child.stdout.readline()}
        expected = {f"stalled {target.name}\n" for target in targets}
        assert lines == expected, child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert [target.read_bytes() for target in targets] == before
    assert Settings.from_file(targets[1]) == Settings()
