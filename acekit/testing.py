"""Conformance tests for deployment targets: what any target plugin must pass.

Run them from a plugin's own test suite::

    from acekit.testing import check_target

    def test_my_target_conforms(tmp_path):
        report = check_target("my-target", tmp_path)
        assert report.integer_ops is None or report.integer_ops >= report.quantized_ops

:func:`check_target` compiles a small real CNN (conv + BatchNorm + ReLU, max pooling,
a residual add, global pooling, linear) for the target and runs every check; each
check is also a function of its own. A failed check raises :class:`ConformanceError`
(an ``AssertionError``, so pytest shows it as a test failure) saying what the target
got wrong and what the contract asks.

The checks:

* :func:`check_declaration`: ``name``, ``title``, ``summary``, an option schema, and
  callable ``validate_options``, ``quantization_rules``, ``export`` and ``load``;
* :func:`check_rules`: the rules are :class:`~acekit.quant.rules.QuantRules` whose
  templates, op rules, bit widths and storage widths are consistent and whose op names
  the IR knows;
* :func:`check_option_errors`: defaults are accepted; an unknown option, and a value
  of the wrong type for each declared option, fail both in ``validate_options`` and
  when settings are built, naming the option;
* :func:`check_export`: the export writes the file it returns, leaves no temporary
  file, refuses nothing valid, and an ``.onnx`` passes ``onnx.checker``'s full check;
* :func:`check_load_matches`: ``load(export(qm))`` computes ``qm(x)`` to within one
  quantization step of the output;
* :func:`check_runs_quantized`: where the target can say which ops its runtime runs on
  integers (an optional ``runtime_integer_ops(path) -> int`` method), at least every op
  the rules quantize does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from acekit.ir.quant import QuantSpec
from acekit.quant.options import TargetOption, TargetOptionError
from acekit.quant.rules import QuantRules

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "SmallNet",
    "check_declaration",
    "check_export",
    "check_load_matches",
    "check_option_errors",
    "check_rules",
    "check_runs_quantized",
    "check_target",
    "compile_for",
    "quantized_op_count",
]


class ConformanceError(AssertionError):
    """A target does not follow the target contract (the message says where and how)."""


@attrs.frozen
class ConformanceReport:
    """What :func:`check_target` measured.

    Attributes:
        target: The target's name.
        exported: The file the export wrote.
        max_step_error: Largest ``|load(export(qm))(x) - qm(x)|`` in output steps.
        quantized_ops: Ops the rules quantize in the compiled test model.
        integer_ops: Ops the runtime runs on integers, ``None`` when it cannot say.
    """

    target: str
    exported: Path
    max_step_error: float
    quantized_ops: int
    integer_ops: int | None


class SmallNet(nn.Module):
    """A small CNN with the layers target rules deal with (32x32 RGB in, 10 classes out)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, max pool, a residual conv block, then the classifier head."""
        y = self.pool(self.stem(x))
        return self.head(y + self.block(y))


def _fail(target: str, message: str) -> ConformanceError:
    return ConformanceError(f"target {target!r}: {message}")


def _lookup(name: str) -> Any:
    from acekit.quant.targets import resolve_target

    return resolve_target(name)


# -- declaration and rules -----------------------------------------------------------------


def check_declaration(target: Any) -> None:
    """``target`` has the attributes and methods of :class:`acekit.target.Target`."""
    name = getattr(target, "name", None)
    if not isinstance(name, str) or not name:
        raise ConformanceError(f"{target!r} needs a non-empty string 'name'")
    for attribute in ("title", "summary"):
        if not isinstance(getattr(target, attribute, None), str):
            raise _fail(name, f"needs a string {attribute!r}")
    schema = getattr(target, "options", None)
    if not isinstance(schema, Mapping) or not all(
        isinstance(o, TargetOption) and o.name == key for key, o in schema.items()
    ):
        raise _fail(name, "needs 'options': a mapping of option names to TargetOption")
    for method in ("validate_options", "quantization_rules", "export", "load"):
        if not callable(getattr(target, method, None)):
            raise _fail(name, f"needs a {method}() method (see acekit.target.Target)")


def check_rules(target: Any, options: Mapping[str, Any] | None = None) -> QuantRules:
    """The target's rules for ``options`` are consistent; return them."""
    from acekit.plugin import get_registry

    name = target.name
    rules = target.quantization_rules(dict(options or {}))
    if not isinstance(rules, QuantRules):
        raise _fail(name, f"quantization_rules() returned {type(rules).__name__}, not QuantRules")
    problems: list[str] = []
    for role, spec in (("activation", rules.activation), ("weight", rules.weight)):
        problems += [f"{role} template: {p}" for p in _template_problems(spec)]
    if rules.weight.bits not in rules.weight_bits:
        problems.append(f"weight template bits {rules.weight.bits} not in weight_bits")
    if rules.activation.bits not in rules.activation_bits:
        problems.append(f"activation template bits {rules.activation.bits} not in activation_bits")
    for bits in {*rules.activation_bits, *rules.weight_bits}:
        try:
            rules.storage_range(bits, signed=True)
        except ValueError as error:
            problems.append(str(error))
    if rules.bias_bits is not None and not 8 <= rules.bias_bits <= 32:
        problems.append(f"bias_bits must be in 8..32 or None, got {rules.bias_bits}")
    known = get_registry().ops
    for op, rule in rules.ops.items():
        indices = [*rule.activations, *(i for i in (rule.weight, rule.bias) if i is not None)]
        if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
            problems.append(f"op {op!r}: input indices must be distinct and >= 0: {indices}")
        if rule.bias is not None and rule.weight is None:
            problems.append(f"op {op!r}: a bias needs a weight (s_input * s_weight)")
        for role, own in (("activation", rule.activation), ("nonnegative", rule.nonnegative)):
            if own is not None:
                problems += [f"op {op!r} {role} spec: {p}" for p in _template_problems(own)]
    names = {*rules.ops, *rules.absorbed, *rules.passthrough, *rules.bias_scale_through}
    problems += [f"unknown IR op {op!r}" for op in sorted(names) if op not in known]
    if problems:
        raise _fail(name, "inconsistent quantization rules: " + "; ".join(problems))
    return rules


