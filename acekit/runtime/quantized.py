"""QuantizedModule: the quantized graph as an ``nn.Module`` that runs, trains and deploys.

It is generated from the graph (fake quantization where the graph's specs say), so the
torch simulation and the deployed model come from the same source. Training it
(quantization-aware training) updates its parameters and, with learnable scales, its
quantizers; :meth:`QuantizedModule.sync_graph` writes both back into the graph before
export or save.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from acekit.fileio import atomic_torch_save, check_output_path
from acekit.ir.graph import Graph
from acekit.ir.serialize import graph_from_dict, graph_to_dict
from acekit.logging import get_logger
from acekit.runtime.codegen import QUANTIZERS, to_module

if TYPE_CHECKING:
    from acekit.settings import Settings

log = get_logger(__name__)

_FORMAT = "acekit.quantized-module/1"


@attrs.frozen
class CompileReport:
    """What ``acekit.compile`` did: the pipeline, node counts, time and the log file."""

    pipeline: str
    parsed_nodes: int
    final_nodes: int
    removed: tuple[tuple[str, int], ...]
    quantized: int
    skipped: int
    calibration_batches: int
    seconds: float
    log_path: Path | None = None


class QuantizedModuleFileError(ValueError):
    """A file given to :func:`load` is not a saved QuantizedModule."""


class QuantizedModule(nn.Module):
    """A quantized model: ``forward`` simulates the integer model with fake quantization.

    Attributes:
        graph: The quantized graph (specs with scales on every quantized tensor).
        settings: The settings it was compiled with.
        learnable_scales: Whether the quantizers' scales train (QAT).
    """

    def __init__(self, graph: Graph, settings: Settings, *, learnable_scales: bool = False) -> None:
        super().__init__()
        self.graph = graph
        self.settings = settings
        self.learnable_scales = learnable_scales
        self.graph_module = to_module(graph, quantize=True, learnable_scales=learnable_scales)
        #: What compile did (``None`` for a module loaded from a file).
        self.report: CompileReport | None = None

    def forward(self, *inputs: Any) -> Any:
        """Run the quantized model (fake quantization in float)."""
        return self.graph_module(*inputs)

    # -- keeping the graph current -----------------------------------------------------

    def sync_graph(self) -> Graph:
        """Copy the module's current weights and scales into :attr:`graph`; return it."""
        state = self.graph_module.state_dict()
        for ref in list(self.graph.tensors):
            if ref in state:
                self.graph.tensors[ref] = state[ref].detach().to("cpu").clone()
        quantizers: Mapping[str, str] = self.graph_module.meta.get("acekit_quantizers", {})
        for key, value_name in quantizers.items():
            value = self.graph.value(value_name)
            assert value.quant is not None
            scale = state[f"{QUANTIZERS}.{key}.scale"].detach().float().reshape(-1)
            zero_point = state[f"{QUANTIZERS}.{key}.zero_point"].reshape(-1)
            value.quant = attrs.evolve(
                value.quant,
                scale=tuple(scale.clamp_min(torch.finfo(torch.float32).tiny).tolist()),
                zero_point=tuple(int(z) for z in zero_point.tolist()),
            )
        return self.graph

    # -- deploying and looking at it ---------------------------------------------------

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        target: str | None = None,
    ) -> Path:
        """Deploy for the settings' target (or ``target``) at ``path``; return the file.

        Raises :class:`acekit.fileio.OutputPathError` before any work when ``path``
        exists (unless ``overwrite``) or cannot be written; the file is written
        atomically.
        """
        from acekit.plugin import get_plugin_manager
        from acekit.quant.targets import resolve_target

        destination = check_output_path(path, overwrite=overwrite)
        name = target or self.settings.deployment.target_framework
        chosen = resolve_target(name)
        graph = self.sync_graph()
        written = Path(
            chosen.export(graph, destination, dict(self.settings.deployment.target_options))
        )
        get_plugin_manager().export_done(written, chosen, graph)
        log.info(f"Saved final model: {written}")
        return written

    def visualize(self, path: str | os.PathLike[str]) -> Path:
        """Draw the quantized graph (SVG, or .dot without graphviz's ``dot``); return it."""
        from acekit.visualize import render

        return render(self.sync_graph(), path)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Save graph, weights, scales and settings to ``path`` atomically; return it.

        Training checkpoints overwrite by default: a crash mid-write leaves the last
        complete file in place.
        """
        destination = check_output_path(path, overwrite=overwrite)
        payload = {
            "format": _FORMAT,
            "graph": graph_to_dict(self.sync_graph()),
            "settings": self.settings.to_dict(),
            "learnable_scales": self.learnable_scales,
            "training": self.training,
        }
        written = atomic_torch_save(payload, destination)
        log.info(f"Saved quantized model: {written}")
        return written


def load(path: str | os.PathLike[str]) -> QuantizedModule:
    """Read a :class:`QuantizedModule` written by :meth:`QuantizedModule.save`.

    The file is read with ``weights_only=True``: loading never runs code from it.
    """
    from acekit.settings import Settings

    source = os.fspath(path)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise QuantizedModuleFileError(
            f"{source} is not a readable acekit model file: {error}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise QuantizedModuleFileError(
            f"{source} is not a saved acekit QuantizedModule (QuantizedModule.save writes one)"
        )
    graph = graph_from_dict(payload["graph"])
    settings = Settings.from_dict(payload["settings"], source=source)
    module = QuantizedModule(graph, settings, learnable_scales=bool(payload["learnable_scales"]))
    return module.train(bool(payload.get("training", False)))
