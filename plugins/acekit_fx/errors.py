"""The errors the FX parser raises, each naming what the user has to look at.

``UnsupportedOpsError`` and ``ModelRaisedError`` are every parser's (:mod:`acekit.parsing`).
"""

from __future__ import annotations

from collections.abc import Sequence

from acekit.api import ParseError
from acekit.parsing import ModelRaisedError, UnsupportedOp, UnsupportedOpsError

__all__ = [
    "ModelRaisedError",
    "TraceFailedError",
    "UnsupportedOp",
    "UnsupportedOpsError",
    "fx_remedies",
]


class TraceFailedError(ParseError):
    """Neither torch.fx.symbolic_trace nor torch.export could capture the model.

    ``module`` is the subgraph path of the module being traced when it failed and
    ``location`` the user's ``file:line``; the message says what to try instead.
    """

    def __init__(
        self,
        model_name: str,
        module: str,
        location: str | None,
        reason: str,
        export_reason: str | None = None,
        traceable_parts: Sequence[str] = (),
    ) -> None:
        self.model_name = model_name
        self.module = module
        self.location = location
        self.reason = reason
        self.export_reason = export_reason
        self.traceable_parts = tuple(traceable_parts)
        where = f" at {location}" if location else ""
        lines = [
            f"cannot trace model {model_name!r}: module '{module}'{where}: {reason}",
        ]
        if export_reason is not None:
            lines.append(f"torch.export could not capture it either: {export_reason}")
        lines.append("What to try:")
        if self.traceable_parts:
            parts = ", ".join(f"model.{part}" for part in self.traceable_parts)
            first = self.traceable_parts[0]
            lines.append(
                f"- these parts of {model_name!r} trace on their own: {parts}. Quantize them "
                "and keep the rest (pre- and post-processing such as NMS) in float: "
                f"model.{first} = acekit.compile(model.{first}, example_inputs=<what "
                f"model.{first} receives>, ...) (docs/quantization.md, 'Models that trace "
                "only in part')"
            )
        lines += [
            "- control flow on tensor values (`if x.sum() > 0:`) gives no single graph: "
            "compute both branches and pick with torch.where",
            "- if every input you deploy takes the branch the example inputs take, record "
            "that branch: acekit.parse(torch.jit.trace(model, example_inputs), "
            "example_inputs, parser='torchscript') (acekit.compile takes the traced module "
            "too)",
        ]
        if "/" in module:
            lines.append(
                "- if only shapes steer it, mark the module as a leaf so that torch.export "
                "captures it alone: parse with parser=acekit_fx."
                f"FxParser(leaf_modules=(type(model.{_attr_path(module)}),))"
            )
        super().__init__("\n".join(lines))


def fx_remedies(ops: Sequence[UnsupportedOp]) -> list[str]:
    """What the FX parser can do differently about ``ops`` (the shared remedies follow)."""
    remedies = []
    inner = sorted({op.subgraph for op in ops if "/" in op.subgraph})
    if inner:
        leaves = ", ".join(f"type(model.{_attr_path(path)})" for path in inner[:3])
        remedies.append(
            "keep the module that uses it as a leaf, parser=acekit_fx."
            f"FxParser(leaf_modules=({leaves},)): torch.export then captures it, and its ATen "
            "ops may be ones the IR has"
        )
    remedies.append(
        "try the torchscript parser, which reads ATen ops: acekit.parse(torch.jit.trace(model, "
        "example_inputs), example_inputs, parser='torchscript')"
    )
    return remedies


def _attr_path(subgraph: str) -> str:
    parts = subgraph.split("/")[1:]
    return ".".join(parts) if parts else "<submodule>"
