r"""The errors the TorchScript parser raises, each naming what the user has to look at.

The unsupported-ops and model-raised errors are every parser's (:mod:`acekit.parsing`),
here also :class:`TorchScriptParseError`\ s.
"""

from __future__ import annotations

import os

from acekit import parsing
from acekit.api import ParseError
from acekit.parsing import UnsupportedOp

__all__ = [
    "ModelRaisedError",
    "TorchScriptFileError",
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


class UnsupportedOpsError(parsing.UnsupportedOpsError, TorchScriptParseError):
    """The model uses ops the IR does not know; ``ops`` lists every one found."""


class ModelRaisedError(parsing.ModelRaisedError, TorchScriptParseError):
    """The model raised an exception while running on the example inputs."""
