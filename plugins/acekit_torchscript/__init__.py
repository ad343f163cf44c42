"""acekit's TorchScript parser plugin: traced or scripted modules and saved files -> Graph.

A plain ``nn.Module`` given to it is scripted first.

Registered through the ``acekit`` entry-point group (``torchscript =
"acekit_torchscript"``). ``docs/torchscript.md`` describes what it reads and how.
"""

from __future__ import annotations

from typing import Any

from acekit.plugin import Registrar, hookimpl
from acekit_torchscript.errors import (
    ModelRaisedError,
    ScriptingFailedError,
    TorchScriptFileError,
    TorchScriptInputError,
    TorchScriptParseError,
    UnsupportedOp,
    UnsupportedOpsError,
)
from acekit_torchscript.loading import is_torchscript_input, load_script_module
from acekit_torchscript.parser import TorchScriptParser, parse_torchscript

__all__ = [
    "ModelRaisedError",
    "ScriptingFailedError",
    "TorchScriptFileError",
    "TorchScriptInputError",
    "TorchScriptParseError",
    "TorchScriptParser",
    "UnsupportedOp",
    "UnsupportedOpsError",
    "acekit_choose_parser",
    "acekit_register_parsers",
    "load_script_module",
    "parse_torchscript",
]


@hookimpl
def acekit_register_parsers(registry: Registrar) -> None:
    """Register the ``torchscript`` parser."""
    registry.add_parser(TorchScriptParser())


@hookimpl
def acekit_choose_parser(model: Any, example_inputs: tuple[Any, ...]) -> str | None:
    """``"torchscript"`` for ScriptModules and file paths; ``None`` for anything else."""
    return TorchScriptParser.name if is_torchscript_input(model) else None