def _template_problems(spec: QuantSpec) -> list[str]:
    found = spec.problems()
    if spec.skip or spec.scale is not None:
        found.append("a template has no scale and is not skipped")
    return found


# -- options -------------------------------------------------------------------------------


def check_option_errors(target: Any) -> None:
    """Defaults pass; an unknown option and wrongly typed values fail, naming the option."""
    from acekit.settings import DeploymentSettings, SettingsError

    name = target.name
    defaults = target.validate_options({})
    if not isinstance(defaults, Mapping):
        raise _fail(name, "validate_options({}) must return the checked options (a mapping)")
    target.quantization_rules(dict(defaults))
    bogus = "no_such_option_" + name.replace("-", "_")
    cases: list[tuple[str, object]] = [(bogus, 1)]
    for option in target.options.values():
        cases.append((option.name, _wrong_value(option)))
    for option_name, value in cases:
        try:
            target.validate_options({option_name: value})
        except TargetOptionError as error:
            if error.option != option_name:
                message = f"the error for {option_name}={value!r} names {error.option!r}"
                raise _fail(name, message) from error
        else:
            raise _fail(name, f"validate_options accepted {option_name}={value!r}")
        try:
            DeploymentSettings(target_framework=name, target_options={option_name: value})
        except SettingsError as error:
            if f"target_options.{option_name}" not in str(error):
                raise _fail(name, f"settings error does not name the option: {error}") from None
        else:
            raise _fail(name, f"settings accepted target_options.{option_name}={value!r}")


def _wrong_value(option: TargetOption) -> object:
    """A value ``option`` must refuse: of another type, or outside its choices."""
    if option.kind in (int, float):
        return "not-a-number"
    if option.kind is bool:
        return "yes please"
    return 1.5 if option.kind is str and not option.choices else "no-such-choice"


# -- export, load, runtime -----------------------------------------------------------------


def compile_for(
    name: str,
    *,
    options: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    inputs: Sequence[torch.Tensor] | None = None,
    batches: int = 4,
    logs_dir: str | os.PathLike[str] = "logs",
) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """``(qm, x)``: ``model`` (default :class:`SmallNet`) compiled for target ``name``.

    Calibrates on ``batches`` random batches (or on ``inputs``); the run log goes to
    ``logs_dir``.
    """
    import acekit
    from acekit.settings import DeploymentSettings, Settings

    generator = torch.Generator().manual_seed(0)
    model = (model if model is not None else SmallNet()).eval()
    if inputs is None:
        data = [torch.randn(2, 3, 32, 32, generator=generator) for _ in range(batches)]
    else:
        data = [tuple(inputs)]  # type: ignore[list-item]
    first = data[0] if isinstance(data[0], tuple) else (data[0],)
    settings = Settings(
        deployment=DeploymentSettings(target_framework=name, target_options=dict(options or {}))
    )
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=first,
        calibration_inputs=data,
        logs_dir=os.fspath(logs_dir),
    )
    return qm, first


