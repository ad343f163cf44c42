"""A third-party plugin, pip-installed on its own, is found with no change to acekit.

``tests/third_party_plugin`` is a separate distribution (``acekit-example-plugin``) with
its own pyproject.toml; docs/writing-a-plugin.md walks through it. It is built and
installed with pip into a temporary folder, which then goes on the path.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import numpy_helper

from acekit.ir import Graph, TensorType
from acekit.passes import Pipeline
from acekit.plugin import get_plugin_manager, get_registry, reset_plugins
from acekit.testing import check_target

SOURCE = Path(__file__).parent / "third_party_plugin"
DOCS = Path(__file__).parents[1] / "docs" / "writing-a-plugin.md"
PACKAGE = "acekit_example_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the example plugin was pip-installed into (``pip install --target``)."""
    work = tmp_path_factory.mktemp("example-plugin")
    # Building from a copy keeps build/ and *.egg-info out of the source tree and lets
    # parallel test workers build without racing on them.
    source = work / "source"
    shutil.copytree(
        SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = work / "site"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "--quiet",
        "--target",
        str(target),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    assert (target / PACKAGE / "__init__.py").is_file()
    return target


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed plugin importable in this process, plugins reloaded."""
    monkeypatch.delenv("ACEKIT_DISABLE_PLUGINS", raising=False)
    sys.path.insert(0, str(installed))
    importlib.invalidate_caches()
    reset_plugins()
    try:
        yield installed
    finally:
        reset_plugins()
        sys.path.remove(str(installed))
        for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[module]
        importlib.invalidate_caches()


def _graph() -> Graph:
    graph = Graph("example")
    x = graph.add_input("x", TensorType(torch.float32, (2, 3)))
    identity = graph.add_node("identity", [x])
    relu = graph.add_node("relu", [identity.output])
    contiguous = graph.add_node("contiguous", [relu.output])
    graph.set_outputs([contiguous.output])
    return graph


def test_acekit_plugins_lists_the_installed_plugin(installed: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ACEKIT_DISABLE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(installed), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "acekit.cli", "plugins"]

    text = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    row = re.search(r"^example\s+acekit-example-plugin\s+0\.1\.0\s+(.*)$", text.stdout, re.M)
    assert row, text.stdout
    assert "ops: hard_swish_clamp" in text.stdout
    assert "passes: example-remove-identity" in text.stdout
    assert "presets: example-cleanup" in text.stdout
    assert "targets: example-target" in text.stdout

    listing = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stderr
    (plugin,) = [p for p in json.loads(listing.stdout)["plugins"] if p["name"] == "example"]
    assert plugin == {
        "name": "example",
        "distribution": "acekit-example-plugin",
        "version": "0.1.0",
        "module": PACKAGE,
        "registers": {
            "ops": ["hard_swish_clamp"],
            "passes": ["example-remove-identity"],
            "presets": ["example-cleanup"],
            "targets": ["example-target"],
        },
    }


def test_installed_plugin_pass_preset_and_target_work(on_path: Path, tmp_path: Path) -> None:
    registry = get_registry()
    module = sys.modules[PACKAGE]
    assert Path(module.__file__ or "").is_relative_to(on_path), "must be the installed copy"
    owner = registry.owner("passes", "example-remove-identity")
    assert (owner.name, owner.distribution, owner.version) == (
        "example",
        "acekit-example-plugin",
        "0.1.0",
    )
    assert "example" in {p.name for p in get_plugin_manager().plugins}

    pipeline = Pipeline.from_spec("example-remove-identity")
    result = pipeline.run(_graph(), verify=True)
    assert [n.op for n in result.graph] == ["input", "relu", "contiguous", "output"]
    assert result.results[0][1].stats == {"removed": 1}

    spec = "example-remove-identity{include_contiguous=true}"
    assert Pipeline.from_spec(spec).spec() == spec
    result = Pipeline.from_spec("example-cleanup").run(_graph(), verify=True)
    assert [n.op for n in result.graph] == ["input", "relu", "output"]
    assert result.results[0][1].stats == {"removed": 2}

    target = registry.targets["example-target"]
    assert (target.name, target.title) == ("example-target", "Example Target")


@pytest.mark.parametrize("options", [{}, {"weight_bits": 4, "opset": 13}])
def test_docs_example_target_passes_the_conformance_kit(
    on_path: Path, tmp_path: Path, options: dict[str, int]
) -> None:
    """The target the docs walk through meets the whole target contract."""
    report = check_target("example-target", tmp_path, options=options)
    assert report.max_step_error <= 1.0
    # No runtime_integer_ops: its runtime cannot say which ops run on integers.
    assert report.integer_ops is None
    assert report.quantized_ops == 3  # two convs and the linear of SmallNet
    model = onnx.load(str(report.exported))
    assert model.opset_import[0].version == options.get("opset", 17)
    weights = [
        numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and init.dims and len(init.dims) > 1
    ]
    bound = 7 if options.get("weight_bits") == 4 else 127
    assert weights and all(int(abs(w.astype(int)).max()) <= bound for w in weights)
    # Biases stay float (bias_bits is not set): no int32 initializer.
    assert not [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32]


def test_docs_walk_through_this_exact_package() -> None:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.S)
    files = {Path(name): body for name, body in blocks}
    root = Path(__file__).parents[1]
    assert set(files) == {
        Path("tests/third_party_plugin/pyproject.toml"),
        Path("tests/third_party_plugin/acekit_example_plugin/__init__.py"),
        Path("tests/third_party_plugin/acekit_example_plugin/ops.py"),
    }
    for name, body in files.items():
        assert body == (root / name).read_text(encoding="utf-8"), f"{name} differs from docs"


class _FusedNet(torch.nn.Module):
    """A small CNN calling the plugin's op both ways a model can."""

    def __init__(self, fused: Any) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.ops.acekit_example.hard_swish_clamp(self.conv1(x), 2.0)
        x = self.fused(self.conv2(x), 3.0)
        return self.fc(x.mean((2, 3)))


def test_installed_plugin_op_is_parsed_run_quantized_and_exported(
    on_path: Path, tmp_path: Path
) -> None:
    """docs/writing-a-plugin.md's worked example: the plugin's own op, end to end."""
    import acekit
    from acekit.ops import OPDEFS

    registry = get_registry()
    assert registry.owner("ops", "hard_swish_clamp").name == "example"
    ops = importlib.import_module(f"{PACKAGE}.ops")
    torch.manual_seed(0)
    net = _FusedNet(ops.hard_swish_clamp).eval()
    x = torch.randn(1, 3, 32, 32)

    # Every parser path finds the op by its qualified name, with max_val an attribute.
    sources = [
        (net, "fx"),
        (torch.export.export(net, (x,)), "fx"),
        (torch.jit.trace(net, (x,)), "torchscript"),
    ]
    for source, parser in sources:
        graph = acekit.parse(source, (x,), parser=parser)
        fused = [n for n in graph.nodes if n.op == "hard_swish_clamp"]
        assert [n.attrs["max_val"] for n in fused] == [2.0, 3.0]
        with torch.no_grad():  # the kernel is what the generated module runs
            assert torch.allclose(graph.to_module()(x), net(x), atol=1e-6)

    calibration = [torch.randn(4, 3, 32, 32) for _ in range(4)]  # another batch size
    qm = acekit.compile(net, example_inputs=(x,), calibration_inputs=calibration, logs_dir=None)
    conv_inputs = [
        node.inputs[0].quant for node in qm.graph.nodes if node.op in ("conv2d", "linear")
    ]
    assert len(conv_inputs) == 3 and all(s is not None and s.is_calibrated for s in conv_inputs)

    # Quantization-aware training differentiates through the op (its library's autograd).
    loss = qm.train()(torch.randn(2, 3, 32, 32)).square().mean()
    loss.backward()
    grad = dict(qm.named_parameters())["graph_module.conv1.weight"].grad
    assert grad is not None and float(grad.abs().sum()) > 0
    qm.eval().zero_grad()

    path = qm.export(tmp_path / "fused.onnx")
    model = onnx.load(str(path))
    kinds = {node.op_type for node in model.graph.node}
    # The op's ONNX lowering replaced the library call, which ONNX Runtime could not run.
    assert {"HardSwish", "Clip", "QuantizeLinear", "DequantizeLinear"} <= kinds
    assert not [n for n in model.graph.node if n.domain == "acekit_example"]
    assert OPDEFS["hard_swish_clamp"].onnx is not None

    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):
        sample = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = qm(sample)
        (actual,) = session.run(None, {name: sample.numpy()})
        step = float(expected.abs().max()) / 127
        assert actual.shape == tuple(expected.shape)
        assert float((torch.from_numpy(actual) - expected).abs().max()) <= step
