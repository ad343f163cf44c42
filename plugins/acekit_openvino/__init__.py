"""Built-in target plugin: OpenVINO on x86 CPUs (IR or QDQ ONNX, INT8 through oneDNN).

The plugin lists without the ``openvino`` package installed; exporting to IR or running
a model then says to ``pip install 'acekit[openvino]'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from acekit.target import Registrar, Scalar, TargetBase, TargetOption, hookimpl
from acekit_openvino.rules import NAME, OPTIONS, quantization_rules

if TYPE_CHECKING:
    from acekit.target import Graph, QuantRules
    from acekit_openvino.runner import OpenVINORunner

__all__ = ["OpenVINOTarget", "acekit_register_targets"]


class OpenVINOTarget(TargetBase):
    """Deploys to OpenVINO's CPU plugin, whose low-precision transformations run Q/DQ in INT8."""

    name: ClassVar[str] = NAME
    title: ClassVar[str] = "OpenVINO (CPU)"
    summary: ClassVar[str] = (
        "OpenVINO IR (.xml/.bin, int8 weights) or QDQ ONNX that OpenVINO's CPU plugin runs "
        "in u8 x s8 kernels"
    )
    options: ClassVar[Mapping[str, TargetOption]] = OPTIONS

    def rules(self, options: Mapping[str, Scalar]) -> QuantRules:
        """u8 activations, s8 symmetric per-channel weights; see :mod:`acekit_openvino.rules`."""
        return quantization_rules(options)

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as OpenVINO IR (``.xml`` + ``.bin``) or QDQ ONNX (``.onnx``)."""
        from acekit_openvino.export import export

        return export(graph, path, options)

    def load(self, path: str | os.PathLike[str], **options: Any) -> OpenVINORunner:
        """A callable running the IR or ONNX model at ``path`` in OpenVINO on the CPU."""
        from acekit_openvino.runner import OpenVINORunner as Runner

        return Runner(path, **options)

    def runtime_integer_ops(self, path: str | os.PathLike[str]) -> int:
        """How many compute ops OpenVINO runs on u8/i8 for the model at ``path`` (conformance)."""
        return self.load(path).integer_op_count()


@hookimpl
def acekit_register_targets(registry: Registrar) -> None:
    """Register the OpenVINO target."""
    registry.add_target(OpenVINOTarget())