def check_export(target: Any, qm: Any, path: str | os.PathLike[str]) -> Path:
    """``target.export`` writes a valid file at ``path`` (checked when ONNX) and nothing else."""
    folder = Path(path).parent
    before = set(folder.iterdir())
    written = Path(qm.export(path, overwrite=True, target=target.name))
    if not written.is_file():
        raise _fail(target.name, f"export returned {written}, which is not a file")
    stray = sorted(p.name for p in set(folder.iterdir()) - before - {written})
    if stray:
        raise _fail(target.name, f"export left files behind: {', '.join(stray)}")
    if written.suffix == ".onnx":
        import onnx

        try:
            onnx.checker.check_model(str(written), full_check=True)
        except Exception as error:
            raise _fail(target.name, f"{written} fails onnx.checker: {error}") from None
    return written


def check_load_matches(
    target: Any, qm: Any, path: str | os.PathLike[str], inputs: Sequence[torch.Tensor]
) -> float:
    """``load(path)(x)`` is within one output step of ``qm(x)``; return the error in steps."""
    runner = target.load(path)
    with torch.no_grad():
        expected = qm(*inputs)
    outputs = runner(*inputs)
    if not isinstance(outputs, Sequence) or not outputs:
        raise _fail(target.name, "load(path)(x) must return a list of tensors")
    got = torch.as_tensor(outputs[0]).to(expected.dtype).reshape(expected.shape)
    step = _output_step(qm, expected)
    error = float((got - expected).abs().max()) / step
    if not error <= 1.0 + 1e-3:
        raise _fail(
            target.name,
            f"the deployed model differs from qm(x) by {error:.2f} output steps (at most 1)",
        )
    return error


def _output_step(qm: Any, expected: torch.Tensor) -> float:
    spec = qm.graph.outputs[0].quant if qm.graph.outputs else None
    if spec is not None and spec.scale is not None and not spec.skip:
        return float(max(spec.scale))
    # A float output: the step an 8-bit quantizer would have over its range.
    return max(float(expected.max() - expected.min()) / 255.0, 1e-6)


def quantized_op_count(qm: Any, rules: QuantRules) -> int:
    """Ops of ``qm``'s graph that run quantized per ``rules`` (all rule inputs quantized)."""
    count = 0
    for node in qm.graph.nodes:
        rule = rules.ops.get(node.op)
        if rule is None:
            continue
        indices = [*rule.activations, *((rule.weight,) if rule.weight is not None else ())]
        if all(i < len(node.inputs) and _quantized_at(node.inputs[i], rules) for i in indices):
            count += 1
    return count


def _quantized_at(value: Any, rules: QuantRules) -> bool:
    """Whether ``value`` is quantized, or reaches its reader through pass-through ops."""
    while True:
        spec = value.quant
        if spec is not None and not spec.skip and spec.scale is not None:
            return True
        producer = value.producer
        if producer is None or producer.op not in rules.passthrough or not producer.inputs:
            return False
        value = producer.inputs[0]


def check_runs_quantized(target: Any, qm: Any, path: str | os.PathLike[str]) -> int | None:
    """The runtime runs at least every op the rules quantize on integers, where it can say.

    Returns the runtime's count, or ``None`` when the target has no
    ``runtime_integer_ops(path)``.
    """
    count_of: Callable[[str | os.PathLike[str]], int] | None = getattr(
        target, "runtime_integer_ops", None
    )
    if count_of is None:
        return None
    rules = qm.rules if qm.rules is not None else check_rules(target, {})
    wanted = quantized_op_count(qm, rules)
    runtime = int(count_of(path))
    if runtime < wanted:
        raise _fail(
            target.name,
            f"the runtime runs {runtime} ops on integers, but the rules quantize {wanted}: "
            "a quantized op falls back to float (check Q/DQ placement against the rules)",
        )
    return runtime


def check_target(
    name: str,
    folder: str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    inputs: Sequence[torch.Tensor] | None = None,
    suffix: str = ".onnx",
) -> ConformanceReport:
    """Run every check on the installed target ``name``, writing files under ``folder``."""
    target = _lookup(name)
    check_declaration(target)
    rules = check_rules(target, options)
    check_option_errors(target)
    qm, x = compile_for(
        name, options=options, model=model, inputs=inputs, logs_dir=Path(folder) / "logs"
    )
    path = Path(folder) / f"conformance-{name}{suffix}"
    written = check_export(target, qm, path)
    error = check_load_matches(target, qm, written, x)
    integer = check_runs_quantized(target, qm, written)
    return ConformanceReport(
        target=name,
        exported=written,
        max_step_error=error,
        quantized_ops=quantized_op_count(qm, rules),
        integer_ops=integer,
    )
