"""TensorRT engines on a GPU: FP16 baseline, acekit INT8 and FP8, latency and fidelity.

For each model (the cases of :mod:`benchmarks.ptq`) this exports FP32 ONNX, quantizes
with acekit for the TensorRT target in INT8 and FP8 modes (same 32 calibration samples),
builds a TensorRT engine from each file (:mod:`acekit_tensorrt.engine`: FP16 everywhere
Q/DQ does not ask for INT8/FP8) and reports the median latency (CUDA-synchronised, batch
1, after a warm-up) and the SQNR against torch FP32 on the held-out inputs.

Needs an NVIDIA GPU and ``pip install 'acekit[tensorrt]'``; without them it says so and
exits with status 2.

Run: ``.venv/bin/python -m benchmarks.tensorrt [--models resnet18,vit_b_16]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import acekit
from acekit.settings import DeploymentSettings, Settings, TrainingSettings
from acekit_tensorrt.runner import tensorrt_available
from benchmarks.common import machine, today, versions, write_section
from benchmarks.ptq import CALIBRATION_SAMPLES, Case, export_fp32, make_case, reference_outputs

MODES = {"int8": 17, "fp8": 19}


def quantize(case: Case, mode: str, path: Path, scratch: Path) -> Path:
    """acekit for the TensorRT target in ``mode``."""
    settings = Settings(
        training=TrainingSettings(stats_steps=CALIBRATION_SAMPLES),
        deployment=DeploymentSettings(
            target_framework="tensorrt", target_options={"mode": mode, "opset": MODES[mode]}
        ),
    )
    qm = acekit.compile(
        case.model,
        settings=settings,
        example_inputs=case.example,
        calibration_inputs=case.calibration,
        logs_dir=str(scratch / f"logs-{case.name}-{mode}"),
    )
    return qm.export(path, overwrite=True)


def measure(path: Path, case: Case, reference: list[np.ndarray], runs: int) -> tuple[float, float]:
    """``(median ms, SQNR dB)`` of the engine built from ``path``."""
    from acekit_tensorrt.engine import EngineRunner

    engine = EngineRunner(path)
    outputs = [engine(*inputs)[0].float().cpu().numpy() for inputs in case.evaluation]
    ref = np.concatenate([r.ravel() for r in reference]).astype(np.float64)
    out = np.concatenate([o.ravel() for o in outputs]).astype(np.float64)
    sqnr = float(20 * np.log10(np.linalg.norm(ref) / np.linalg.norm(ref - out)))
    example = [x.cuda() for x in case.example]
    for _ in range(20):
        engine(*example)
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        engine(*example)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), sqnr


def main(argv: Sequence[str] | None = None) -> None:
    """Build and time the engines; write the table into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50,vit_b_16")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not tensorrt_available():
        print("benchmarks.tensorrt needs an NVIDIA GPU and pip install 'acekit[tensorrt]'")
        sys.exit(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="acekit-trt-bench-") as tmp:
        scratch = Path(tmp)
        for name in [n for n in args.models.split(",") if n]:
            case = make_case(name)
            reference = reference_outputs(case)
            files = {"FP16 (FP32 ONNX)": export_fp32(case, scratch / f"{name}.fp32.onnx")}
            for mode in MODES:
                files[f"acekit {mode.upper()}"] = quantize(
                    case, mode, scratch / f"{name}.{mode}.onnx", scratch
                )
            base = None
            for label, path in files.items():
                ms, sqnr = measure(path, case, reference, args.runs)
                base = base or ms
                rows.append(f"| {name} | {label} | {ms:.3f} | {base / ms:.2f}x | {sqnr:.1f} |")
                print(rows[-1], flush=True)
    body = f"""
Machine: {machine()}, GPU {torch.cuda.get_device_name()}. {versions()}. Date: {today()}.
Script: `.venv/bin/python -m benchmarks.tensorrt` (batch 1, median of {args.runs} runs).

| model | engine | ms | speedup vs FP16 | SQNR dB |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_write:
        write_section("TensorRT engines (benchmarks/tensorrt.py)", body)


if __name__ == "__main__":
    main()
