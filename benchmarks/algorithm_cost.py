"""Cost of each post-training algorithm on torchvision resnet18 at default settings.

Each algorithm runs in its own process (``acekit.compile`` with default settings and
``algorithms=<name>``, so 20 calibration batches) on resnet18 with seeded random weights
and seeded random 224x224 calibration images (cost does not depend on the values),
batch 8. The parent reports each child's wall time of the compile and its peak RSS, and
stops a child that runs past ``--limit`` seconds (reported as ``> limit``).

Run: ``.venv/bin/python -m benchmarks.algorithm_cost [--only adaround] [--limit 900]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch

ALGORITHMS = (
    ("round-to-nearest (plain PTQ)", ""),
    ("bias-correction", "bias-correction"),
    ("cle", "cle"),
    ("gptq", "gptq"),
    ("mixed-precision (budget: W4 size)", "mixed-precision{budget_bytes=5839456}"),
    ("adaround", "adaround"),
)
BATCH = 8


def child(spec: str) -> None:
    """Compile resnet18 with ``spec``; print its seconds and peak RSS as JSON."""
    import torchvision

    import acekit
    from acekit.settings import GlobalQuantizationSettings, Settings
    from benchmarks.common import peak_rss_mib, reset_peak_rss

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    settings = Settings(quantization=GlobalQuantizationSettings(algorithms=spec))
    generator = torch.Generator().manual_seed(1)
    count = settings.training.stats_steps
    data = [(torch.randn(BATCH, 3, 224, 224, generator=generator),) for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="acekit-cost-") as logs:
        reset_peak_rss()
        started = time.perf_counter()
        acekit.compile(
            model,
            settings=settings,
            example_inputs=data[0],
            calibration_inputs=data,
            logs_dir=logs,
        )
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mib": peak_rss_mib()}))


def main(argv: list[str] | None = None) -> int:
    """Run every algorithm (or ``--only`` one) in a child process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="one algorithm spec to run")
    parser.add_argument("--limit", type=float, default=900.0, help="seconds per algorithm")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    chosen = [(label, spec) for label, spec in ALGORITHMS if not args.only or spec == args.only]
    print("| algorithm | seconds (whole compile) | peak RSS MiB |\n|---|---|---|")
    for label, spec in chosen:
        command = [sys.executable, "-m", "benchmarks.algorithm_cost", "--child", spec]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.limit, check=True
            )
        except subprocess.TimeoutExpired:
            print(f"| {label} | > {args.limit:.0f} | - |", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {label} | {result['seconds']:.1f} | {result['peak_mib']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
