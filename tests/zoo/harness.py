"""One model through the user's whole job, each stage's outcome recorded separately.

parse -> ``acekit.compile`` (calibration DataLoader with another batch size than the
example) -> ``export`` -> ONNX Runtime at the example's shape and at another batch size
(and, for text, another sequence length), each compared with ``qm(x)``, and ``qm(x)``
with the FP32 model. A stage that fails stops the later ones; its error is the cause.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import acekit

#: The stages in order. ``calibrate_other`` is compile with calibration batches of
#: another size than the example's (when only that fails, the later stages still run on
#: a model calibrated at the example's batch size, so each stage's result is known).
STAGES = ("build", "parse", "compile", "calibrate_other", "export", "ort", "ort_other", "accuracy")

#: ORT must reproduce the simulation; the simulation must stay near FP32.
ORT_MIN_SQNR = 25.0
FP32_MIN_SQNR = 10.0
#: Deep nets with random weights: one int8 rounding that ORT and the simulation take
#: differently early on spreads, so ORT may stay further from ``qm(x)`` than 25 dB while
#: being as close to FP32 as ``qm(x)`` is. That passes (within this margin), above a floor.
ORT_FLOOR_SQNR, FP32_MARGIN = 15.0, 3.0

#: When a fidelity check fails, the FP32 model's own output is compared under input noise
#: of this SQNR (about int8 rounding's): a random-weight model that amplifies it that much
#: cannot be judged by the absolute thresholds, and the cause says so.
SENSITIVITY_PROBE_DB = 40.0

#: Example batch, calibration batch, and the other batch ORT runs at.
EXAMPLE_BATCH, CALIBRATION_BATCH, OTHER_BATCH = 1, 2, 3


@attrs.frozen
class Case:
    """A model of a zoo: how to build it and its inputs.

    ``make_inputs(batch, variant)`` gives inputs at ``batch``; ``variant`` 1 changes the
    other free dim (sequence length) for text models, and equals variant 0 for images.
    """

    source: str
    name: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[int, int], tuple[torch.Tensor, ...]]
    text: bool = False
    #: For a model acekit cannot take whole by design (a detector's NMS): text its parse
    #: error must contain (the remedy). That error is then recorded as ``expected``.
    expected_parse_error: str = ""


@attrs.define
class Outcome:
    """What happened to one case: each stage's result and error, the time, the parser path.

    ``stage`` is the first stage that failed (``"pass"`` when none did, ``"expected"``
    when parsing failed with the case's expected, actionable error); ``stages`` maps each
    stage that ran to ``"ok"``, ``"fail"`` or ``"expected"``, ``errors`` the others than
    ``"ok"`` to their cause.
    """

    source: str
    name: str
    stage: str = "pass"
    error: str = ""
    stages: dict[str, str] = attrs.Factory(dict)
    errors: dict[str, str] = attrs.Factory(dict)
    parser_path: str = ""
    seconds: float = 0.0
    sqnr_ort: float | None = None
    sqnr_fp32: float | None = None
    trace: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the report reads these)."""
        return attrs.asdict(self)

    def ok(self, stage: str) -> None:
        """Record that ``stage`` passed."""
        self.stages[stage] = "ok"

    def expect(self, stage: str, error: BaseException, remedy: str) -> None:
        """Record that ``stage`` failed as documented; the cause is the error's first line
        and its line holding ``remedy`` (what the user is told to do)."""
        self.stages[stage] = "expected"
        lines = str(error).splitlines()
        advice = next((line for line in lines if remedy in line), "")
        self.errors[stage] = f"{_first_line(error)[:200]} / {advice}"
        self.stage, self.error = "expected", self.errors[stage]

    def fail(self, stage: str, error: BaseException) -> None:
        """Record that ``stage`` failed with ``error`` (the first failure is the summary)."""
        self.stages[stage] = "fail"
        self.errors[stage] = _first_line(error)
        if self.stage == "pass":
            self.stage, self.error = stage, self.errors[stage]
            self.trace = "".join(traceback.format_exception(error, limit=-4))


class _RecordingParser:
    """The parser acekit would choose, noting whether FX or the torch.export fallback ran."""

    def __init__(self) -> None:
        self.path = ""

    def parse(self, model: Any, inputs: tuple[Any, ...]) -> Any:
        """Parse with the default parser, capturing the fallback's log line."""
        handler = _Collect()
        logger = logging.getLogger("acekit")
        logger.addHandler(handler)
        try:
            graph = acekit.parse(model, inputs)
        finally:
            logger.removeHandler(handler)
        said = " ".join(handler.messages)
        if "torch.fx cannot trace" in said:
            self.path = "export (FX cannot trace)"
        elif "parsed it through torch.export" in said:
            self.path = "export (FX ops unsupported)"
        else:
            self.path = "fx"
        return graph


class _Collect(logging.Handler):
    """Keeps the messages of the records it sees."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message."""
        self.messages.append(record.getMessage())


def sqnr(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB of ``actual`` against ``reference``."""
    reference, actual = reference.double(), actual.double()
    noise = float((reference - actual).norm())
    signal = float(reference.norm())
    if noise == 0:
        return float("inf")
    return 20 * float(np.log10(max(signal, 1e-12) / noise))


def float_leaves(output: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a (nested) model output, in pytree order."""
    if hasattr(output, "to_tuple"):  # Hugging Face ModelOutput
        output = output.to_tuple()
    leaves = pytree.tree_leaves(output)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


def worst_sqnr(reference: Any, actual: Sequence[torch.Tensor]) -> float:
    """The lowest SQNR over the float outputs (outputs compared in order)."""
    expected = float_leaves(reference)
    got = [t for t in actual if t.is_floating_point()]
    if len(expected) != len(got):
        raise AssertionError(f"{len(got)} float outputs, expected {len(expected)}")
    return min(sqnr(e, g) for e, g in zip(expected, got, strict=True))


def _ort_run(session: Any, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    names = [i.name for i in session.get_inputs()]
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
    return [torch.from_numpy(np.asarray(o)) for o in session.run(None, feed)]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return " / ".join(lines[:3])[:600]


def _loader(case: Case, batch: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    """Two calibration batches of ``batch`` items."""
    parts = [case.make_inputs(batch, 0) for _ in range(2)]
    tensors = [torch.cat(group) for group in zip(*parts, strict=True)]
    return DataLoader(TensorDataset(*tensors), batch_size=batch)


def _compile(
    model: nn.Module, case: Case, example: tuple[torch.Tensor, ...], batch: int, workdir: Path
) -> tuple[Any, _RecordingParser]:
    parser = _RecordingParser()
    qm = acekit.compile(
        model,
        example_inputs=example,
        calibration_inputs=_loader(case, batch),
        parser=parser,
        logs_dir=str(workdir / "logs"),
    )
    return qm, parser


def fp32_sensitivity(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    """SQNR of the FP32 model's output when its float inputs carry noise at
    :data:`SENSITIVITY_PROBE_DB` (deterministic noise; integer inputs are left as they are).
    """
    generator = torch.Generator().manual_seed(0)
    noisy = []
    for tensor in inputs:
        if not tensor.is_floating_point():
            noisy.append(tensor)
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        noise *= tensor.norm() / noise.norm() / 10 ** (SENSITIVITY_PROBE_DB / 20)
        noisy.append(tensor + noise)
    with torch.no_grad():
        return worst_sqnr(model(*inputs), float_leaves(model(*noisy)))


def _sensitivity_note(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    """What the FP32 model does to int8-sized input noise, for a failed check's cause."""
    sensitivity = fp32_sensitivity(model, inputs)
    note = f"; FP32 under {SENSITIVITY_PROBE_DB:.0f} dB input noise: {sensitivity:.1f} dB"
    if sensitivity < FP32_MIN_SQNR:
        note += " (ill-conditioned with these random weights)"
    return note


def _check_ort(session: Any, qm: Any, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    """ORT against ``qm(x)`` (and, when they differ, both against FP32); the SQNR to qm."""
    with torch.no_grad():
        deployed = _ort_run(session, inputs)
        simulated = qm(*inputs)
        low = worst_sqnr(simulated, deployed)
        if low >= ORT_MIN_SQNR:
            return low
        reference = model(*inputs)
        ort_fp32 = worst_sqnr(reference, deployed)
        qm_fp32 = worst_sqnr(reference, float_leaves(simulated))
    if low >= ORT_FLOOR_SQNR and ort_fp32 >= qm_fp32 - FP32_MARGIN:
        return low
    raise AssertionError(
        f"ORT vs qm(x): SQNR {low:.1f} dB < {ORT_MIN_SQNR}; against FP32 ORT has "
        f"{ort_fp32:.1f} dB, qm(x) {qm_fp32:.1f} dB" + _sensitivity_note(model, inputs)
    )


def run_case(case: Case, workdir: Path | None = None) -> Outcome:
    """Run ``case`` through every stage; never raises (the outcome says what failed)."""
    outcome = Outcome(case.source, case.name)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        _stages(case, outcome, Path(tmp))
    outcome.seconds = round(time.perf_counter() - started, 1)
    return outcome


def _stages(case: Case, outcome: Outcome, tmp: Path) -> None:
    try:
        torch.manual_seed(0)
        model = case.build().eval()
        example = case.make_inputs(EXAMPLE_BATCH, 0)
    except Exception as error:
        outcome.fail("build", error)
        return
    try:
        qm, parser = _compile(model, case, example, CALIBRATION_BATCH, tmp)
        outcome.ok("parse")
        outcome.ok("compile")
        outcome.ok("calibrate_other")
    except Exception as error:
        if parser_failed(error):
            if case.expected_parse_error and case.expected_parse_error in str(error):
                outcome.expect("parse", error, case.expected_parse_error)
            else:
                outcome.fail("parse", error)
            return
        outcome.ok("parse")
        try:
            qm, parser = _compile(model, case, example, EXAMPLE_BATCH, tmp)
        except Exception as same_batch_error:
            outcome.fail("compile", same_batch_error)
            return
        outcome.ok("compile")
        outcome.fail("calibrate_other", error)
    outcome.parser_path = parser.path
    try:
        path = qm.export(tmp / "model.onnx")
        session = _session(path)
        outcome.ok("export")
    except Exception as error:
        outcome.fail("export", error)
        return
    try:
        outcome.sqnr_ort = _check_ort(session, qm, model, example)
        outcome.ok("ort")
    except Exception as error:
        outcome.fail("ort", error)
    try:
        other = case.make_inputs(OTHER_BATCH, 1 if case.text else 0)
        _check_ort(session, qm, model, other)
        outcome.ok("ort_other")
    except Exception as error:
        outcome.fail("ort_other", error)
    try:
        with torch.no_grad():
            outcome.sqnr_fp32 = worst_sqnr(model(*example), float_leaves(qm(*example)))
        if outcome.sqnr_fp32 < FP32_MIN_SQNR:
            raise AssertionError(
                f"qm(x) vs FP32: SQNR {outcome.sqnr_fp32:.1f} dB"
                + _sensitivity_note(model, example)
            )
        outcome.ok("accuracy")
    except Exception as error:
        outcome.fail("accuracy", error)


def parser_failed(error: BaseException) -> bool:
    """Whether ``error`` came from parsing (acekit's parse errors, or raised inside it)."""
    from acekit.api import ParseError

    return isinstance(error, ParseError) or _from_parser(error)


def _from_parser(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return any(frame.name == "parse" and frame.filename == __file__ for frame in frames)
