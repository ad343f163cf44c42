"""QuantizedModule: the quantized graph as an ``nn.Module`` that runs, trains and deploys.

It is generated from the graph (fake quantization where the graph's specs say), so the
torch simulation and the deployed model come from the same source. Training it
(quantization-aware training) updates its parameters and, with learnable scales, its
quantizers; :meth:`QuantizedModule.sync_graph` writes both back into the graph before
export or save.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import onnx
import torch
from torch import nn

from acekit.fileio import atomic_torch_save, check_output_path
from acekit.ir.graph import Graph
from acekit.ir.serialize import graph_from_dict, graph_to_dict
from acekit.logging import get_logger
from acekit.runtime.codegen import QUANTIZERS, to_module
from acekit.runtime.torch_onnx import (
    EXPORT_HINT,
    TorchOnnxExportError,
    deployed_forward,
    deployed_symbolic,
)

if TYPE_CHECKING:
    from acekit.quant.rules import QuantRules
    from acekit.settings import Settings

log = get_logger(__name__)

_FORMAT = "acekit.quantized-module/1"


@attrs.frozen
class CompileReport:
    """What ``acekit.compile`` did: the pipeline, node counts, time and the log file.

    Node counts are of the IR graph: ``*_ops`` count operations, ``*_nodes`` also the
    input, parameter, constant and output nodes.
    """

    pipeline: str
    parsed_nodes: int
    parsed_ops: int
    final_nodes: int
    final_ops: int
    removed: tuple[tuple[str, int], ...]
    quantized: int
    skipped: int
    calibration_batches: int
    seconds: float
    log_path: Path | None = None


class CheckpointMismatchError(ValueError):
    """A checkpoint of another model or other settings was given to load_state_dict."""


class QuantizedModuleFileError(ValueError):
    """A file given to :func:`load` is not a saved QuantizedModule."""


class QuantizedModule(nn.Module):
    """A quantized model: ``forward`` simulates the integer model with fake quantization.

    Attributes:
        graph: The quantized graph (specs with scales on every quantized tensor).
        settings: The settings it was compiled with.
        learnable_scales: Whether the quantizers' scales train (QAT).
        rules: The target's quantization rules the simulation follows (bias rounding,
            storage); asked of the settings' target when not given.
    """

    def __init__(
        self,
        graph: Graph,
        settings: Settings,
        *,
        learnable_scales: bool = False,
        rules: QuantRules | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.settings = settings
        self.learnable_scales = learnable_scales
        self.rules = rules if rules is not None else _rules_of(settings)
        self.graph_module = to_module(
            graph, quantize=True, learnable_scales=learnable_scales, rules=self.rules
        )
        #: What compile did (``None`` for a module loaded from a file).
        self.report: CompileReport | None = None
        # A DDP wrapper runs training steps; kept out of the module tree so that
        # state_dict keys stay those of graph_module.
        self.__dict__["_replicated"] = None
        self._told_scales_fixed = False

    def forward(self, *inputs: Any) -> Any:
        """Run the quantized model (fake quantization in float).

        Under ``torch.onnx.export(qm, ...)`` (TorchScript-based) the traced model is the
        deployable one ``qm.export`` writes; see :mod:`acekit.runtime.torch_onnx`.
        """
        if torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export():
            return deployed_symbolic(self._traced_deployable_onnx, inputs)
        if torch.onnx.is_in_onnx_export():
            return deployed_forward(id(self), self._deployable_onnx, self.graph_module, inputs)
        if self.training and torch.is_grad_enabled():
            self._tell_scales_fixed()
            replicated = self.__dict__["_replicated"]
            if replicated is not None:
                return replicated(*inputs)
        return self.graph_module(*inputs)

    def distribute(self) -> QuantizedModule:
        """Train on all ranks: DDP, or FSDP2 sharding with ``use_sharding`` (in place).

        Every rank first takes rank 0's weights and scales. Needs an initialised
        torch.distributed process group.
        """
        from acekit.runtime import distributed

        distributed.check_process_group()
        distributed.broadcast_module(self.graph_module)
        if self.settings.distributed.use_sharding:
            distributed.shard(self.graph_module)
            log.info("Distributed training: parameters sharded across ranks (FSDP2)")
        else:
            self.__dict__["_replicated"] = distributed.replicate(self.graph_module)
            log.info("Distributed training: replicated on every rank (DDP)")
        return self

    def _tell_scales_fixed(self) -> None:
        if self.learnable_scales or self._told_scales_fixed:
            return
        self._told_scales_fixed = True
        log.info(
            "Training a module compiled for post-training quantization: weights train, "
            "quantization scales stay fixed (set quantization_algorithm = QAT to learn them)"
        )

    # -- checkpoints -------------------------------------------------------------------

    def get_extra_state(self) -> Any:
        """What a state_dict must agree on to be loaded here: model and settings.

        While torch's ONNX exporter reads the state_dict (it detaches every entry) this
        is an empty tensor instead.
        """
        if torch.onnx.is_in_onnx_export():
            return torch.empty(0)
        return {"graph": self.graph.name, "settings": self.settings.to_dict()}

    def set_extra_state(self, state: Any) -> None:
        """Nothing to restore: :meth:`load_state_dict` has checked it already."""

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a checkpoint of this model, after checking it all fits.

        Raises :class:`CheckpointMismatchError` naming the mismatch (another model,
        other settings, missing or extra tensors, other shapes) before anything is
        loaded, so a failed load leaves the module as it was.
        """
        problems = self._mismatches(state_dict)
        if problems:
            raise CheckpointMismatchError(
                "the checkpoint does not fit this module, nothing was loaded:\n  "
                + "\n  ".join(problems)
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _mismatches(self, state_dict: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        extra = state_dict.get("_extra_state")
        if isinstance(extra, Mapping):
            if extra.get("graph") != self.graph.name:
                problems.append(f"it is of model {extra.get('graph')!r}, not {self.graph.name!r}")
            theirs, ours = extra.get("settings", {}), self.settings.to_dict()
            for section in sorted(set(theirs) | set(ours)):
                if theirs.get(section) != ours.get(section):
                    problems.append(
                        f"settings [{section}] differ: checkpoint {theirs.get(section)}, "
                        f"module {ours.get(section)}"
                    )
        own = self.state_dict()
        for key in sorted(set(own) - set(state_dict)):
            problems.append(f"missing tensor {key!r}")
        for key in sorted(set(state_dict) - set(own)):
            problems.append(f"unexpected tensor {key!r}")
        for key in sorted(set(own) & set(state_dict)):
            mine, given = own[key], state_dict[key]
            tensors = isinstance(mine, torch.Tensor) and isinstance(given, torch.Tensor)
            if tensors and mine.shape != given.shape:
                problems.append(
                    f"{key!r} has shape {tuple(given.shape)}, expected {tuple(mine.shape)}"
                )
        return problems

    # -- keeping the graph current -----------------------------------------------------

    def sync_graph(self) -> Graph:
        """Copy the module's current weights and scales into :attr:`graph`; return it."""
        from acekit.runtime.distributed import full_tensor

        state = {key: full_tensor(t) for key, t in self.graph_module.state_dict().items()}
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
        atomically. In distributed training call it on every rank: the weights are
        gathered from all of them and rank 0 writes the file.
        """
        from acekit.plugin import get_plugin_manager
        from acekit.quant.deploy import deployment_graph
        from acekit.quant.targets import resolve_target
        from acekit.runtime.distributed import on_rank_zero

        name = target or self.settings.deployment.target_framework
        chosen = resolve_target(name)
        graph = deployment_graph(self.sync_graph())

        def write() -> Path:
            destination = check_output_path(path, overwrite=overwrite)
            options = dict(self.settings.deployment.target_options)
            written = Path(chosen.export(graph, destination, options))
            get_plugin_manager().export_done(written, chosen, graph)
            log.info(f"Saved final model: {written}")
            return written

        return on_rank_zero(write, Path(path))

    def _traced_deployable_onnx(self, opset: int | None) -> onnx.ModelProto:
        """:meth:`_deployable_onnx` while torch.export traces: tensors are not readable.

        The graph is exported as last synced; its weights share storage with the
        module's. Learned scales live only in the module until synced, so QAT modules
        are refused.
        """
        if self.learnable_scales:
            raise TorchOnnxExportError(
                "the torch.export-based exporter cannot read scales learned in QAT; " + EXPORT_HINT
            )
        return self._deployable_onnx(opset, sync=False)

    def _deployable_onnx(self, opset: int | None, *, sync: bool = True) -> onnx.ModelProto:
        """The model the settings' target exports, at ``opset`` when the target has one."""
        from acekit.quant.deploy import deployment_graph
        from acekit.quant.targets import resolve_target

        name = self.settings.deployment.target_framework
        chosen = resolve_target(name)
        options = dict(self.settings.deployment.target_options)
        if opset is not None and "opset" in (getattr(chosen, "options", None) or {}):
            options["opset"] = opset
        graph = deployment_graph(self.sync_graph() if sync else self.graph)
        with tempfile.TemporaryDirectory(prefix="acekit-export-") as scratch:
            written = Path(chosen.export(graph, Path(scratch) / "model.onnx", options))
            try:
                return onnx.load(str(written))
            except Exception:
                raise TorchOnnxExportError(
                    f"target {name!r} does not write ONNX ({written.name}); {EXPORT_HINT}"
                ) from None

    def visualize(self, path: str | os.PathLike[str]) -> Path:
        """Draw the quantized graph (SVG, or .dot without graphviz's ``dot``); return it."""
        from acekit.visualize import render

        return render(self.sync_graph(), path)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Save graph, weights, scales and settings to ``path`` atomically; return it.

        Training checkpoints overwrite by default: a crash mid-write leaves the last
        complete file in place. In distributed training call it on every rank; rank 0
        writes the file.
        """
        from acekit.runtime.distributed import on_rank_zero

        graph = self.sync_graph()

        def write() -> Path:
            destination = check_output_path(path, overwrite=overwrite)
            payload = {
                "format": _FORMAT,
                "graph": graph_to_dict(graph),
                "settings": self.settings.to_dict(),
                "learnable_scales": self.learnable_scales,
                "training": self.training,
            }
            written = atomic_torch_save(payload, destination)
            log.info(f"Saved quantized model: {written}")
            return written

        return on_rank_zero(write, Path(path))


def _rules_of(settings: Settings) -> QuantRules | None:
    """The rules of ``settings``' target; ``None`` (logged) when it cannot give them."""
    from acekit.quant.targets import TargetError, resolve_target, target_rules

    deployment = settings.deployment
    try:
        return target_rules(resolve_target(deployment.target_framework), deployment.target_options)
    except (TargetError, ValueError) as error:
        log.warning(f"Simulating without the target's rules (biases stay float): {error}")
        return None


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
