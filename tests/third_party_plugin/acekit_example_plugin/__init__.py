"""An example acekit plugin: a pass, a pipeline preset and a deployment target.

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

from acekit.ir import Graph
from acekit.passes import Pass, PassResult
from acekit.plugin import Registrar, hookimpl


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


class ExampleTarget:
    """A target that writes the graph's text form: enough to show the plugin surface."""

    name: ClassVar[str] = "example-target"
    title: ClassVar[str] = "Example Target"
    summary: ClassVar[str] = "writes the graph as text (an example, not a runtime)"

    def export(
        self, graph: Graph, path: str | os.PathLike[str], options: Mapping[str, Any]
    ) -> Path:
        """Write ``graph``'s text form to ``path``."""
        target = Path(path)
        target.write_text(str(graph) + "\n", encoding="utf-8")
        return target


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
