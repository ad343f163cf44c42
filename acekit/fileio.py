"""Writing the user's files safely: checked before work, complete or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class OutputPathError(OSError):
    """An output path exists (without ``overwrite``) or cannot be written."""


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """``path`` as a Path after checking that a file can be written there.

    Raises :class:`OutputPathError` when the file exists and ``overwrite`` is false, when
    it is a directory, or when its folder does not exist or is not writable: before any
    work is spent on producing the file.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputPathError(f"{target} is a directory; give a file path")
    if target.exists() and not overwrite:
        raise OutputPathError(f"{target} exists; pass overwrite=True to replace it")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"cannot write {target}: folder {folder} is not writable")
    return target


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    A crash or an error in ``write`` leaves ``path`` as it was (absent, or the last
    complete file), never half-written.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(payload, path)`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))
