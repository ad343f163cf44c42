"""acekit's FX parser plugin: PyTorch models -> acekit Graphs through torch.fx.

Registered through the ``acekit`` entry-point group (``fx = "acekit_fx"``). It parses

- ``torch.nn.Module``s, traced with ``torch.fx.symbolic_trace`` (``torch.export`` when
  symbolic tracing cannot capture the model);
- the GraphModule a ``torch.compile`` backend receives (:func:`parse_dynamo_graph`,
  :func:`make_backend`), whose lifted parameters become parameter nodes again;
- ``torch.export.ExportedProgram``s (:func:`parse_exported_program`).

``docs/ir-ops.md`` lists the IR ops each torch op maps to.
"""

from __future__ import annotations

from typing import Any

import torch

from acekit.plugin import Registrar, hookimpl
from acekit_fx.dynamo import make_backend, parse_dynamo_graph, user_input_positions
from acekit_fx.errors import TraceFailedError, UnsupportedOp, UnsupportedOpsError
from acekit_fx.export import parse_exported_program
from acekit_fx.parser import FxParser

__all__ = [
    "FxParser",
    "TraceFailedError",
    "UnsupportedOp",
    "UnsupportedOpsError",
    "acekit_choose_parser",
    "acekit_register_parsers",
    "make_backend",
    "parse_dynamo_graph",
    "parse_exported_program",
    "user_input_positions",
]


@hookimpl
def acekit_register_parsers(registry: Registrar) -> None:
    """Register the ``fx`` parser."""
    registry.add_parser(FxParser())


@hookimpl
def acekit_choose_parser(model: Any, example_inputs: tuple[Any, ...]) -> str | None:
    """``"fx"`` for modules (not TorchScript ones), dynamo graphs and exported programs."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    if isinstance(model, torch.nn.Module | torch.export.ExportedProgram):
        return "fx"
    return None
