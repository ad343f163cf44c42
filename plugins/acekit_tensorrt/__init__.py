"""Built-in target plugin: NVIDIA TensorRT (explicit quantization from QDQ ONNX).

Exporting needs only acekit; building and running an engine needs an NVIDIA GPU and
``pip install 'acekit[tensorrt]'`` (the target lists without them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acekit.target import Registrar, Scalar, TargetBase, TargetOption, hookimpl
from acekit_tensorrt import rules as trt_rules

if TYPE_CHECKING:
    from acekit.target import Graph, QuantRules

__all__ = ["TensorRTTarget", "acekit_register_targets"]


class TensorRTTarget(TargetBase):
    """Deploys to TensorRT: QDQ ONNX placed the way TensorRT's explicit quantization fuses."""

    name: ClassVar[str] = trt_rules.NAME
    title: ClassVar[str] = "TensorRT (NVIDIA)"
    summary: ClassVar[str] = (
        "ONNX model with symmetric INT8 (or FP8, or INT4 weight-only) Q/DQ on the inputs "
        "TensorRT fuses; build the engine with trtexec or the tensorrt package"
    )
    options: ClassVar[Mapping[str, TargetOption]] = trt_rules.OPTIONS

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Scalar]:
        """``options`` checked (including the opset each mode needs), defaults filled in."""
        return trt_rules.validate_options(options)

    def rules(self, options: Mapping[str, Scalar]) -> QuantRules:
        """Signed symmetric activations and weights; see :mod:`acekit_tensorrt.rules`."""
        return trt_rules.quantization_rules(options)

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as QDQ ONNX for TensorRT's explicit quantization."""
        from acekit_tensorrt.export import export_onnx

        return export_onnx(graph, path, options)

    def load(self, path: str | os.PathLike[str], **options: Any) -> Any:
        """A callable running the exported model (TensorRT on a GPU, else ONNX Runtime)."""
        from acekit_tensorrt.runner import load

        return load(path, **options)


@hookimpl
def acekit_register_targets(registry: Registrar) -> None:
    """Register the TensorRT target."""
    registry.add_target(TensorRTTarget())
