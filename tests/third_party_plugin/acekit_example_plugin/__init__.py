"""An example acekit plugin: an op, a pass, a pipeline preset and a deployment target.

acekit finds this module through the ``acekit`` entry point declared in this
distribution's pyproject.toml and calls the ``@hookimpl`` functions below once, when it
first loads plugins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from acekit.ir import Graph
from acekit.passes import Pass, PassResult
from acekit.target import (
    Granularity,
    OpRule,
    QuantRules,
    QuantSpec,
    Registrar,
    Scalar,
    TargetBase,
    TargetOption,
    export_qdq_onnx,
    hookimpl,
)
from acekit_example_plugin.ops import HARD_SWISH_CLAMP


@attrs.frozen
class RemoveIdentity(Pass):
    """Remove ``identity`` nodes, their readers reading the node's input instead.

    With ``include_contiguous=true`` also remove ``contiguous`` nodes, which the IR
    treats as identities since it does not model memory layout.
    """

    name: ClassVar[str] = "example-remove-identity"
    summary: ClassVar[str] = "remove identity (and optionally contiguous) nodes"

    include_contiguous: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    def run(self, graph: Graph) -> PassResult:
        """Bypass and erase every matching node; ``stats["removed"]`` counts them."""
        ops = {"identity", "contiguous"} if self.include_contiguous else {"identity"}
        removed = 0
        for node in graph.nodes:
            if node.op in ops:
                graph.replace_all_uses(node.output, node.inputs[0])
                graph.erase(node)
                removed += 1
        return PassResult(graph, modified=removed > 0, stats={"removed": removed})


class ExampleTarget(TargetBase):
    """A target for an NPU-like runtime: s8 symmetric activations, QDQ ONNX files.

    Everything it needs comes from :mod:`acekit.target`: ``TargetBase`` checks the
    options against the schema (when settings are built or loaded) and hands the
    checked options to ``rules``, the shared lowering writes the ONNX file, and ``load``
    runs it (here with ONNX Runtime, standing in for the device's own runtime).
    """

    name: ClassVar[str] = "example-target"
    title: ClassVar[str] = "Example Target"
    summary: ClassVar[str] = "s8 x s8 convs and linears as QDQ ONNX (an example target)"
    options: ClassVar[Mapping[str, TargetOption]] = {
        "opset": TargetOption(
            name="opset",
            help="ONNX opset of the export, 13..20 (default 17)",
            default=17,
            kind=int,
            minimum=13,
            maximum=20,
        ),
        "weight_bits": TargetOption(
            name="weight_bits",
            help="weight width, 8 (default) or 4 (stored in int8 containers)",
            default=8,
            kind=int,
            choices=(4, 8),
        ),
    }

    def rules(self, options: Mapping[str, Scalar]) -> QuantRules:
        """s8 symmetric activations and weights; ReLU absorbed, pooling passed through."""
        conv = OpRule(activations=(0,), weight=1, weight_axis=0, output=True)
        return QuantRules(
            activation=QuantSpec(bits=8, signed=True, symmetric=True),
            weight=QuantSpec(
                bits=int(options["weight_bits"]),
                signed=True,
                symmetric=True,
                granularity=Granularity.PER_CHANNEL,
                axis=0,
            ),
            ops={
                "conv2d": conv,
                "linear": OpRule(activations=(0,), weight=1, weight_axis=0),
            },
            weight_bits=(4, 8),
            storage_bits=(8,),
            absorbed=frozenset({"relu"}),
            passthrough=frozenset({"max_pool2d", "flatten"}),
            reason="s8 activations x s8 weights (the NPU's only mode), float biases",
        )

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph`` as QDQ ONNX (checked, atomic) with acekit's shared lowering."""
        checked = self.validate_options(options)
        return export_qdq_onnx(graph, path, self.rules(checked), opset=int(checked["opset"]))

    def load(self, path: str | os.PathLike[str]) -> Any:
        """A callable running the exported file: tensors in, list of tensors out."""
        import onnxruntime

        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
            feed = {n: x.detach().cpu().numpy() for n, x in zip(names, inputs, strict=True)}
            return [torch.from_numpy(out) for out in session.run(None, feed)]

        return run


@hookimpl
def acekit_register_ops(registry: Registrar) -> None:
    """Register the op (see ops.py); the parsers, the simulation and exports find it."""
    registry.add_op(HARD_SWISH_CLAMP)


@hookimpl
def acekit_register_passes(registry: Registrar) -> None:
    """Register the pass; pipelines then name it ``example-remove-identity``."""
    registry.add_pass(RemoveIdentity)


@hookimpl
def acekit_register_pipeline_presets(registry: Registrar) -> None:
    """Register a preset, usable in spec strings like a pass."""
    registry.add_preset(
        "example-cleanup",
        "example-remove-identity{include_contiguous=true}",
        summary="remove identity and contiguous nodes",
    )


@hookimpl
def acekit_register_targets(registry: Registrar) -> None:
    """Register the target; ``DeploymentSettings(target_framework="example-target")``."""
    registry.add_target(ExampleTarget())
