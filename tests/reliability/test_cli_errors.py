"""``acekit quantize`` on bad input: one ``error:`` line naming the culprit and the fix.

Every case ends with exit code 2 and no traceback, before the model is loaded where the
mistake is in the arguments. The cases run through ``acekit.cli.main`` in this process
(an escaping exception would fail the test); one also runs as a real
``python -m acekit.cli`` process, to check what a user sees on the terminal.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acekit.cli import main

#: The user's project: a model factory module, imported by ``acekit quantize`` by name.
MODELS = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class Odd(Tiny):
    def forward(self, x):
        return torch.lgamma(super().forward(x) + x.mean())


class Sized(Tiny):
    def __init__(self, width):
        super().__init__()


NUMBER = 42


class Branchy(Tiny):
    def forward(self, x):
        if x.sum() > 0:
            return super().forward(x)
        return -super().forward(x)
"""

SHAPE = ["--input-shape", "1,3,16,16"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the model module and good and bad calibration files of every kind."""
    root = tmp_path_factory.mktemp("project")
    (root / "user_models.py").write_text(MODELS)
    good = root / "good.png"
    Image.new("RGB", (20, 20), (40, 80, 120)).save(good)
    for name, data in {
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "corrupt": b"\x89PNG\r\n\x1a\n not really a picture",
    }.items():
        folder = root / name
        folder.mkdir()
        (folder / "a_good.png").write_bytes(good.read_bytes())
        (folder / "b_bad.png").write_bytes(data)
    np.save(root / "objects.npy", np.array([{"x": 1}], dtype=object))
    np.save(root / "empty.npy", np.zeros((0, 3, 16, 16), np.float32))
    np.save(root / "wrong_shape.npy", np.zeros((4, 3, 8, 8), np.float32))
    np.save(root / "nan.npy", np.full((2, 3, 16, 16), np.nan, np.float32))
    late_inf = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    late_inf[2, 0, 0, 0] = np.inf
    np.save(root / "late_inf.npy", late_inf)
    whole = (root / "nan.npy").read_bytes()
    (root / "truncated.npy").write_bytes(whole[: len(whole) // 2])
    (root / "cut_header.npy").write_bytes(whole[:20])
    (root / "text.npy").write_text("1, 2, 3")
    (root / "text.pt").write_text("not a tensor file")
    torch.save({"x": torch.zeros(2, 3, 16, 16)}, root / "dict.pt")
    latin1 = "[training]\n# r\xe9glages\nstats_steps = 2\n".encode("latin-1")
    (root / "latin1.toml").write_bytes(latin1)
    (root / "typo.toml").write_text("[quantization]\nweights_num_bit = 4\n")
    (root / "bad_value.toml").write_text("[quantization]\nweights_num_bits = 12\n")
    (root / "broken.toml").write_text("[quantization\n")
    (root / "a_file").write_text("not a folder")
    return root


def quantize(project: Path, model: str, *args: str) -> list[str]:
    """``acekit quantize`` in this process; returns the argument list used."""
    return ["quantize", model, *SHAPE, "--out", str(project / "out"), *args]


# (model, extra arguments, words the error line must hold); {p} is the project folder.
CASES = {
    "truncated image": ("Tiny", ["--calibration", "{p}/truncated"], ["b_bad.png", "truncated"]),
    "corrupt image": ("Tiny", ["--calibration", "{p}/corrupt"], ["b_bad.png", "replace it"]),
    "missing .npy": ("Tiny", ["--calibration", "{p}/gone.npy"], ["gone.npy", "no such file"]),
    "missing .pt": ("Tiny", ["--calibration", "{p}/gone.pt"], ["gone.pt", "no such file"]),
    "object .npy": ("Tiny", ["--calibration", "{p}/objects.npy"], ["objects.npy", "numeric"]),
    "text .npy": ("Tiny", ["--calibration", "{p}/text.npy"], ["text.npy", "numpy.save"]),
    "truncated .npy": ("Tiny", ["--calibration", "{p}/truncated.npy"], ["truncated", "again"]),
    "cut .npy header": ("Tiny", ["--calibration", "{p}/cut_header.npy"], ["truncated", "again"]),
    "empty .npy": ("Tiny", ["--calibration", "{p}/empty.npy"], ["empty.npy", "no inputs"]),
    "wrong shape .npy": ("Tiny", ["--calibration", "{p}/wrong_shape.npy"], ["(4, 3, 8, 8)"]),
    "NaN .npy": ("Tiny", ["--calibration", "{p}/nan.npy"], ["NaN", "finite"]),
    "Inf in batch 2": ("Tiny", ["--calibration", "{p}/late_inf.npy"], ["batch 2", "Inf"]),
    "text .pt": ("Tiny", ["--calibration", "{p}/text.pt"], ["text.pt", "torch.save"]),
    "dict .pt": ("Tiny", ["--calibration", "{p}/dict.pt"], ["dict.pt", "a dict", "torch.save"]),
    "unknown source": ("Tiny", ["--calibration", "{p}/data.csv"], ["data.csv", "folder"]),
    "missing settings": ("Tiny", ["--settings", "{p}/gone.toml"], ["gone.toml", "no such"]),
    "latin-1 settings": ("Tiny", ["--settings", "{p}/latin1.toml"], ["latin1.toml", "UTF-8"]),
    "settings typo": ("Tiny", ["--settings", "{p}/typo.toml"], ["weights_num_bit", "did you"]),
    "settings value": ("Tiny", ["--settings", "{p}/bad_value.toml"], ["weights_num_bits"]),
    "broken settings": ("Tiny", ["--settings", "{p}/broken.toml"], ["broken.toml", "TOML"]),
    "settings extension": ("Tiny", ["--settings", "{p}/a_file"], ["a_file", ".toml"]),
    "--out is a file": ("Tiny", ["--out", "{p}/a_file"], ["a_file", "give a folder"]),
    "--out under a file": ("Tiny", ["--out", "{p}/a_file/sub"], ["a_file", "give a folder"]),
    "bad shape": ("Tiny", ["--input-shape", "1,3,x"], ["--input-shape", "integers"]),
    "bits": ("Tiny", ["--weights-bits", "12"], ["weights_num_bits"]),
    "factory with arguments": ("Sized", [], ["user_models:Sized", "(width)", "takes none"]),
    "no module": ("Nope", [], ["user_models:Nope", "cannot load"]),
    "not a model": ("NUMBER", [], ["user_models:NUMBER", "type int", "model class"]),
    "unsupported op": ("Odd", [], ["torch.lgamma", "'Odd'"]),
    "control flow": ("Branchy", [], ["'Branchy'", "cannot trace"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_error_line_with_exit_code_2(
    case: str,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, extra, words = CASES[case]
    monkeypatch.syspath_prepend(str(project))
    args = [arg.replace("{p}", str(project)) for arg in extra]
    code = main(quantize(project, f"user_models:{model}", *args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("acekit quantize: error: "), err
    for word in words:
        assert word in errors[0], (word, errors[0])


def test_an_unsupported_op_says_what_to_do(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project))
    assert main(quantize(project, "user_models:Odd")) == 2
    err = capsys.readouterr().err
    remedy = err[err.index("What to do:") :]
    assert "parser='torchscript'" in remedy
    assert "docs/writing-a-plugin.md" in remedy
    assert "docs/ir-ops.md" in remedy


def test_data_dependent_control_flow_suggests_what_works(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project))
    assert main(quantize(project, "user_models:Branchy")) == 2
    err = capsys.readouterr().err
    assert "torch.where" in err
    assert "torch.jit.trace(model, example_inputs)" in err


def test_the_model_is_not_imported_when_the_arguments_are_wrong(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A module that would fail to import: the calibration mistake is reported first.
    args = quantize(project, "no_such_package:factory", "--calibration", str(project / "x.npy"))
    assert main(args) == 2
    assert "x.npy: no such file" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_created_is_one_line(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What root meets on a read-only file system, where the permission check passes.
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(quantize(project, "user_models:Tiny", "--out", str(project / "new"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("acekit quantize: error: --out ") and "cannot create" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_demo_refuses_an_out_that_is_a_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(project / "a_file")]) == 2
    assert "acekit demo: error: --out" in capsys.readouterr().err


def test_the_terminal_shows_one_line_and_no_traceback(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "acekit.cli", "quantize", "user_models:Tiny", *SHAPE]
    done = subprocess.run(
        [*command, "--calibration", "truncated"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acekit quantize: error: ")
    assert "b_bad.png" in lines[0] and "truncated" in lines[0]
    assert done.stdout == ""
    assert not (project / "out" / "quantize").exists()  # the default --out was not created
