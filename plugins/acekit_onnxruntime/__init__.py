"""Built-in target plugin: ONNX Runtime on CPU.

Registered through the ``acekit`` entry-point group (``onnxruntime =
"acekit_onnxruntime"`` in acekit's pyproject), exactly like a third-party plugin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acekit.target import Registrar, Scalar, TargetBase, TargetOption, hookimpl
from acekit_onnxruntime.rules import OPTIONS, quantization_rules

if TYPE_CHECKING:
    from acekit.target import Graph, QuantRules
    from acekit_onnxruntime.session import OrtRunner

__all__ = ["OnnxRuntimeTarget", "acekit_register_targets"]


class OnnxRuntimeTarget(TargetBase):
    """Deploys to ONNX Runtime's CPU execution provider, whose integer kernels run Q/DQ pairs."""

    name: ClassVar[str] = "onnxruntime"
    title: ClassVar[str] = "ONNX Runtime (CPU)"
    summary: ClassVar[str] = (
        "ONNX model with QuantizeLinear/DequantizeLinear pairs that ONNX Runtime's CPU "
        "provider fuses into integer kernels"
    )
    options: ClassVar[Mapping[str, TargetOption]] = OPTIONS

    def rules(self, options: Mapping[str, Scalar]) -> QuantRules:
        """u8 activations, s8 per-channel weights; see :mod:`acekit_onnxruntime.rules`."""
        return quantization_rules(options)

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as QDQ ONNX that ORT's CPU provider runs in integer kernels."""
        from acekit_onnxruntime.export import export_onnx

        return export_onnx(graph, path, options)

    def load(self, path: str | os.PathLike[str], **options: Any) -> OrtRunner:
        """A callable running the model at ``path`` in ORT (tensors in, tensors out)."""
        from acekit_onnxruntime.session import OrtRunner as Runner

        return Runner(path, **options)

    def runtime_integer_ops(self, path: str | os.PathLike[str]) -> int:
        """How many ops of the exported model ORT runs in integer kernels (conformance)."""
        from acekit_onnxruntime.session import integer_op_count

        return integer_op_count(path)


@hookimpl
def acekit_register_targets(registry: Registrar) -> None:
    """Register the ONNX Runtime target."""
    registry.add_target(OnnxRuntimeTarget())
