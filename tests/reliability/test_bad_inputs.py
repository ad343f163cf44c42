"""The Python API on bad input: refused early, by name, with what to do.

Calibration data (NaN/Inf, empty, shapes, dtypes, dict batches), example inputs,
settings (typos, values, unreadable files), models the IR cannot express (unsupported
ops, control flow on tensor data), and what ``qm(x)`` does with non-finite input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import acekit
from acekit.api import ExampleInputsError, ParseError
from acekit.parsing import ModelRaisedError, UnsupportedOpsError
from acekit.quant.data import CalibrationDataError
from acekit.settings import Settings, SettingsError
from acekit_fx import TraceFailedError
from acekit_torchscript import ScriptingFailedError
from tests.reliability.models import Tiny

SHAPE = (2, 3, 16, 16)

# TorchScript warns that it is deprecated on every trace and script.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")


class Angles(nn.Module):
    """An op the IR lacks (lgamma), inside a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.body = Polar()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + 1


class Polar(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x + 2)


class Branchy(nn.Module):
    """Control flow on tensor values: no single graph computes it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -x


def tiny() -> Tiny:
    """The same weights every time, whatever the global generator's state."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Tiny().eval()


def batches(count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(*SHAPE, generator=generator) for _ in range(count)]


def compile_tiny(tmp_path: Path, **options: Any) -> acekit.QuantizedModule:
    arguments: dict[str, Any] = {
        "example_inputs": (batches(1)[0],),
        "calibration_inputs": batches(),
        "logs_dir": str(tmp_path),
    }
    return acekit.compile(tiny(), **{**arguments, **options})


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if compile gets as far as parsing the model."""
    import acekit.quant.compile as compile_module

    def parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was parsed despite bad input")

    monkeypatch.setattr(compile_module, "parse_as_declared", parse)


# -- calibration data ------------------------------------------------------------------------

NAN = torch.full(SHAPE, float("nan"))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([NAN], ["batch 0", "'x'", "NaN", "finite"]),
        ([torch.full(SHAPE, -float("inf"))], ["Inf"]),
        ([], ["empty"]),
        (iter([]), ["empty"]),
        ([torch.randn(3, 16, 16)], ["shape (3, 16, 16)"]),
        ([torch.zeros(SHAPE, dtype=torch.int64)], ["dtype torch.int64"]),
        ([{"image": torch.randn(*SHAPE)}], ["dict without the model input(s) 'x'", "'image'"]),
        ([("not a tensor",)], ["is a str, not a tensor"]),
        (["text"], ["is a str", "select="]),
        (42, ["got int"]),
    ],
    ids=[
        "nan",
        "minus-inf",
        "empty-list",
        "empty-iterator",
        "rank",
        "int-dtype",
        "dict-missing-input",
        "tuple-of-str",
        "str-batch",
        "int",
    ],
)
@pytest.mark.usefixtures("no_parsing")
def test_bad_calibration_data_is_named_before_parsing(
    tmp_path: Path, data: Any, words: list[str]
) -> None:
    with pytest.raises(CalibrationDataError) as caught:
        compile_tiny(tmp_path, calibration_inputs=data)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.usefixtures("no_parsing")
def test_a_size_the_user_fixed_is_refused_before_parsing(tmp_path: Path) -> None:
    # A first batch of another image size frees those dims (acekit.dims), unless the
    # user's dynamic_shapes= keeps them static: then the batch is refused by name.
    with pytest.raises(CalibrationDataError) as caught:
        compile_tiny(
            tmp_path,
            calibration_inputs=[torch.randn(2, 3, 8, 8)],
            dynamic_shapes={"x": {0: "batch"}},
        )
    assert "shape (2, 3, 8, 8)" in str(caught.value)
    assert "dynamic_shapes=" in str(caught.value)


def test_a_bad_later_batch_stops_calibration_by_name(tmp_path: Path) -> None:
    # Only the first batch is checked before parsing (a DataLoader may be long); the
    # others are checked as calibration reads them.
    data = [*batches(2), torch.full(SHAPE, float("inf"))]
    with pytest.raises(Exception) as caught:
        compile_tiny(tmp_path, calibration_inputs=data)
    error = caught.value
    cause = error if isinstance(error, CalibrationDataError) else error.__cause__
    assert isinstance(cause, CalibrationDataError)
    assert "calibration batch 2, input 'x' contains Inf" in str(cause)


def test_dict_batches_calibrate_like_tensor_batches(tmp_path: Path) -> None:
    plain = compile_tiny(tmp_path / "plain")
    keyed = compile_tiny(tmp_path / "keyed", calibration_inputs=[{"x": b} for b in batches()])
    scales = [
        (a.quant.scale, b.quant.scale)
        for n, m in zip(plain.graph.nodes, keyed.graph.nodes, strict=True)
        for a, b in zip(n.outputs, m.outputs, strict=True)
        if a.quant is not None and b.quant is not None
    ]
    assert scales and all(a == b for a, b in scales)


# -- example inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "words"),
    [
        ((torch.randn(*SHAPE), torch.randn(*SHAPE)), ["Tiny.forward(x)", "2 example inputs"]),
        ([[1, 2]], ["example input 0", "not a tensor"]),
        ("image", ["tensor or a tuple of tensors"]),
    ],
    ids=["too-many", "list", "str"],
)
@pytest.mark.usefixtures("no_parsing")
def test_example_inputs_that_do_not_fit_are_named(
    tmp_path: Path, example: Any, words: list[str]
) -> None:
    with pytest.raises(ExampleInputsError) as caught:
        compile_tiny(tmp_path, example_inputs=example)
    for word in words:
        assert word in str(caught.value)


def test_an_example_input_of_the_wrong_dtype_names_the_layer(tmp_path: Path) -> None:
    with pytest.raises(ModelRaisedError, match=r"node 'conv'.*Double|node 'conv'.*double"):
        compile_tiny(tmp_path, example_inputs=(torch.randn(*SHAPE, dtype=torch.float64),))


def test_nan_example_inputs_only_shape_the_graph(tmp_path: Path) -> None:
    # Example inputs are traced, never calibrated on: NaN in them changes nothing.
    qm = compile_tiny(tmp_path / "nan", example_inputs=(NAN,))
    reference = compile_tiny(tmp_path / "ref")
    x = batches(1)[0]
    with torch.no_grad():
        assert torch.equal(qm(x), reference(x))


def test_the_quantized_model_passes_nan_through_without_failing(tmp_path: Path) -> None:
    qm = compile_tiny(tmp_path)
    with torch.no_grad():
        out = qm(NAN)
        finite = qm(batches(1)[0])
    assert out.shape == finite.shape and bool(out.isnan().all())
    assert bool(torch.isfinite(finite).all())


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"quantization": {"weights_num_bit": 4}}, ["did you mean 'weights_num_bits'"]),
        ({"quantisation": {}}, ["did you mean 'quantization'"]),
        ({"training": {"stats_steps": 0}}, ["training.stats_steps"]),
        ({"training": {"stats_steps": "20"}}, ["training.stats_steps"]),
        ({"quantization": {"weights_num_bits": 12}}, ["quantization.weights_num_bits"]),
        ({"deployment": {"target_framework": "onnxruntim"}}, ["onnxruntime"]),
        ({"layers": {"conv": {"skip_quantisation": True}}}, ["did you mean"]),
    ],
    ids=["key", "section", "range", "type", "bits", "target", "layer-key"],
)
def test_settings_mistakes_name_the_key_and_what_is_allowed(
    data: dict[str, Any], words: list[str], tmp_path: Path
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_dict(data)
    for word in words:
        assert word in str(caught.value)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SettingsError, match="settings.json"):
        Settings.from_file(path)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("latin1.toml", "# r\xe9glages\n".encode("latin-1"), ["not UTF-8", "0xe9", "as UTF-8"]),
        ("utf16.json", "{}".encode("utf-16"), ["not UTF-8"]),
        ("broken.yaml", b"training: [1,\n", ["not valid YAML"]),
        ("broken.json", b"{", ["not valid JSON"]),
        ("missing.toml", None, ["no such settings file"]),
        ("settings.ini", b"", ["extension '.ini'", ".toml"]),
    ],
    ids=["latin-1", "utf-16", "yaml", "json", "missing", "extension"],
)
def test_unreadable_settings_files_are_named(
    tmp_path: Path, name: str, content: bytes | None, words: list[str]
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_file(path)
    assert str(path) in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_a_settings_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "settings.toml"
    folder.mkdir()
    with pytest.raises(SettingsError, match="is a directory"):
        Settings.from_file(folder)


# -- models the IR cannot express ------------------------------------------------------------


def test_an_unsupported_op_names_it_and_what_to_do() -> None:
    with pytest.raises(UnsupportedOpsError) as caught:
        acekit.parse(Angles(), torch.randn(2, 4))
    text = str(caught.value)
    assert "torch.lgamma (node 'lgamma', in 'Angles/body'" in text
    remedy = text[text.index("What to do:") :]
    assert "FxParser(leaf_modules=(type(model.body),))" in remedy
    assert "parser='torchscript'" in remedy
    assert "docs/ir-ops.md" in remedy
    assert "docs/writing-a-plugin.md#ops-of-your-own" in remedy


def test_the_torchscript_parser_points_back_to_fx() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(UnsupportedOpsError) as caught:
        acekit.parse(torch.jit.trace(Angles(), x), x)
    text = str(caught.value)
    assert "aten::lgamma" in text and "parser='fx'" in text


def test_control_flow_on_tensor_data_suggests_what_works() -> None:
    model, x = Branchy().eval(), torch.ones(2, 4)
    with pytest.raises(TraceFailedError) as caught:
        acekit.parse(model, x)
    text = str(caught.value)
    assert "torch.where" in text and "torch.jit.trace(model, example_inputs)" in text
    # The suggestion works: the traced model parses into the branch the example takes.
    graph = acekit.parse(torch.jit.trace(model, x), x, parser="torchscript")
    with torch.no_grad():
        assert torch.allclose(graph.to_module()(x), model(x))


def test_the_torchscript_parser_scripts_a_plain_module_and_names_tensor_control_flow() -> None:
    # Once a bare TypeError; now the module is scripted and the branch is reported.
    with pytest.raises(UnsupportedOpsError) as caught:
        acekit.parse(Branchy(), torch.ones(2, 4), parser="torchscript")
    assert caught.value.remedies[0].startswith("control flow on tensor values")
    graph = acekit.parse(tiny(), torch.randn(*SHAPE), parser="torchscript")
    assert [n.op for n in graph.nodes if n.op in ("conv2d", "linear")] == ["conv2d", "linear"]


def test_a_module_torch_jit_script_rejects_is_a_parse_error() -> None:
    class Unscriptable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * len({id(x): x})

    with pytest.raises(ScriptingFailedError) as caught:
        acekit.parse(Unscriptable(), torch.randn(2), parser="torchscript")
    assert isinstance(caught.value, ParseError)
    assert "torch.jit.trace(model, example_inputs)" in str(caught.value)


def test_compile_takes_the_parser_object_the_remedies_suggest(tmp_path: Path) -> None:
    from acekit_fx import FxParser

    parsed: list[str] = []

    class Recording(FxParser):
        def parse(self, model: Any, example_inputs: tuple[Any, ...]) -> Any:
            parsed.append(type(model).__name__)
            return super().parse(model, example_inputs)

    qm = compile_tiny(tmp_path, parser=Recording(leaf_modules=(Polar,)))
    assert parsed == ["Tiny"]
    assert qm.report is not None and qm.report.quantized > 0
