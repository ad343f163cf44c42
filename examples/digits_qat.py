"""Quantization on real data: handwritten digits, FP32 vs PTQ vs QAT, deployed to ORT.

Trains a small CNN on scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits,
bundled with scikit-learn: nothing is downloaded; a fixed, stratified 70/30 split), then
quantizes it four ways and deploys each to ONNX Runtime:

* W8A8 post-training quantization,
* W4A8 post-training quantization (4-bit weights),
* W4A8 after quantization-aware fine-tuning of the W4A8 module for a few epochs,

and prints the test accuracy of each in the torch simulation (``qm(x)``) and in ORT.

Run: ``.venv/bin/python examples/digits_qat.py`` (about a minute on 2 cores).
``--write-docs`` also writes the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import acekit
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings

SEED = 0


class DigitsNet(nn.Module):
    """Three small conv layers with BatchNorm, global pooling and a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits() -> tuple[TensorDataset, TensorDataset]:
    """The 70/30 train/test split of load_digits as tensors in [0, 1], shape (N, 1, 8, 8)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.3, random_state=SEED, stratify=data.target
    )
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
    )


def train(model: nn.Module, data: TensorDataset, epochs: int, lr: float) -> None:
    """Adam with cross-entropy, batches of 64, shuffled with a fixed seed."""
    loader = DataLoader(
        data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()


def accuracy(run: object, data: TensorDataset) -> float:
    """Top-1 accuracy (%) of ``run`` (a module or a deployed model) on ``data``."""
    images, labels = data.tensors
    with torch.no_grad():
        output = run(images)  # type: ignore[operator]
    logits = output[0] if isinstance(output, list) else output
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def quantize(
    model: nn.Module, train_data: TensorDataset, weights_bits: int, qat: bool, logs: Path
) -> acekit.QuantizedModule:
    """acekit.compile with a DataLoader of (image, label) batches as calibration data."""
    settings = Settings(
        training=TrainingSettings(stats_steps=16, random_seed=SEED),
        quantization=GlobalQuantizationSettings(
            quantization_algorithm="qat" if qat else "ptq", weights_num_bits=weights_bits
        ),
    )
    loader = DataLoader(train_data, batch_size=32)
    return acekit.compile(
        model,
        settings=settings,
        example_inputs=(train_data.tensors[0][:1],),
        calibration_inputs=loader,
        logs_dir=str(logs),
    )


def deployed_accuracy(qm: acekit.QuantizedModule, test: TensorDataset, folder: Path) -> float:
    """Export ``qm`` for ONNX Runtime and measure its accuracy there."""
    from acekit_onnxruntime.session import OrtRunner

    path = qm.export(folder / f"digits_{id(qm)}.onnx", overwrite=True)
    return accuracy(OrtRunner(path), test)


def main(argv: list[str] | None = None) -> int:
    """Train, quantize four ways, deploy, and print (optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(SEED)
    train_data, test_data = digits()
    model = DigitsNet()
    train(model, train_data, epochs=30, lr=3e-3)
    rows = [("FP32", accuracy(model, test_data), None)]
    with tempfile.TemporaryDirectory(prefix="acekit-digits-") as scratch:
        folder = Path(scratch)
        for label, bits, qat in (("W8A8 PTQ", 8, False), ("W4A8 PTQ", 4, False)):
            qm = quantize(model, train_data, bits, qat, folder / "logs")
            rows.append((label, accuracy(qm, test_data), deployed_accuracy(qm, test_data, folder)))
        qm = quantize(model, train_data, 4, True, folder / "logs")
        train(qm, train_data, epochs=6, lr=5e-4)
        rows.append(
            (
                "W4A8 QAT (6 epochs)",
                accuracy(qm, test_data),
                deployed_accuracy(qm, test_data, folder),
            )
        )
    table = format_table(rows)
    print(table)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.write_docs:
        write_docs(table)
    return 0


def format_table(rows: list[tuple[str, float, float | None]]) -> str:
    """A markdown table: variant, torch accuracy, ONNX Runtime accuracy, drop vs FP32."""
    fp32 = rows[0][1]
    lines = [
        "| variant | accuracy (torch) | accuracy (ONNX Runtime) | vs FP32 |",
        "|---|---|---|---|",
    ]
    for label, simulated, deployed in rows:
        ort_text = "-" if deployed is None else f"{deployed:.2f} %"
        lines.append(f"| {label} | {simulated:.2f} % | {ort_text} | {simulated - fp32:+.2f} |")
    return "\n".join(lines)


def write_docs(table: str) -> None:
    """Put the table in docs/benchmarks.md under the digits QAT section."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from benchmarks.common import machine, today, versions, write_section

    body = (
        f"Measured {today()} on {machine()}; {versions()}.\n"
        "scikit-learn `load_digits` (real 8x8 handwritten digits), stratified 70/30 split "
        "(seed 0), `examples/digits_qat.py`.\n\n" + table + "\n"
    )
    write_section("Digits: PTQ and QAT on real data", body)


if __name__ == "__main__":
    sys.exit(main())
