"""``acekit demo``: the main job on torchvision's resnet18 for ONNX Runtime on the CPU.

Quantizes resnet18 (random weights with BatchNorm statistics re-estimated on seeded
inputs, since no weights are downloaded), deploys it with the embedded default target
and prints the report: nodes parsed, removed, quantized and skipped, FP32 vs INT8
latency in ONNX Runtime, fidelity and the files written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from acekit.job import JobReport, run_job
from acekit.models import calibrate_batchnorm, seeded_images


def run_demo(out_dir: Path = Path("out/demo"), image_size: int = 224) -> JobReport:
    """Run the demo, writing into ``out_dir``; returns the report."""
    import torchvision

    torch.manual_seed(0)
    model = calibrate_batchnorm(torchvision.models.resnet18(), (3, image_size, image_size))
    calibration = seeded_images(20, (3, image_size, image_size), seed=1)
    evaluation = [(x,) for x in seeded_images(16, (3, image_size, image_size), seed=2)]
    return run_job(
        model,
        "resnet18",
        example_inputs=evaluation[0],
        calibration=calibration,
        evaluation=evaluation,
        out_dir=out_dir,
    )
