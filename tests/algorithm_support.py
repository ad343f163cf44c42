"""Shared measurements for the tests of the post-training algorithms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import acekit
from acekit.ir.graph import Graph
from acekit.runtime.codegen import to_module
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings

LAYER_OPS = ("conv2d", "linear")


class Keep(nn.Module):
    """A tap that stores every tensor it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach())
        return x


def layer_outputs(
    graph: Graph, data: list[torch.Tensor], *, quantize: bool
) -> dict[str, torch.Tensor]:
    """Every conv/linear node's output on ``data`` (concatenated over batches), by node."""
    names = [n.name for n in graph.nodes if n.op in LAYER_OPS]
    taps = {name: Keep() for name in names}
    module = to_module(graph, quantize=quantize, taps=taps)
    with torch.no_grad():
        for batch in data:
            module(batch)
    return {name: torch.cat(tap.seen) for name, tap in taps.items()}


def channel_means(output: torch.Tensor) -> torch.Tensor:
    """Per-channel mean (dim 1 for conv outputs, the last dim for linear ones)."""
    if output.dim() == 2:
        return output.mean(0)
    return output.transpose(0, 1).reshape(output.shape[1], -1).mean(1)


def compile_with(
    model: nn.Module,
    data: list[torch.Tensor],
    pipeline: str,
    logs: Path,
    weights_bits: int = 8,
    **quantization: Any,
) -> acekit.QuantizedModule:
    """``acekit.compile`` of ``model`` with ``pipeline`` and ``weights_bits``, on ``data``."""
    settings = Settings(
        training=TrainingSettings(stats_steps=len(data)),
        quantization=GlobalQuantizationSettings(weights_num_bits=weights_bits, **quantization),
    )
    return acekit.compile(
        model,
        settings=settings,
        example_inputs=(data[0][:1],),
        calibration_inputs=data,
        pipeline=pipeline,
        logs_dir=str(logs),
    )


def assert_deploys_like_simulation(
    qm: acekit.QuantizedModule, x: torch.Tensor, folder: Path
) -> None:
    """The ONNX Runtime export of ``qm`` computes what ``qm`` simulates (within one step)."""
    from tests.quant_support import ort_session, run_ort

    path = qm.export(folder / "model.onnx", overwrite=True)
    with torch.no_grad():
        expected = qm(x)
    actual = run_ort(ort_session(path), x)
    step = float((expected.max() - expected.min()) / 255)
    within = float(((actual - expected).abs() <= step + 1e-6).float().mean())
    assert within >= 0.99, within


def layer_inputs(
    graph: Graph, data: list[torch.Tensor], *, quantize: bool
) -> dict[str, torch.Tensor]:
    """Every conv/linear node's input on ``data`` (concatenated over batches), by node."""
    nodes = [n for n in graph.nodes if n.op in LAYER_OPS]
    taps = {n.inputs[0].name: Keep() for n in nodes}
    module = to_module(graph, quantize=quantize, taps=taps)
    with torch.no_grad():
        for batch in data:
            module(batch)
    return {n.name: torch.cat(taps[n.inputs[0].name].seen) for n in nodes}
