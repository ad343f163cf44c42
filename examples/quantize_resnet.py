"""Quantize torchvision's resnet18 for ONNX Runtime with acekit.compile and torch.compile.

Run: ``.venv/bin/python examples/quantize_resnet.py`` (about 30 s on 2 cores; set
``IMAGE_SIZE = 224`` for ImageNet-sized inputs, which takes about three times longer).

The weights are random (nothing is downloaded); BatchNorm statistics are re-estimated
so the activations have a trained network's scale. The calibration data is a
DataLoader of ``(image, label)`` pairs, as a training loader gives them: acekit takes
the image and ignores the label. Everything is written under ``out/example/``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import acekit
from acekit.models import calibrate_batchnorm
from acekit.settings import TrainingSettings

IMAGE_SIZE = 64
OUT = Path(__file__).resolve().parents[1] / "out" / "example"


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``actual`` against ``reference``, in dB."""
    noise = float((reference - actual).pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(reference.pow(2).sum()) / noise)


def main() -> None:
    """Compile, check, deploy, draw, save and reload resnet18; then the same via torch.compile."""
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    model = calibrate_batchnorm(torchvision.models.resnet18(), shape)

    # 64 (image, label) pairs in batches of 4: 16 batches, all of them calibrate.
    images = torch.randn(64, *shape)
    labels = torch.randint(0, 1000, (64,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)

    x = torch.randn(1, *shape)
    # W8A8 post-training quantization for ONNX Runtime (the defaults), on 16 batches.
    settings = acekit.Settings(training=TrainingSettings(stats_steps=len(loader)))
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=(x,),
        calibration_inputs=loader,
        logs_dir=str(OUT / "logs"),
    )

    # qm(x) simulates the integer model in torch (fake quantization).
    test = torch.randn(8, *shape)
    with torch.no_grad():
        reference, simulated = model(test), qm(test)
    agree = (reference.argmax(1) == simulated.argmax(1)).float().mean().item()
    fidelity = sqnr_db(reference, simulated)
    print(f"qm(x) vs FP32: SQNR {fidelity:.1f} dB, top-1 agreement {agree:.0%}")

    onnx_path = qm.export(OUT / "resnet18_int8.onnx", overwrite=True)
    picture = qm.visualize(OUT / "resnet18.svg")  # .dot when graphviz's dot is missing
    saved = qm.save(OUT / "resnet18.acekit")
    reloaded = acekit.load(saved)
    with torch.no_grad():
        same = torch.equal(reloaded(test), simulated)
    print(f"exported {onnx_path}, drew {picture}, saved {saved} (reloaded identical: {same})")

    # The same through torch.compile: lazy, so the quantization runs on the first call.
    compiled = torch.compile(
        model,
        backend="clika",
        options={
            "settings": settings,
            "calibration_inputs": loader,
            "logs_dir": str(OUT / "logs"),
        },
    )
    with torch.no_grad():
        first = compiled(test)
    print(f"torch.compile(backend='clika') vs FP32: SQNR {sqnr_db(reference, first):.1f} dB")
    print(f"exported {compiled.export(OUT / 'resnet18_clika_int8.onnx', overwrite=True)}")


if __name__ == "__main__":
    main()
