"""Cost of a quantization-aware training step against the same FP32 step.

resnet18 at 64x64, batch 16: one SGD step (forward, cross-entropy, backward, update) of
the QuantizedModule (QAT: learnable scales, LSQ) against the same step of the original
FP32 model, timed alternately in one process, median of ``--runs``. Goal: the QAT step
takes at most 2x the FP32 step. Writes docs/benchmarks.md.

Run: ``.venv/bin/python -m benchmarks.qat_step``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch.nn import functional as F

import acekit
from acekit.models import calibrate_batchnorm
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings
from benchmarks.common import machine, today, versions, write_section

SHAPE = (16, 3, 64, 64)


def training_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step of ``model`` on a batch, as a function of the batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    """Time both steps alternately and write the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="do not write the docs")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    fp32 = calibrate_batchnorm(torchvision.models.resnet18(), SHAPE[1:])
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(*SHAPE, generator=generator) for _ in range(4)]
    settings = Settings(
        training=TrainingSettings(stats_steps=4),
        quantization=GlobalQuantizationSettings(quantization_algorithm="qat"),
    )
    modules = {
        name: acekit.compile(
            fp32,
            settings=settings,
            example_inputs=(calibration[0],),
            calibration_inputs=calibration,
            pipeline=f"qat-bn{{freeze_after={freeze}}},cleanup,ptq",
            logs_dir="out/benchmarks/logs",
        )
        for name, freeze in (("qat", 10**9), ("qat_frozen", 0))
    }
    fp32.train()
    steps = {"fp32": training_step(fp32)}
    for name, module in modules.items():
        steps[name] = training_step(module.train())
    images = torch.randn(*SHAPE, generator=generator)
    labels = torch.randint(0, 1000, (SHAPE[0],), generator=generator)
    for step in steps.values():
        for _ in range(3):
            step(images, labels)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step(images, labels)
            times[name].append(time.perf_counter() - start)
    fp32_ms = 1e3 * statistics.median(times["fp32"])
    qat_ms = 1e3 * statistics.median(times["qat"])
    frozen_ms = 1e3 * statistics.median(times["qat_frozen"])
    ratio, frozen_ratio = qat_ms / fp32_ms, frozen_ms / fp32_ms
    verdict = "met" if ratio <= 2.0 else "not met"
    frozen_verdict = "met" if frozen_ratio <= 2.0 else "not met"
    body = (
        f"Measured {today()} on {machine()}; {versions()}.\n"
        f"resnet18, 64x64, batch 16, SGD with momentum; medians of {args.runs} interleaved "
        "steps (`benchmarks/qat_step.py`).\n\n"
        "| step | ms | ratio to FP32 |\n|---|---|---|\n"
        f"| FP32 model (BatchNorm in training) | {fp32_ms:.1f} | 1 |\n"
        f"| QAT, BatchNorm still learning | {qat_ms:.1f} | **{ratio:.2f}x** |\n"
        f"| QAT, BatchNorm statistics frozen | {frozen_ms:.1f} | **{frozen_ratio:.2f}x** |\n\n"
        "QAT: LSQ scales, every conv + BatchNorm pair folded at each step (`qat-bn`); the "
        "statistics freeze after `freeze_after` steps (default 1000), after which the pair "
        f"costs one add. Goal at most 2x: {verdict} while BatchNorm learns, "
        f"{frozen_verdict} once frozen.\n"
    )
    print(body)
    if not args.no_write:
        write_section("QAT training step", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
