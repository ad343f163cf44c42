"""The errors the FX parser raises, each naming what the user has to look at."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs

from acekit.api import ParseError


@attrs.frozen
class UnsupportedOp:
    """One FX node the IR cannot express, with where it comes from."""

    #: The op as the user wrote it: ``torch.fft.fft``, ``Tensor.scatter_``, ``nn.LSTM``.
    op: str
    #: The FX node's name.
    node: str
    #: The subgraph path of the module the node belongs to.
    subgraph: str
    #: ``file:line`` of the user's source, when known.
    location: str | None
    #: Why it cannot be converted, when more is known than "no such IR op".
    reason: str = ""

    def describe(self) -> str:
        """One line: op, node, module path, source line and reason."""
        where = f" at {self.location}" if self.location else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.op} (node '{self.node}', in '{self.subgraph}'{where}){why}"


class UnsupportedOpsError(ParseError):
    """The model uses ops the IR does not know; ``ops`` lists every one found in one go."""

    def __init__(self, model_name: str, ops: Sequence[UnsupportedOp]) -> None:
        self.model_name = model_name
        self.ops = tuple(ops)
        counts = Counter(op.op for op in self.ops)
        summary = ", ".join(
            f"{name} ({count} nodes)" if count > 1 else name for name, count in counts.items()
        )
        lines = [f"- {op.describe()}" for op in self.ops]
        super().__init__(
            f"model {model_name!r} uses {len(counts)} op(s) the IR does not support: "
            f"{summary}\n" + "\n".join(lines)
        )

    @property
    def op_names(self) -> list[str]:
        """The distinct unsupported ops, in the order first met."""
        return list(dict.fromkeys(op.op for op in self.ops))


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
