"""The main job: quantize a model, deploy it, and report what it gained and lost.

``acekit demo`` runs it on torchvision's resnet18 and ``acekit quantize`` on the user's
model. It compiles the model, exports the quantized model and, through the same
target, the float model as the baseline, draws the graph, then measures both in the
target runtime (when the target can load what it wrote): latency timed interleaved,
fidelity against the float PyTorch model, and agreement with ``qm(x)``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from acekit.ir.serialize import copy_graph
from acekit.logging import get_logger, run_logging
from acekit.plugin import plugin_versions
from acekit.quant.deploy import deployment_graph
from acekit.quant.targets import resolve_target
from acekit.runtime.quantized import CompileReport, QuantizedModule
from acekit.settings import Settings

log = get_logger(__name__)


@attrs.frozen
class Latency:
    """Median latencies (ms) of the float and quantized models in the target runtime."""

    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        """How many times faster the quantized model runs."""
        return self.fp32_ms / self.int8_ms


@attrs.frozen
class JobReport:
    """What the job did, measured and wrote."""

    model: str
    target: str
    compile: CompileReport
    latency: Latency | None
    sqnr_db: float
    top1_agreement: float | None
    deployed_within_step: float | None
    deployed_sqnr_db: float | None
    files: tuple[Path, ...]

    def format(self) -> str:
        """The report printed at the end of the job."""
        c = self.compile
        removed = ", ".join(f"{name} {count}" for name, count in c.removed if count) or "none"
        lines = [
            "",
            f"acekit report: {self.model} for {self.target}",
            f"  ops parsed .............. {c.parsed_ops} "
            f"({c.parsed_nodes} graph nodes with inputs, parameters and constants)",
            f"  ops after pipeline ...... {c.final_ops} ({c.final_nodes} graph nodes; "
            f"removed: {removed})",
            f"  ops quantized ........... {c.quantized} ({c.skipped} kept in float)",
            f"  calibration batches ..... {c.calibration_batches}",
            f"  pipeline ................ {c.pipeline}",
            f"  compile time ............ {c.seconds:.1f} s",
        ]
        if self.latency is not None:
            lines += [
                f"  FP32 latency ............ {self.latency.fp32_ms:.2f} ms",
                f"  INT8 latency ............ {self.latency.int8_ms:.2f} ms",
                f"  speedup ................. {self.latency.speedup:.2f}x",
            ]
        lines.append(f"  output SQNR vs FP32 ..... {self.sqnr_db:.1f} dB")
        if self.top1_agreement is not None:
            lines.append(f"  top-1 agreement ......... {100 * self.top1_agreement:.1f} %")
        if self.deployed_within_step is not None and self.deployed_sqnr_db is not None:
            lines.append(
                f"  deployed vs qm(x) ....... {100 * self.deployed_within_step:.1f} % of outputs "
                f"within one 8-bit step, SQNR {self.deployed_sqnr_db:.1f} dB"
            )
        lines += ["  files written:", *(f"    {path}" for path in self.files)]
        return "\n".join(lines)


def run_job(
    model: torch.nn.Module,
    name: str,
    *,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: Any,
    evaluation: Sequence[tuple[torch.Tensor, ...]],
    out_dir: Path,
    settings: Settings | None = None,
    timing_runs: int = 30,
) -> JobReport:
    """Quantize ``model``, deploy it into ``out_dir`` and measure it; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_logging(out_dir / "logs", extra_versions=plugin_versions()):
        return _measure(
            _Job(model, name, example_inputs, calibration, evaluation, out_dir, settings),
            timing_runs,
        )


@attrs.frozen
class _Job:
    model: torch.nn.Module
    name: str
    example_inputs: tuple[torch.Tensor, ...]
    calibration: Any
    evaluation: Sequence[tuple[torch.Tensor, ...]]
    out_dir: Path
    settings: Settings | None


