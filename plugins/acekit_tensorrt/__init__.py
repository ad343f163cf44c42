"""Built-in target plugin: NVIDIA TensorRT (explicit quantization from QDQ ONNX)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acekit.plugin import Registrar, hookimpl

if TYPE_CHECKING:
    from acekit.ir.graph import Graph
    from acekit.quant.rules import QuantRules

__all__ = ["TensorRTTarget", "acekit_register_targets"]


class TensorRTTarget:
    """Deploys to TensorRT: QDQ ONNX placed the way TensorRT's explicit quantization fuses."""

    name: ClassVar[str] = "tensorrt"
    title: ClassVar[str] = "TensorRT (NVIDIA)"
    summary: ClassVar[str] = (
        "ONNX model with symmetric INT8 (or FP8, or INT4 weight-only) Q/DQ on the inputs "
        "TensorRT fuses; build the engine with trtexec or the tensorrt package"
    )

    def quantization_rules(self, options: Mapping[str, Any]) -> QuantRules:
        """Signed symmetric activations and weights; see :mod:`acekit_tensorrt.rules`."""
        from acekit_tensorrt.rules import quantization_rules

        return quantization_rules(options)

    def load(self, path: str | os.PathLike[str], **options: Any) -> Any:
        """A callable running the exported ONNX model (TensorRT on a GPU, else ONNX Runtime)."""
        from acekit_tensorrt.runner import load

        return load(path, **options)

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as QDQ ONNX for TensorRT's explicit quantization."""
        from acekit_tensorrt.export import export_onnx

        return export_onnx(graph, path, options)


@hookimpl
def acekit_register_targets(registry: Registrar) -> None:
    """Register the TensorRT target."""
    registry.add_target(TensorRTTarget())
