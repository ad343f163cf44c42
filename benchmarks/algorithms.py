"""Post-training algorithms on real data: acekit's and the peers', same models, same data.

Two models are trained (fixed seed) on scikit-learn's real 8x8 handwritten digits with
the split and training loop of ``examples/digits_qat.py``: the example's CNN and the
small pre-norm transformer of ``benchmarks/digits_transformer.py``. Each is quantized,
calibrated on the same 16 batches of 32 training images, by

* acekit's plain PTQ (observers + round-to-nearest: the baseline row) and each
  algorithm of ``plugins/acekit_algorithms`` (W8A8, W4A8 and W3A8);
* the peers of ``benchmarks/peers.py``: NNCF's default PTQ (W8A8; SmoothQuant for the
  transformer), AIMET's CLE + AdaRound (W4A8) and GPTQModel's GPTQ weights
  with acekit's 8-bit activations (W4A8 and W8A8).

Every row gives the test accuracy in the torch simulation (the peer's own fake-quant
model for NNCF and AIMET), in ONNX Runtime where acekit exports it, and the cost of the
quantization call (seconds and the process's peak RSS) on this machine.

Run: ``.venv/bin/python -m benchmarks.algorithms [--write-docs] [--bits 8,4,3]``
(needs the ``bench`` extra; 20-40 minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import acekit
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings
from benchmarks import peers
from benchmarks.common import machine, today, versions, write_section
from benchmarks.digits_transformer import DigitsTransformer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from digits_qat import SEED, DigitsNet, accuracy, deployed_accuracy, digits, train

#: (row label, algorithms spec; "" is plain round-to-nearest PTQ) for every model.
VARIANTS = (
    ("round-to-nearest (baseline)", ""),
    ("bias-correction (fast, default)", "bias-correction"),
    ("bias-correction{sequential=true}", "bias-correction{sequential=true}"),
    ("cle + bias-correction", "cle,bias-correction"),
    ("adaround", "adaround{iterations=ITER}"),
    ("gptq", "gptq"),
    ("gptq + bias-correction", "gptq,bias-correction"),
)
#: Extra acekit rows for the transformer (SmoothQuant finds its pre-norm sites).
TRANSFORMER_VARIANTS = (("smoothquant + bias-correction", "smoothquant,bias-correction"),)
CALIBRATION_BATCHES = 16
#: The rows ``--quick`` keeps: the baseline, the default, and the best of each kind.
QUICK = (
    "round-to-nearest (baseline)",
    "bias-correction (fast, default)",
    "adaround",
    "gptq + bias-correction",
    "smoothquant + bias-correction",
)


@dataclass(frozen=True)
class Subject:
    """One model of the benchmark and how it is trained and quantized."""

    name: str
    build: Callable[[], nn.Module]
    epochs: int
    #: AdaRound steps per layer, the same for acekit and AIMET.
    iterations: int
    transformer: bool


SUBJECTS = (
    Subject("digits CNN", DigitsNet, epochs=30, iterations=1000, transformer=False),
    Subject("digits transformer", DigitsTransformer, epochs=30, iterations=300, transformer=True),
)


@dataclass(frozen=True)
class Row:
    """One measured line of a table."""

    weights: str
    method: str
    simulated: float
    deployed: float | None
    cost: peers.Cost

    def markdown(self, fp32: float) -> str:
        """The row as a markdown table line."""
        ort = "-" if self.deployed is None else f"{self.deployed:.2f} %"
        return (
            f"| {self.weights} | {self.method} | {self.simulated:.2f} % | {ort} | "
            f"{self.simulated - fp32:+.2f} | {self.cost.seconds:.1f} | {self.cost.peak_mib:.0f} |"
        )


def compile_digits(
    model: nn.Module, train_data: TensorDataset, bits: int, algorithms: str, logs: Path
) -> acekit.QuantizedModule:
    """``acekit.compile`` of a digits model at ``bits``-bit weights with ``algorithms``."""
    settings = Settings(
        training=TrainingSettings(stats_steps=CALIBRATION_BATCHES, random_seed=SEED),
        quantization=GlobalQuantizationSettings(weights_num_bits=bits, algorithms=algorithms),
    )
    images = train_data.tensors[0]
    return acekit.compile(
        model,
        settings=settings,
        example_inputs=(images[:1],),
        calibration_inputs=DataLoader(train_data, batch_size=32),
        logs_dir=str(logs),
    )


def acekit_rows(
    subject: Subject,
    model: nn.Module,
    data: tuple[TensorDataset, TensorDataset],
    bits_list: tuple[int, ...],
    folder: Path,
    quick: bool = False,
) -> list[Row]:
    """Every acekit algorithm at every width, plus a mixed-precision search at W8.

    ``quick``: only the rows the goals compare (:data:`QUICK`; AdaRound at W4 only).
    """
    train_data, test_data = data
    variants = VARIANTS + (TRANSFORMER_VARIANTS if subject.transformer else ())
    variants = tuple(
        (label, spec.replace("ITER", str(subject.iterations))) for label, spec in variants
    )
    runs = [
        (bits, f"W{bits}A8", label, spec)
        for bits in bits_list
        for label, spec in variants
        if not quick or (label in QUICK and (bits < 8 or "adaround" not in spec))
    ]
    # Mixed precision from the W8 calibration, to the size of all-4-bit weights.
    w4_bytes = sum(p.numel() for p in model.parameters() if p.dim() > 1) // 2
    if not quick:
        runs.insert(
            len(variants),
            (
                8,
                "mixed",
                f"mixed-precision to the W4 size ({w4_bytes} B) + bias-correction",
                f"mixed-precision{{budget_bytes={w4_bytes}}},bias-correction",
            ),
        )
    rows = []
    for bits, weights, label, spec in runs:
        qm, cost = peers.measure(
            functools.partial(compile_digits, model, train_data, bits, spec, folder / "logs")
        )
        steps = f" ({subject.iterations} steps/layer)" if "adaround" in spec else ""
        label = f"acekit {label}{steps}"
        rows.append(
            Row(
                weights,
                label,
                accuracy(qm, test_data),
                deployed_accuracy(qm, test_data, folder),
                cost,
            )
        )
        print(rows[-1].markdown(0.0), flush=True)
    return rows


def peer_rows(
    subject: Subject,
    model: nn.Module,
    data: tuple[TensorDataset, TensorDataset],
    bits_list: tuple[int, ...],
    folder: Path,
) -> list[Row]:
    """NNCF (W8A8), AIMET CLE + AdaRound and GPTQModel GPTQ at each width."""
    train_data, test_data = data
    images = train_data.tensors[0]
    batches = [(images[i * 32 : (i + 1) * 32],) for i in range(CALIBRATION_BATCHES)]
    rows = []
    if 8 in bits_list:
        nncf_name = "NNCF PTQ (fast bias correction" + (
            ", SmoothQuant)" if subject.transformer else ")"
        )
        quantized, cost = peers.measure(lambda: peers.nncf_ptq(model, batches, subject.transformer))
        rows.append(Row("W8A8", nncf_name, accuracy(quantized, test_data), None, cost))
        print(rows[-1].markdown(0.0), flush=True)
    for bits in (b for b in bits_list if b in (8, 4)):
        if bits == 4:  # the goal compares W4A8 with AIMET (its AdaRound is slow: W4 only)
            quantized, cost = peers.measure(
                functools.partial(peers.aimet_adaround, model, batches, bits, subject.iterations)
            )
            label = f"AIMET CLE + AdaRound ({subject.iterations} steps/layer)"
            rows.append(Row(f"W{bits}A8", label, accuracy(quantized, test_data), None, cost))
            print(rows[-1].markdown(0.0), flush=True)

        def gptq_then_acekit(b: int = bits) -> acekit.QuantizedModule:
            # GPTQ's grid points, stored in acekit's 8-bit weights, with its A8 activations.
            rounded = peers.gptq_weights(model, batches, b)
            return compile_digits(rounded, train_data, 8, "", folder / "logs")

        qm, cost = peers.measure(gptq_then_acekit)
        rows.append(
            Row(
                f"W{bits}A8",
                "GPTQModel GPTQ weights + acekit A8",
                accuracy(qm, test_data),
                deployed_accuracy(qm, test_data, folder),
                cost,
            )
        )
        print(rows[-1].markdown(0.0), flush=True)
    return rows


def table(fp32: float, rows: list[Row]) -> list[str]:
    """The markdown table of ``rows``, grouped by weight width in a fixed order."""
    order = {"W8A8": 0, "mixed": 1, "W4A8": 2, "W3A8": 3}
    lines = [
        f"FP32: {fp32:.2f} %",
        "",
        "| weights | method | accuracy (torch) | accuracy (ONNX Runtime) | vs FP32 "
        "| seconds | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(rows, key=lambda r: order.get(r.weights, 9))
    return lines + [row.markdown(fp32) for row in ordered]


def main(argv: list[str] | None = None) -> int:
    """Train both digits models, quantize them every way, print (and write) the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--bits", default="8,4,3", help="weight widths, e.g. 8,4")
    parser.add_argument("--no-peers", action="store_true", help="acekit rows only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the rows the goals compare, the transformer trained 10 epochs, "
        "AdaRound 500 steps/layer on the CNN and 200 on the transformer (acekit and AIMET)",
    )
    args = parser.parse_args(argv)
    bits_list = tuple(int(b) for b in args.bits.split(","))
    subjects = SUBJECTS
    if args.quick:
        subjects = (
            dataclasses.replace(SUBJECTS[0], iterations=500),
            dataclasses.replace(SUBJECTS[1], epochs=10, iterations=200),
        )
    data = digits()
    trained = []
    for subject in subjects:
        torch.manual_seed(SEED)
        model = subject.build()
        train(model, data[0], epochs=subject.epochs, lr=3e-3)
        trained.append((subject, model, accuracy(model, data[1])))
        print(f"{subject.name}: FP32 {trained[-1][2]:.2f} %", flush=True)
    rows: dict[str, list[Row]] = {}
    peer_versions = "peers not run"
    with tempfile.TemporaryDirectory(prefix="acekit-algorithms-") as scratch:
        folder = Path(scratch)
        # acekit first: the peers are imported only after every acekit row ran.
        for subject, model, _ in trained:
            rows[subject.name] = acekit_rows(subject, model, data, bits_list, folder, args.quick)
        if not args.no_peers:
            peer_versions = peers.load()
            for subject, model, _ in trained:
                rows[subject.name] += peer_rows(subject, model, data, bits_list, folder)
    lines = [
        f"Measured {today()} on {machine()}; {versions()}; {peer_versions}.",
        HEADER + (" This run: `--quick`." if args.quick else ""),
    ]
    for subject, _, fp32 in trained:
        lines += ["", f"### {subject.name}", "", *table(fp32, rows[subject.name])]
    body = "\n".join(lines) + "\n" + NOTES
    print(body)
    if args.write_docs:
        write_section("Post-training algorithms on real data (digits)", body)
    return 0


