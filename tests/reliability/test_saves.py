"""Output paths and saves: checked before work, and a crash or SIGKILL mid-save leaves
the previous file as it was.

The kill tests run an export and a settings save in a child process that stops just
before the rename, the new file complete beside the old one, and kill it there with
SIGKILL. (A SIGKILL in the middle of acekit.fileio's atomic write, which ``save`` uses,
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
from torch import nn

import acekit
from acekit.fileio import OutputPathError
from acekit.runtime.quantized import QuantizedModule
from acekit.settings import Settings

SHAPE = (2, 3, 16, 16)


class Tiny(nn.Module):
    """conv -> relu -> global pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


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

#: The child: arranges to stop before the rename, says so on stdout, and waits there to
#: be killed.
CHILD = """
import os, sys, time

kind, source, target = sys.argv[1:4]

def before_rename(src, dst):
    print("stalled", flush=True)
    time.sleep(600)

os.replace = before_rename

if kind == "settings":  # acekit.settings alone: no torch to import
    from acekit.settings import Settings
    Settings.from_dict({"training": {"stats_steps": 3}}).save(target)
else:
    import acekit
    acekit.load(source).export(target, overwrite=True)
"""


@pytest.mark.parametrize("kind", ["export", "settings"])
def test_sigkill_mid_save_leaves_the_old_file(
    kind: str, compiled: QuantizedModule, saved: Path, tmp_path: Path
) -> None:
    if kind == "export":
        target = compiled.export(tmp_path / "model.onnx")
    else:
        target = Settings().save(tmp_path / "settings.toml")
    before = target.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), kind, str(saved), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "stalled\n", child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert target.read_bytes() == before
    if kind == "settings":
        assert Settings.from_file(target) == Settings()
