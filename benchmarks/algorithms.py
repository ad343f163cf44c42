"""Post-training algorithms on real data: round-to-nearest against each algorithm.

The digits CNN of ``examples/digits_qat.py`` (scikit-learn's real 8x8 handwritten
digits, the example's fixed 70/30 split and training) is quantized at W8A8, W4A8 and
W3A8 with acekit's plain PTQ (observers + round-to-nearest: the baseline row) and with
each algorithm of ``plugins/acekit_algorithms`` (and a mixed-precision search from the
8-bit calibration down to the size of 4-bit weights), calibrated on 16 batches of 32
training images; each row gives the test accuracy in the torch simulation and in ONNX
Runtime, and the compile time (parse, algorithms, calibration) on this machine.

Run: ``.venv/bin/python -m benchmarks.algorithms [--write-docs]`` (a few minutes on 2
cores). ``--write-docs`` writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import acekit
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings
from benchmarks.common import machine, today, versions, write_section

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from digits_qat import SEED, DigitsNet, accuracy, deployed_accuracy, digits, train

#: (row label, algorithms spec; "" is plain round-to-nearest PTQ).
VARIANTS = (
    ("round-to-nearest (baseline)", ""),
    ("bias-correction (fast, default)", "bias-correction"),
    ("bias-correction{sequential=true}", "bias-correction{sequential=true}"),
    ("cle + bias-correction", "cle,bias-correction"),
    ("adaround", "adaround"),
    ("gptq", "gptq"),
    ("gptq + bias-correction", "gptq,bias-correction"),
)
BITS = (8, 4, 3)
NOTES = """
Not compared here: NNCF, AIMET (`aimet-torch`) and a GPTQ package on the same model and
data were not run (the peers' columns of issue 12 are still open). MiniLM results are
in the next section. Peak memory was not recorded: the algorithms hold one layer's
inputs (AdaRound), one `columns x columns` Hessian (GPTQ) or per-channel sums
(bias correction) beyond calibration's own.
"""


def compile_digits(
    model: torch.nn.Module, train_data: object, bits: int, algorithms: str, logs: Path
) -> tuple[acekit.QuantizedModule, float]:
    """``acekit.compile`` of the digits CNN at ``bits``-bit weights with ``algorithms``."""
    settings = Settings(
        training=TrainingSettings(stats_steps=16, random_seed=SEED),
        quantization=GlobalQuantizationSettings(weights_num_bits=bits, algorithms=algorithms),
    )
    images = train_data.tensors[0]  # type: ignore[attr-defined]
    started = time.perf_counter()
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=(images[:1],),
        calibration_inputs=DataLoader(train_data, batch_size=32),  # type: ignore[arg-type]
        logs_dir=str(logs),
    )
    return qm, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Train the digits CNN, quantize it every way, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.manual_seed(SEED)
    train_data, test_data = digits()
    model = DigitsNet()
    train(model, train_data, epochs=30, lr=3e-3)
    fp32 = accuracy(model, test_data)
    lines = [
        f"Measured {today()} on {machine()}; {versions()}.",
        "Digits CNN of `examples/digits_qat.py` (scikit-learn `load_digits`, real 8x8 "
        "handwritten digits, stratified 70/30 split, seed 0), calibrated on 16 batches of "
        "32 training images, accuracy on the 540 test images; `python -m "
        "benchmarks.algorithms`. Seconds: the whole `acekit.compile` (parse, algorithms, "
        "calibration) on 2 cores. No training anywhere.",
        "",
        f"FP32: {fp32:.2f} %",
        "",
        "| weights | algorithms | accuracy (torch) | accuracy (ONNX Runtime) | vs FP32 | seconds |",
        "|---|---|---|---|---|---|",
    ]
    # Mixed precision from the W8 calibration, to the size of all-4-bit weights.
    w4_bytes = sum(p.numel() for p in model.parameters() if p.dim() > 1) // 2
    budgeted = (
        f"mixed-precision to the W4 size ({w4_bytes} B) + bias-correction",
        f"mixed-precision{{budget_bytes={w4_bytes}}},bias-correction",
    )
    runs = [(bits, label, spec) for bits in BITS for label, spec in VARIANTS]
    runs.insert(len(VARIANTS), (8, *budgeted))
    with tempfile.TemporaryDirectory(prefix="acekit-algorithms-") as scratch:
        folder = Path(scratch)
        for bits, label, spec in runs:
            qm, seconds = compile_digits(model, train_data, bits, spec, folder / "logs")
            simulated = accuracy(qm, test_data)
            deployed = deployed_accuracy(qm, test_data, folder)
            weights = "mixed" if spec.startswith("mixed") else f"W{bits}A8"
            row = (
                f"| {weights} | {label} | {simulated:.2f} % | {deployed:.2f} % | "
                f"{simulated - fp32:+.2f} | {seconds:.1f} |"
            )
            print(row, flush=True)
            lines.append(row)
    body = "\n".join(lines) + "\n" + NOTES
    print(body)
    if args.write_docs:
        write_section("Post-training algorithms on real data (digits)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
