"""The errors the TorchScript parser raises, each naming what the user has to look at."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import attrs

from acekit.api import ParseError


class TorchScriptParseError(ParseError):
    """Base class of the errors raised while parsing a TorchScript model."""


class TorchScriptFileError(TorchScriptParseError):
    """A path that does not hold a loadable TorchScript archive (missing, not one, truncated)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load TorchScript file '{self.path}': {reason}")


@attrs.frozen
class UnsupportedOp:
    """One TorchScript node the IR cannot express, with where it comes from."""

    #: The TorchScript op, e.g. ``aten::grid_sampler``.
    kind: str
    #: The node as TorchScript names it: its first result (``%x.3``) or its op.
    node: str
    #: The subgraph path of the module the node belongs to.
    subgraph: str
    #: ``file:line`` of the source that produced the node, when known.
    location: str | None
    #: Why it cannot be converted, when more is known than "no such IR op".
    reason: str = ""

    def describe(self) -> str:
        """One line: op, node, module path, source line and reason."""
        where = f" at {self.location}" if self.location else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.kind} (node {self.node}, in '{self.subgraph}'{where}){why}"


class UnsupportedOpsError(TorchScriptParseError):
    """The model uses ops the IR does not know; ``ops`` lists every one found."""

    def __init__(self, model_name: str, ops: Sequence[UnsupportedOp]) -> None:
        self.model_name = model_name
        self.ops = tuple(ops)
        counts = Counter(op.kind for op in self.ops)
        summary = ", ".join(
            f"{kind} ({count} nodes)" if count > 1 else kind for kind, count in counts.items()
        )
        lines = [f"- {op.describe()}" for op in self.ops]
        super().__init__(
            f"model {model_name!r} uses {len(counts)} op(s) the IR does not support: "
            f"{summary}\n" + "\n".join(lines)
        )

    @property
    def kinds(self) -> list[str]:
        """The distinct unsupported ops, in the order first met."""
        return list(dict.fromkeys(op.kind for op in self.ops))


class ModelRaisedError(TorchScriptParseError):
    """The model raised an exception while running on the example inputs."""
