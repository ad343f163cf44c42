"""Parse + cleanup speed and memory on real torchvision models.

Measures, in one process: parse + cleanup time and peak RSS for resnet50, vit_b_16 and a
24-layer ViT-L-sized model; how the time grows with 12, 24 and 48 encoder layers (it
must grow linearly); and parse + cleanup of vit_b_16 against 10 FP32 forward passes of
the same model at batch 1. Writes the table into docs/benchmarks.md.

Run: ``.venv/bin/python -m benchmarks.parse`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import gc
import time

import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

import acekit
from benchmarks.common import (
    machine,
    median_seconds,
    peak_rss_mib,
    reset_peak_rss,
    today,
    versions,
    write_section,
)


def parse_and_clean(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float, int]:
    """Seconds and peak RSS (MiB) of parse + cleanup, and the cleaned graph's size."""
    gc.collect()
    reset_peak_rss()
    start = time.perf_counter()
    graph = acekit.parse(model, (x,))
    graph = acekit.Pipeline.from_spec("cleanup").run(graph, verify=False).graph
    seconds = time.perf_counter() - start
    return seconds, peak_rss_mib(), len(graph)


def vit(layers: int, hidden: int = 768, heads: int = 12, mlp: int = 3072) -> torch.nn.Module:
    """A torchvision ViT at 224x224 with the given depth and width (random weights)."""
    return VisionTransformer(224, 16, layers, heads, hidden, mlp).eval()


def main() -> None:
    """Run every measurement and write the report."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x = torch.randn(1, 3, 224, 224)
    # Warm up imports and plugin discovery so the first model is not charged for them.
    parse_and_clean(torchvision.models.resnet18().eval(), x)

    rows = []
    models = {
        "resnet50": torchvision.models.resnet50().eval(),
        "vit_b_16": torchvision.models.vit_b_16().eval(),
        "ViT-L-sized (24 layers, 1024 wide)": vit(24, 1024, 16, 4096),
    }
    for name, model in models.items():
        seconds, rss, nodes = parse_and_clean(model, x)
        rows.append(f"| {name} | {seconds:.2f} | {rss:.0f} | {nodes} |")
        print(rows[-1], flush=True)

    scaling = []
    for layers in (12, 24, 48):
        seconds = min(parse_and_clean(vit(layers), x)[0] for _ in range(2))
        scaling.append((layers, seconds))
        print(f"{layers} layers: {seconds:.2f} s", flush=True)
    base = scaling[0][1]
    scaling_rows = [
        f"| {layers} | {seconds:.2f} | {seconds / base:.2f} | {layers / 12:.0f} |"
        for layers, seconds in scaling
    ]

    model = models["vit_b_16"]
    with torch.inference_mode():
        forward = median_seconds(lambda: model(x), repeats=10)
    parse_seconds = min(parse_and_clean(model, x)[0] for _ in range(3))
    ratio = parse_seconds / (10 * forward)
    print(f"vit_b_16 parse+cleanup {parse_seconds:.2f} s, 10 forwards {10 * forward:.2f} s")

    body = f"""
Machine: {machine()}. {versions()}. Date: {today()}. 2 torch threads.

Parse (FX) + `cleanup` preset, one process, batch 1, 224x224:

| model | seconds | peak RSS MiB | nodes after cleanup |
|---|---|---|---|
{chr(10).join(rows)}

Growth with depth (vit_b_16 width; best of 2):

| encoder layers | seconds | ratio to 12 layers | linear ratio |
|---|---|---|---|
{chr(10).join(scaling_rows)}

vit_b_16: parse + cleanup {parse_seconds:.2f} s against 10 FP32 forward passes at batch 1
{10 * forward:.2f} s: ratio **{ratio:.2f}** (goal: below 1).
"""
    write_section("Parse + cleanup (benchmarks/parse.py)", body)


if __name__ == "__main__":
    main()