HEADER = (
    "Models: the CNN of `examples/digits_qat.py` and the 2-block pre-norm transformer of "
    "`benchmarks/digits_transformer.py`, trained 30 epochs with seed 0 on scikit-learn "
    "`load_digits` (real 8x8 handwritten digits, stratified 70/30 split; `--quick`: the "
    "transformer 10 epochs); every method "
    "calibrated on the same 16 batches of 32 training images, accuracy on the 540 test "
    "images; `python -m benchmarks.algorithms`. No training after the float model. "
    "Seconds and peak RSS: the whole quantization call (acekit: `acekit.compile`; "
    "NNCF: `nncf.quantize`; AIMET: CLE + AdaRound + QuantSim calibration; GPTQ: GPTQModel "
    "rounding + `acekit.compile`) on 2 CPU cores shared with other jobs; peak RSS is the "
    "process's (it includes the ~1 GB the libraries and models hold)."
)

NOTES = """
How each peer is run (`benchmarks/peers.py`): NNCF `nncf.quantize` with its defaults
(min/max, fast bias correction; `ModelType.TRANSFORMER` for the transformer, which adds
SmoothQuant and the mixed preset), W8A8 only: its hardware configs admit no 4-bit
quantizer in `quantize` (4-bit weights are `compress_weights`, weight-only). AIMET:
`equalize_model` (BatchNorm folding, cross-layer scaling, high-bias absorption), then
`Adaround.apply_adaround` (tf-enhanced ranges, AIMET's per-channel config) and a
`QuantizationSimModel` with the AdaRound encodings frozen and 8-bit activations
calibrated; AdaRound steps per layer are acekit's (AIMET's default, 15 000 at 4 bits,
is 15x the work: about 40 ms a step here, 10 minutes a layer); aimet-torch 2.x has no
bias correction for PyTorch (the v1 module is gone), so none is applied. GPTQ:
GPTQModel's `GPTQ` per conv/linear layer in execution order (BatchNorm folded first;
per-channel symmetric, no groups, no act-order), then `acekit.compile` at W8A8 of the
GPTQ-rounded float model: the 8-bit weight grid stores GPTQ's 4-bit values to within
1/30 of a 4-bit step, and the activations are acekit's. NNCF and AIMET accuracies are
their own torch fake-quant models on the same test images (no ONNX Runtime column).
"""

if __name__ == "__main__":
    raise SystemExit(main())
