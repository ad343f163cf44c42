"""Helpers shared by the benchmark scripts: machine description, memory, timing."""

from __future__ import annotations

import contextlib
import datetime
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model, core count and the flags that matter for int8 kernels."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    model = re.search(r"Model name:\s*(.+)", lscpu)
    cpus = re.search(r"^CPU\(s\):\s*(\d+)", lscpu, re.MULTILINE)
    flags = re.search(r"Flags:\s*(.+)", lscpu)
    wanted = ("avx512_vnni", "avx512_bf16", "amx_int8", "avx2")
    present = [f for f in wanted if flags and f in flags.group(1).split()]
    return (
        f"{model.group(1).strip() if model else platform.machine()}, "
        f"{cpus.group(1) if cpus else '?'} CPUs, flags: {', '.join(present) or 'none of note'}"
    )


def versions() -> str:
    """Library versions for the report."""
    import acekit

    python = platform.python_version()
    return f"acekit {acekit.__version__}, torch {torch.__version__}, Python {python}"


def today() -> str:
    """The date for the report."""
    return datetime.date.today().isoformat()


def reset_peak_rss() -> None:
    """Reset the process's RSS high-water mark (Linux)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """The process's RSS high-water mark since the last reset, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    DOCS.write_text(text.rstrip() + "\n")
