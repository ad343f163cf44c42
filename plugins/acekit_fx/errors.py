"""The errors the FX parser raises, each naming what the user has to look at.

``UnsupportedOpsError`` and ``ModelRaisedError`` are every parser's (:mod:`acekit.parsing`).
"""

from __future__ import annotations

from acekit.api import ParseError
from acekit.parsing import ModelRaisedError, UnsupportedOp, UnsupportedOpsError

__all__ = ["ModelRaisedError", "TraceFailedError", "UnsupportedOp", "UnsupportedOpsError"]


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
    ) -> None:
        self.model_name = model_name
        self.module = module
        self.location = location
        self.reason = reason
        self.export_reason = export_reason
        where = f" at {location}" if location else ""
        lines = [
            f"cannot trace model {model_name!r}: module '{module}'{where}: {reason}",
        ]
        if export_reason is not None:
            lines.append(f"torch.export could not capture it either: {export_reason}")
        lines += [
            "What to try:",
            "- data-dependent control flow (`if x.sum() > 0:`) cannot be traced: try "
            "acekit.parse(model, inputs, parser='torchscript'), or rewrite the branch "
            "with torch.where / torch.cond;",
            f"- or mark the module as a leaf so the tracer does not look inside it: "
            f"FxParser(leaf_modules=(type(model.{_attr_path(module)}),)) — the parser then "
            "needs an op for it (an acekit_register_ops plugin).",
        ]
        super().__init__("\n".join(lines))


def _attr_path(subgraph: str) -> str:
    parts = subgraph.split("/")[1:]
    return ".".join(parts) if parts else "<submodule>"
