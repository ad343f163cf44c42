r"""The errors the TorchScript parser raises, each naming what the user has to look at.

The unsupported-ops and model-raised errors are every parser's (:mod:`acekit.parsing`),
here also :class:`TorchScriptParseError`\ s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from acekit import parsing
from acekit.api import ParseError
from acekit.parsing import UnsupportedOp

__all__ = [
    "ModelRaisedError",
    "ScriptingFailedError",
    "TorchScriptFileError",
    "TorchScriptInputError",
    "TorchScriptParseError",
    "UnsupportedOp",
    "UnsupportedOpsError",
]


class TorchScriptParseError(ParseError):
    """Base class of the errors raised while parsing a TorchScript model."""


class TorchScriptFileError(TorchScriptParseError):
    """A path that does not hold a loadable TorchScript archive (missing, not one, truncated)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load TorchScript file '{self.path}': {reason}")


class TorchScriptInputError(TorchScriptParseError, TypeError):
    """The model is neither a module nor the path of a TorchScript file."""


class ScriptingFailedError(TorchScriptParseError):
    """A plain ``nn.Module`` given to the torchscript parser that ``torch.jit.script`` rejects."""

    def __init__(self, model_name: str, reason: str) -> None:
        self.model_name = model_name
        self.reason = reason
        super().__init__(
            f"torch.jit.script cannot compile model {model_name!r} ({reason}); pass "
            "torch.jit.trace(model, example_inputs) to the torchscript parser instead (it "
            "records the path the example inputs take), or parse with parser='fx'"
        )


class UnsupportedOpsError(parsing.UnsupportedOpsError, TorchScriptParseError):
    """The model uses ops the IR does not know; ``ops`` lists every one found."""

    def __init__(self, model_name: str, ops: Sequence[UnsupportedOp]) -> None:
        super().__init__(
            model_name,
            ops,
            [
                "try the fx parser on the Python model, which reads torch's own calls: "
                "acekit.parse(model, example_inputs, parser='fx')"
            ],
        )


class ModelRaisedError(parsing.ModelRaisedError, TorchScriptParseError):
    """The model raised an exception while running on the example inputs."""
