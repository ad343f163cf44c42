"""Getting a ScriptModule from what the user passed: a module or a saved file."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from acekit_torchscript.errors import (
    ScriptingFailedError,
    TorchScriptFileError,
    TorchScriptInputError,
)


def is_torchscript_input(model: Any) -> bool:
    """Whether ``model`` is something this parser reads: a ScriptModule or a file path."""
    return isinstance(model, torch.jit.ScriptModule | str | os.PathLike)


def load_script_module(model: Any) -> torch.jit.ScriptModule:
    """``model`` itself when it is a ScriptModule; the module saved at ``model`` for a path;
    ``torch.jit.script(model)`` for a plain ``nn.Module``.

    A plain module is scripted rather than traced: scripting keeps its control flow, so
    a branch on tensor data is reported instead of being fixed to the example's path.

    Raises :class:`TorchScriptFileError` naming the file when it is missing, is not a
    TorchScript archive or is truncated, :class:`ScriptingFailedError` when a plain
    module cannot be scripted, and :class:`TorchScriptInputError` for other objects.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if isinstance(model, str | os.PathLike):
        return _load_file(Path(model))
    if isinstance(model, torch.nn.Module):
        return _script(model)
    raise TorchScriptInputError(
        "the torchscript parser reads a torch.nn.Module, a torch.jit.ScriptModule or the path "
        f"of a saved one, got {type(model).__name__}"
    )


def _script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    name = type(model).__name__
    try:
        with warnings.catch_warnings():
            # The user chose this parser; torch's deprecation notice is not for them.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            scripted = torch.jit.script(model)
    except Exception as error:
        raise ScriptingFailedError(name, _first_line(error)) from error
    assert isinstance(scripted, torch.jit.ScriptModule)
    return scripted


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _load_file(path: Path) -> torch.jit.ScriptModule:
    if not path.exists():
        raise TorchScriptFileError(path, "no such file")
    if path.is_dir():
        raise TorchScriptFileError(path, "it is a directory")
    # torch.jit.load's own messages for a bad archive name no file; checking the zip
    # first gives the user a reason they can act on.
    if not zipfile.is_zipfile(path):
        raise TorchScriptFileError(
            path,
            "not a TorchScript archive (a file written by torch.jit.save is a zip archive;"
            " this one is not, or it is truncated)",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise TorchScriptFileError(path, f"the archive is damaged or truncated ({error})") from None
    if not any("/code/" in name or name.endswith("/constants.pkl") for name in names):
        raise TorchScriptFileError(
            path,
            "the zip archive holds no TorchScript code (is it a torch.save checkpoint? load it"
            " with torch.load and pass the module instead)",
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise TorchScriptFileError(path, f"torch.jit.load failed: {_first_line(error)}") from error
    if not isinstance(module, torch.jit.ScriptModule):
        raise TorchScriptFileError(path, f"it holds a {type(module).__name__}, not a module")
    return module