def _measure(job: _Job, timing_runs: int) -> JobReport:
    import acekit

    model, name, evaluation, out_dir = job.model, job.name, job.evaluation, job.out_dir
    settings = job.settings if job.settings is not None else Settings()
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=job.example_inputs,
        calibration_inputs=job.calibration,
        logs_dir=str(out_dir / "logs"),
    )
    assert qm.report is not None
    target = resolve_target(settings.deployment.target_framework)
    deployed = qm.export(out_dir / f"{name}_int8.onnx", overwrite=True)
    baseline = export_float(qm, out_dir / f"{name}_fp32.onnx")
    picture = qm.visualize(out_dir / f"{name}.svg")
    with torch.no_grad():
        reference = [_first(model(*batch)) for batch in evaluation]
        simulated = [_first(qm(*batch)) for batch in evaluation]
    latency = within = agreement = None
    measured = simulated
    load = getattr(target, "load", None)
    if callable(load):
        int8_run, fp32_run = load(deployed), load(baseline)
        measured = [int8_run(*batch)[0] for batch in evaluation]
        within = _within_one_step(measured, simulated, qm)
        agreement = sqnr_db(simulated, measured)
        latency = time_interleaved(fp32_run, int8_run, evaluation[0], timing_runs)
    report = JobReport(
        model=name,
        target=target.title,
        compile=qm.report,
        latency=latency,
        sqnr_db=sqnr_db(reference, measured),
        top1_agreement=_top1(reference, measured),
        deployed_within_step=within,
        deployed_sqnr_db=agreement,
        files=tuple(p for p in (deployed, baseline, picture, qm.report.log_path) if p is not None),
    )
    log.info(report.format())
    return report


def export_float(qm: QuantizedModule, path: Path) -> Path:
    """Export ``qm``'s graph without quantization through the same target (the baseline)."""
    graph = copy_graph(deployment_graph(qm.sync_graph()))
    for node in graph.nodes:
        for value in node.outputs:
            value.quant = None
    target = resolve_target(qm.settings.deployment.target_framework)
    options = dict(qm.settings.deployment.target_options)
    return Path(target.export(graph, path, options))


def time_interleaved(
    first: Callable[..., Any], second: Callable[..., Any], inputs: Sequence[Any], runs: int
) -> Latency:
    """Median ms of ``first`` and ``second`` on ``inputs``, timed in alternating blocks."""
    fp32, int8 = time_alternating([lambda: first(*inputs), lambda: second(*inputs)], runs)
    return Latency(fp32, int8)


def time_alternating(
    calls: Sequence[Callable[[], Any]], runs: int, block: int = 10, pause: float = 0.05
) -> list[float]:
    """Median milliseconds of each call: blocks of ``block`` runs, A B A B ... rounds.

    Blocks rather than single runs alternate, with a ``pause`` between blocks, because
    ONNX Runtime's worker threads spin for a while after a run (its default, and what
    makes small kernels fast): a run of another session started inside that spin
    competes with it for the cores. The first run of each block is not counted.
    """
    for call in calls:
        for _ in range(3):
            call()
    times: list[list[float]] = [[] for _ in calls]
    rounds = max(1, -(-runs // (block - 1)))
    for _ in range(rounds):
        for call, kept in zip(calls, times, strict=True):
            for index in range(block):
                start = time.perf_counter()
                call()
                if index:
                    kept.append(time.perf_counter() - start)
            time.sleep(pause)
    return [1e3 * statistics.median(kept) for kept in times]


def sqnr_db(reference: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB."""
    signal = sum(float(r.float().norm() ** 2) for r in reference)
    noise = sum(
        float((r.float() - a.float()).norm() ** 2) for r, a in zip(reference, actual, strict=True)
    )
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def _top1(reference: Sequence[torch.Tensor], actual: Sequence[torch.Tensor]) -> float | None:
    if not reference or reference[0].dim() != 2:
        return None
    same = sum(
        int((r.argmax(1) == a.argmax(1)).sum()) for r, a in zip(reference, actual, strict=True)
    )
    return same / sum(r.shape[0] for r in reference)


def _within_one_step(
    deployed: Sequence[torch.Tensor], simulated: Sequence[torch.Tensor], qm: QuantizedModule
) -> float:
    """Fraction of outputs where the runtime and ``qm(x)`` differ by at most one step.

    The step is the output's quantization scale when the output is quantized, else
    the step an 8-bit quantizer would have over the simulated output's range.
    """
    spec = qm.graph.outputs[0].quant if qm.graph.outputs else None
    if spec is not None and spec.scale is not None and not spec.skip:
        step = max(spec.scale)
    else:
        low = min(float(s.min()) for s in simulated)
        high = max(float(s.max()) for s in simulated)
        step = (high - low) / 255
    close = sum(
        int(((d - s).abs() <= step * (1 + 1e-4)).sum())
        for d, s in zip(deployed, simulated, strict=True)
    )
    return close / sum(s.numel() for s in simulated)


def _first(output: Any) -> torch.Tensor:
    while isinstance(output, list | tuple):
        output = output[0]
    if isinstance(output, dict):
        return _first(next(iter(output.values())))
    assert isinstance(output, torch.Tensor)
    return output.detach()
