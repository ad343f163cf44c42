"""The base of acekit's own errors, and the error for files acekit refuses to read."""

from __future__ import annotations

import os


class AcekitError(Exception):
    """Base of the errors acekit raises on purpose, each with a message saying what to do."""


class CorruptFileError(AcekitError, ValueError):
    """A file acekit was asked to read is damaged, not acekit's, or crafted.

    Raised before anything is built from the file, so nothing in it ran. The message
    names the file and the first bad field (``graph.nodes[3].attrs``); subclasses say
    which writer makes a good file.

    Attributes:
        path: The file, or ``None`` for data that did not come from a file.
        field: Where in the file's data the problem is, or ``None`` for the whole file.
        problem: What is wrong there.
    """

    #: What the user can do about it; subclasses name the function that writes the file.
    remedy = "the file is damaged or was not written by acekit"

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.problem = problem
        where = [part for part in (self.path, field) if part]
        prefix = ": ".join(where) + ": " if where else ""
        super().__init__(f"{prefix}{problem} ({self.remedy})")
