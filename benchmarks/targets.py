"""One benchmark for all targets: acekit against each target's own quantizer.

For each model (the cases of :mod:`benchmarks.ptq`: torchvision models with random
weights and re-estimated BatchNorm, or a BERT encoder) and each target, acekit
quantizes for that target and so does the target's own tool, on the same 32
calibration samples:

* ONNX Runtime: acekit (``target_framework="onnxruntime"``) vs ``quantize_static``
  (QDQ, per-channel s8 weights, u8 activations);
* OpenVINO: acekit (``"openvino"``, IR) vs NNCF (``nncf.quantize`` on the OpenVINO model
  converted from the FP32 ONNX, default preset; ``model_type=TRANSFORMER`` for
  transformers), both saved as IR without fp16 compression;
* TensorRT: acekit (``"tensorrt"``) vs NVIDIA ModelOpt (``modelopt.onnx.quantization``,
  INT8, its default calibration, run on the CPU through ONNX Runtime, float kept in
  fp32). No GPU here: the TensorRT rows give fidelity (the QDQ model run in ONNX
  Runtime) and which ops carry Q/DQ, not latency (``benchmarks/tensorrt.py`` times
  engines on a GPU).

Latency follows ``../shared/BENCHMARKS.md``: every measurement in a fresh process
(``python -m benchmarks.targets time ...``: load, warm up >= 1 s, time >= ``--runs`` runs
and >= ``--seconds`` s, print the median), all models of a case timed in turn, in
``--rounds`` alternating rounds, median of the rounds; batch 1, 2 threads. Fidelity is
the SQNR against the torch FP32 model on 8 held-out inputs, run in the target's runtime.
Integer-kernel coverage is read from the runtime's optimised graph (ORT: float
Conv/Gemm/MatMul left; OpenVINO: the runtime precision of each executed
Convolution/FullyConnected/MatMul). Quantization time is the wall time of the whole step,
peak RSS its high-water mark.

Run: ``.venv/bin/python -m benchmarks.targets [--models resnet18] [--targets
onnxruntime,openvino,tensorrt] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np
import onnx
import torch

import acekit
from acekit.settings import DeploymentSettings, Settings, TrainingSettings
from benchmarks.common import machine, today, versions, write_section
from benchmarks.minilm_case import NAME as MINILM
from benchmarks.minilm_case import embedding_cosine, minilm_case
from benchmarks.ptq import (
    CALIBRATION_SAMPLES,
    Case,
    Result,
    export_fp32,
    make_case,
    measured,
    optimized_ops,
    quantize_ort,
    reference_outputs,
    warm_up,
)

TARGETS = ("onnxruntime", "openvino", "tensorrt")
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vit_b_16", "bert", MINILM)
TRANSFORMERS = frozenset({"vit_b_16", "bert", MINILM})
#: How a ``--recipe`` row is labelled in the tables (its spec is printed under them).
RECIPE = "recipe"
#: ONNX ops a Q/DQ reaches a consumer through unchanged (TensorRT propagates across them).
COPY_OPS = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: OpenVINO executed ops that only handle shapes and constants (left out of the comparison).
SHAPE_OPS = frozenset({"Const", "Input", "Output", "ShapeOf", "Range", "StridedSlice"})


@attrs.define
class Row:
    """One deployed model of one case: who made it, how it runs, what it measured."""

    target: str
    quantizer: str
    runtime: str  # "ort" or "ov"; "" when it cannot be timed here
    result: Result
    precision: str | None = None
    coverage: str = ""
    executed: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter)
    quantized_ops: collections.Counter[str] = attrs.field(factory=collections.Counter)
    rounds: list[float] = attrs.field(factory=list)

    @property
    def ms(self) -> float:
        """Median over the rounds, NaN when not timed."""
        return statistics.median(self.rounds) if self.rounds else math.nan


# --------------------------------------------------------------------------- quantizers


def quantize_acekit(
    case: Case, target: str, path: Path, scratch: Path, pipeline: str | None = None
) -> Path:
    """``acekit.compile`` for ``target`` with 32 calibration steps, then ``export``.

    ``pipeline`` replaces the default pipeline (the ``--recipe`` rows).

    Every input's shape is static (``dynamic_shapes``: one empty entry per input), as in
    the FP32 ONNX the peers quantize: by default acekit frees the batch and sequence
    dims, and OpenVINO runs a model with dynamic shapes slower (all-MiniLM-L6-v2: about
    10 % behind the same IR reshaped to static, docs/openvino.md).
    """
    settings = Settings(
        training=TrainingSettings(stats_steps=CALIBRATION_SAMPLES),
        deployment=DeploymentSettings(target_framework=target),
    )
    qm = acekit.compile(
        case.model,
        settings=settings,
        example_inputs=case.example,
        calibration_inputs=case.calibration,
        logs_dir=str(scratch / f"logs-{case.name}-{target}"),
        dynamic_shapes=tuple({} for _ in case.example),
        pipeline=pipeline,
    )
    return qm.export(path, overwrite=True)


def quantize_nncf(case: Case, fp32: Path, path: Path) -> Path:
    """NNCF post-training quantization of the OpenVINO model converted from ``fp32``."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(fp32))
    names = [port.get_any_name() for port in model.inputs]
    items = [
        {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
        for inputs in case.calibration
    ]
    model_type = nncf.ModelType.TRANSFORMER if case.name in TRANSFORMERS else None
    quantized = nncf.quantize(
        model, nncf.Dataset(items), subset_size=len(items), model_type=model_type
    )
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def quantize_modelopt(case: Case, fp32: Path, path: Path) -> Path:
    """ModelOpt's INT8 ONNX PTQ (default calibration), on the CPU, float kept in fp32."""
    from modelopt.onnx.quantization import quantize

    data = {
        name: np.concatenate([inputs[i].numpy() for inputs in case.calibration])
        for i, name in enumerate(case.input_names)
    }
    quantize(
        str(fp32),
        quantize_mode="int8",
        calibration_data=data,
        calibration_eps=["cpu"],
        high_precision_dtype="fp32",
        output_path=str(path),
        log_level="WARNING",
    )
    return path


def rows_for(
    case: Case, target: str, fp32: Path, scratch: Path, recipe: str | None = None
) -> list[Row]:
    """Quantize ``case`` for ``target`` with acekit and with the target's own tool.

    With ``recipe`` (a pipeline spec), one more acekit row quantized with it.
    """
    rows = _rows_for(case, target, fp32, scratch)
    if recipe:
        runtime = {"onnxruntime": "ort", "openvino": "ov"}.get(target, "")
        suffix = {"onnxruntime": "ort.onnx", "openvino": "ov.xml"}.get(target, "trt.onnx")
        path = scratch / f"{case.name}.recipe.{suffix}"
        result = measured(
            "acekit", lambda: quantize_acekit(case, target, path, scratch, pipeline=recipe)
        )
        rows.insert(
            next(i for i, r in enumerate(rows) if r.quantizer == "acekit") + 1,
            Row(target, f"acekit ({RECIPE})", runtime, result),
        )
    return rows


def _rows_for(case: Case, target: str, fp32: Path, scratch: Path) -> list[Row]:
    stem = scratch / case.name
    if target == "onnxruntime":
        return [
            Row(target, "FP32", "ort", Result("FP32", path=fp32)),
            Row(
                target,
                "acekit",
                "ort",
                measured(
                    "acekit",
                    lambda: quantize_acekit(case, target, Path(f"{stem}.ort.onnx"), scratch),
                ),
            ),
            Row(
                target,
                "ORT quantize_static",
                "ort",
                measured(
                    "ORT", lambda: quantize_ort(case, fp32, Path(f"{stem}.ortqs.onnx"), scratch)
                ),
            ),
        ]
    if target == "openvino":
        return [
            Row(target, "FP32 (f32 hint)", "ov", Result("FP32", path=fp32), precision="f32"),
            Row(target, "FP32 (default: bf16)", "ov", Result("FP32", path=fp32)),
            Row(
                target,
                "acekit",
                "ov",
                measured(
                    "acekit",
                    lambda: quantize_acekit(case, target, Path(f"{stem}.ov.xml"), scratch),
                ),
            ),
            Row(
                target,
                "NNCF",
                "ov",
                measured("NNCF", lambda: quantize_nncf(case, fp32, Path(f"{stem}.nncf.xml"))),
            ),
        ]
    return [
        Row(
            target,
            "acekit",
            "",
            measured(
                "acekit", lambda: quantize_acekit(case, target, Path(f"{stem}.trt.onnx"), scratch)
            ),
        ),
        Row(
            target,
            "ModelOpt",
            "",
            measured(
                "ModelOpt", lambda: quantize_modelopt(case, fp32, Path(f"{stem}.modelopt.onnx"))
            ),
        ),
    ]


# --------------------------------------------------------------------------- runtimes


def runner(runtime: str, path: Path, precision: str | None) -> Callable[..., list[np.ndarray]]:
    """A callable running ``path`` in ORT or OpenVINO (protocol settings): arrays in and out."""
    if runtime == "ov":
        from acekit_openvino.runner import OpenVINORunner

        ov_model = OpenVINORunner(path, threads=2, precision=precision)
        return lambda *xs: [t.numpy() for t in ov_model(*xs)]
    from acekit_onnxruntime.session import OrtRunner

    ort_model = OrtRunner(path, threads=2)
    return lambda *xs: [t.numpy() for t in ort_model(*xs)]


def time_in_process(
    runtime: str, path: Path, precision: str | None, inputs: Path, runs: int, seconds: float
) -> float:
    """Median milliseconds of ``path`` (the body of the ``time`` subcommand)."""
    with np.load(inputs) as data:
        arrays = [data[key] for key in sorted(data.files, key=lambda k: int(k.split("_")[1]))]
    run = runner(runtime, path, precision)
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        run(*arrays)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        run(*arrays)
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def time_fresh(row: Row, inputs: Path, runs: int, seconds: float) -> float:
    """Median ms of ``row``'s model, measured by a new Python process."""
    assert row.result.path is not None
    command = [
        sys.executable,
        "-m",
        "benchmarks.targets",
        "time",
        row.runtime,
        str(row.result.path),
        str(inputs),
        "--runs",
        str(runs),
        "--seconds",
        str(seconds),
    ]
    if row.precision is not None:
        command += ["--precision", row.precision]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ms"])


# --------------------------------------------------------------------------- measures


def sqnr(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """SQNR in dB of ``outputs`` against ``reference`` over all samples."""
    ref = np.concatenate([r.ravel() for r in reference]).astype(np.float64)
    out = np.concatenate([o.ravel() for o in outputs]).astype(np.float64)
    return float(20 * np.log10(np.linalg.norm(ref) / np.linalg.norm(ref - out)))


def fidelity(row: Row, case: Case, reference: list[np.ndarray]) -> float:
    """SQNR of ``row``'s model (ORT for TensorRT's QDQ files) on the evaluation inputs.

    For the sentence encoder: the mean cosine of its sentence embeddings to FP32's.
    """
    assert row.result.path is not None
    run = runner(row.runtime or "ort", row.result.path, row.precision)
    outputs = [run(*[x.numpy() for x in inputs])[0] for inputs in case.evaluation]
    if case.metric == "embedding":
        return embedding_cosine(case, reference, outputs)
    return sqnr(reference, outputs)


def fidelity_text(case: Case, value: float) -> str:
    """``29.4`` (SQNR dB) or ``cos 0.9971`` (embedding cosine)."""
    return f"cos {value:.4f}" if case.metric == "embedding" else f"{value:.1f}"


def qdq_quantized_ops(path: Path) -> collections.Counter[str]:
    """Ops that read a dequantized tensor (through copy ops), by type.

    A Conv/Gemm/MatMul counts when its first two inputs both are; any other op when one
    of its inputs is. This is what TensorRT runs in INT8 from the file.
    """
    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in COPY_OPS:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    counts: collections.Counter[str] = collections.Counter()
    for node in model.graph.node:
        if node.op_type in COPY_OPS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type in WEIGHTED_OPS:
            if len(node.input) > 1 and all(dequantized(n) for n in node.input[:2]):
                counts[node.op_type] += 1
        elif any(dequantized(name) for name in node.input):
            counts[node.op_type] += 1
    return counts


def coverage(row: Row, scratch: Path) -> str:
    """Integer linear kernels over all linear kernels in the runtime's optimised graph."""
    assert row.result.path is not None
    if row.runtime == "ort":
        from benchmarks.ptq import FLOAT_LINEAR_OPS, INT_LINEAR_OPS

        ops, _ = optimized_ops(row.result.path, scratch)
        integer = sum(ops[op] for op in INT_LINEAR_OPS)
        return f"{integer}/{integer + sum(ops[op] for op in FLOAT_LINEAR_OPS)}"
    if row.runtime == "ov":
        from acekit_openvino.runner import OpenVINORunner

        ov_model = OpenVINORunner(row.result.path, precision=row.precision)
        row.executed = ov_model.executed_precisions()
        precisions = ov_model.linear_precisions()
        integer = sum(n for (_, p), n in precisions.items() if p in ("u8", "i8"))
        return f"{integer}/{sum(precisions.values())}"
    model = onnx.load(str(row.result.path))
    total = sum(1 for node in model.graph.node if node.op_type in WEIGHTED_OPS)
    quantized = sum(n for op, n in row.quantized_ops.items() if op in WEIGHTED_OPS)
    return f"{quantized}/{total} Q/DQ"


# --------------------------------------------------------------------------- driver


def run_case(
    name: str, targets: Sequence[str], args: argparse.Namespace, scratch: Path
) -> tuple[Case, list[Row]]:
    """Quantize ``name`` for every target both ways, then measure every model."""
    print(f"== {name}", flush=True)
    case = minilm_case() if name == MINILM else make_case(name)
    reference = reference_outputs(case)
    fp32 = export_fp32(case, scratch / f"{name}.fp32.onnx")
    inputs = scratch / f"{name}.inputs.npz"
    np.savez(inputs, *[x.numpy() for x in case.example])
    rows: list[Row] = []
    for target in targets:
        rows += rows_for(case, target, fp32, scratch, args.recipe)
        gc.collect()
    for row in rows:
        if row.result.error is not None:
            continue
        try:
            if row.target == "tensorrt":
                assert row.result.path is not None
                row.quantized_ops = qdq_quantized_ops(row.result.path)
            row.coverage = coverage(row, scratch)
            row.result.fidelity = fidelity(row, case, reference)
        except Exception as error:  # a model the runtime rejects is a failed row
            row.result.error = f"{type(error).__name__}: {error}"
    timed = [r for r in rows if r.runtime and r.result.error is None]
    for round_ in range(args.rounds):
        for row in timed:
            row.rounds.append(time_fresh(row, inputs, args.runs, args.seconds))
        print(
            f"  round {round_ + 1}: "
            + ", ".join(f"{r.quantizer} {r.rounds[-1]:.2f}" for r in timed),
            flush=True,
        )
    return case, rows


def _baseline(rows: list[Row], row: Row) -> Row | None:
    """The FP32 row a quantized row's speedup is taken against (same target and runtime)."""
    for other in rows:
        if other.target == row.target and other.quantizer in ("FP32", "FP32 (f32 hint)"):
            return other
    return None


def _table_row(case: Case, rows: list[Row], row: Row) -> str:
    r = row.result
    if r.error is not None:
        return (
            f"| {case.name} | {row.target} | {row.quantizer} | failed: {r.error[:120]} |" + " |" * 6
        )
    base = _baseline(rows, row)
    ms = f"{row.ms:.2f}" if row.rounds else "GPU only"
    speed = (
        f"{base.ms / row.ms:.2f}x"
        if base is not None and row.rounds and base.rounds and base is not row
        else "-"
    )
    quant = f"{r.seconds:.1f}" if not math.isnan(r.seconds) else "-"
    rss = f"{r.peak_rss:.0f}" if not math.isnan(r.peak_rss) else "-"
    return (
        f"| {case.name} | {row.target} | {row.quantizer} | {ms} | {speed} | {row.coverage} "
        f"| {fidelity_text(case, r.fidelity)} | {quant} | {rss} |"
    )


def _ops_rows(case: Case, rows: list[Row]) -> list[str]:
    found = []
    for row in rows:
        if row.target == "tensorrt" and row.result.error is None:
            ops = ", ".join(f"{op} {n}" for op, n in sorted(row.quantized_ops.items()))
            found.append(f"| {case.name} | {row.quantizer} | {ops} |")
    return found


def _executed_rows(case: Case, rows: list[Row]) -> list[str]:
    """OpenVINO's executed ops whose (type, precision) counts differ: acekit vs NNCF."""
    ours = next((r for r in rows if r.target == "openvino" and r.quantizer == "acekit"), None)
    theirs = next((r for r in rows if r.target == "openvino" and r.quantizer == "NNCF"), None)
    if ours is None or theirs is None or not ours.executed or not theirs.executed:
        return []
    keys = sorted(set(ours.executed) | set(theirs.executed))
    return [
        f"| {case.name} | {layer} | {precision} | {ours.executed[(layer, precision)]} "
        f"| {theirs.executed[(layer, precision)]} |"
        for layer, precision in keys
        if ours.executed[(layer, precision)] != theirs.executed[(layer, precision)]
        and layer not in SHAPE_OPS
        and precision not in ("i32", "i64", "dynamic")
    ]


def _goals(case: Case, rows: list[Row]) -> list[str]:
    """One line per target: acekit against the target's own quantizer."""
    lines = []
    peers = {"onnxruntime": "ORT quantize_static", "openvino": "NNCF", "tensorrt": "ModelOpt"}
    for target, peer in peers.items():
        ours = next((r for r in rows if r.target == target and r.quantizer == "acekit"), None)
        theirs = next((r for r in rows if r.target == target and r.quantizer == peer), None)
        if ours is None or theirs is None:
            continue
        if ours.result.error or theirs.result.error:
            lines.append(f"- {case.name}, {target}: a quantizer failed (see the table).")
            continue
        parts = []
        if ours.rounds and theirs.rounds:
            verdict = "met" if ours.ms <= theirs.ms else f"missed by {ours.ms / theirs.ms - 1:.0%}"
            parts.append(f"latency {ours.ms:.2f} vs {theirs.ms:.2f} ms: {verdict}")
        else:
            extra = sorted(
                op
                for op in theirs.quantized_ops
                if theirs.quantized_ops[op] > ours.quantized_ops[op]
            )
            verdict = "met" if not extra else f"missed on {', '.join(extra)}"
            parts.append(f"ops quantized at least ModelOpt's: {verdict}")
        parts.append(_fidelity_goal(case, ours.result.fidelity, theirs.result.fidelity))
        faster = ours.result.seconds < theirs.result.seconds
        parts.append(
            f"quantization {ours.result.seconds:.1f} vs {theirs.result.seconds:.1f} s: "
            + ("met" if faster else "missed")
        )
        lines.append(f"- {case.name}, {target} (acekit vs {peer}): " + "; ".join(parts) + ".")
    if case.name == MINILM:
        lines += _minilm_goal(rows)
    return lines


def _fidelity_goal(case: Case, ours: float, theirs: float) -> str:
    """SQNR within 0.5 dB of the peer's (or above); an embedding cosine at least the peer's."""
    if case.metric == "embedding":
        verdict = "met" if ours >= theirs else f"missed by {theirs - ours:.4f}"
        return f"cosine {ours:.4f} vs {theirs:.4f}: {verdict}"
    verdict = "met" if ours - theirs >= -0.5 else f"missed by {theirs - ours:.1f} dB"
    return f"SQNR {ours:.1f} vs {theirs:.1f} dB: {verdict}"


def _minilm_goal(rows: list[Row]) -> list[str]:
    """Issue 11's goal for the real sentence encoder on OpenVINO: cosine >= 0.997, >= 2.5x."""
    lines = []
    for ours in rows:
        if ours.target != "openvino" or not ours.quantizer.startswith("acekit"):
            continue
        base = _baseline(rows, ours)
        if ours.result.error or not ours.rounds or base is None or not base.rounds:
            continue
        speedup = base.ms / ours.ms
        cosine = ours.result.fidelity
        verdict = "met" if cosine >= 0.997 and speedup >= 2.5 else "missed"
        lines.append(
            f"- {MINILM}, openvino, {ours.quantizer} (goal: cosine >= 0.997 to FP32 at "
            f">= 2.5x): cosine {cosine:.4f} at {speedup:.2f}x: {verdict}."
        )
    return lines


def report(outcomes: list[tuple[Case, list[Row]]], args: argparse.Namespace) -> str:
    """The docs/benchmarks.md section."""
    import onnxruntime as ort
    import openvino as ov

    table = [_table_row(c, rows, r) for c, rows in outcomes for r in rows]
    ops = [line for c, rows in outcomes for line in _ops_rows(c, rows)]
    goals = [line for c, rows in outcomes for line in _goals(c, rows)]
    executed = [line for c, rows in outcomes for line in _executed_rows(c, rows)]
    recipe = f" --recipe '{args.recipe}'" if args.recipe else ""
    return f"""
Machine: {machine()}. {versions()}, ONNX Runtime {ort.__version__}, OpenVINO
{ov.__version__}. Date: {today()}. Script: `.venv/bin/python -m benchmarks.targets
--models {args.models} --targets {args.targets} --rounds {args.rounds} --runs {args.runs}
--seconds {args.seconds}{recipe}` (`benchmarks/targets.py`).

Each latency in its own process (load, 1 s warm-up, median of >= {args.runs} runs and >=
{args.seconds} s), every model of a case in turn, {args.rounds} alternating rounds, median
of the rounds; batch 1, 2 threads (ORT: intra-op 2, sequential; OpenVINO:
`INFERENCE_NUM_THREADS=2`, `PERFORMANCE_HINT=LATENCY`). Speedup is against FP32 in the same
runtime (OpenVINO: the f32 hint). Same {CALIBRATION_SAMPLES} calibration samples for every
quantizer; fidelity: SQNR (dB) against torch FP32 on held-out inputs, or for the sentence
encoder the cosine of its sentence embeddings (TensorRT files run in ONNX Runtime
on the CPU). "integer": integer linear kernels / all linear kernels in the runtime's
optimised graph (TensorRT: Conv/Gemm/MatMul whose input and weight carry Q/DQ). Quant s
and peak RSS MiB: the whole quantization step (acekit: compile + export).

| model | target | quantizer | ms | speedup | integer | fidelity | quant s | peak RSS MiB |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(table)}

Ops that read Q/DQ in the TensorRT files (what TensorRT runs in INT8), acekit vs ModelOpt:

| model | quantizer | ops with quantized inputs |
|---|---|---|
{chr(10).join(ops) or "| - | - | - |"}

OpenVINO's executed graph (`get_runtime_model()`: layer type and runtime precision),
where acekit's IR and NNCF's differ:

| model | executed layer | precision | acekit | NNCF |
|---|---|---|---|---|
{chr(10).join(executed) or "| - | - | - | - | - |"}

Goals (on each target: at least the speed of the target's own quantizer, at least its
fidelity (SQNR within 0.5 dB; embedding cosine at least the peer's), a faster
quantization step):

{chr(10).join(goals) or "- none measured"}
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, or (``time ...``) time one model in this process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["time"]:
        parser = argparse.ArgumentParser(prog="benchmarks.targets time")
        parser.add_argument("runtime", choices=("ort", "ov"))
        parser.add_argument("path", type=Path)
        parser.add_argument("inputs", type=Path)
        parser.add_argument("--precision")
        parser.add_argument("--runs", type=int, default=40)
        parser.add_argument("--seconds", type=float, default=3.0)
        timing = parser.parse_args(argv[1:])
        ms = time_in_process(
            timing.runtime,
            timing.path,
            timing.precision,
            timing.inputs,
            timing.runs,
            timing.seconds,
        )
        print(json.dumps({"ms": ms}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="resnet18", help=f"comma-separated: {', '.join(MODELS)}"
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--work-dir", type=Path, help="keep the models here")
    parser.add_argument(
        "--recipe",
        help="one more acekit row per target, compiled with this pipeline spec "
        "(e.g. 'cleanup,smoothquant,quantize,calibrate{observer=moving_average},gptq')",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    targets = [t for t in args.targets.split(",") if t]
    bad = sorted(set(names) - set(MODELS)) + sorted(set(targets) - set(TARGETS))
    if bad:
        parser.error(f"unknown model(s) or target(s): {', '.join(bad)}")
    torch.set_num_threads(2)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="acekit-targets-") as tmp:
        scratch = args.work_dir or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        warm_up(scratch)  # imports are not charged to the first quantizer
        for name in names:
            outcomes.append(run_case(name, targets, args, scratch))
            gc.collect()
    body = report(outcomes, args)
    print(body)
    if not args.no_write:
        write_section(
            "Targets: acekit vs each target's own quantizer (benchmarks/targets.py)", body
        )


if __name__ == "__main__":
    main()
