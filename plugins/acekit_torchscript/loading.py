"""Getting a ScriptModule from what the user passed: a module or a saved file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from acekit_torchscript.errors import TorchScriptFileError


def is_torchscript_input(model: Any) -> bool:
    """Whether ``model`` is something this parser reads: a ScriptModule or a file path."""
    return isinstance(model, torch.jit.ScriptModule | str | os.PathLike)


def load_script_module(model: Any) -> torch.jit.ScriptModule:
    """``model`` itself when it is a ScriptModule; the module saved at ``model`` for a path.

    Raises :class:`TorchScriptFileError` naming the file when it is missing, is not a
    TorchScript archive or is truncated, and :class:`TypeError` for other objects.
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if isinstance(model, str | os.PathLike):
        return _load_file(Path(model))
    if isinstance(model, torch.nn.Module):
        raise TypeError(
            f"the torchscript parser reads ScriptModules and saved TorchScript files, not a "
            f"plain {type(model).__name__}: pass torch.jit.trace(model, example_inputs) or "
            "torch.jit.script(model), or use the fx parser"
        )
    raise TypeError(
        "the torchscript parser reads a torch.jit.ScriptModule or the path of a saved one, "
        f"got {type(model).__name__}"
    )


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
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TorchScriptFileError(
            path, f"torch.jit.load failed: {type(error).__name__}: {first_line}"
        ) from error
    if not isinstance(module, torch.jit.ScriptModule):
        raise TorchScriptFileError(path, f"it holds a {type(module).__name__}, not a module")
    return module
