"""The ``acekit`` command.

Subcommands live in :data:`COMMANDS`; adding one is adding an entry there (a help line,
a function declaring its arguments and a function running it)::

    acekit --version
    acekit plugins [--json]
    acekit demo [--out DIR]
    acekit quantize MODEL --input-shape 1,3,224,224 [--calibration ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import attrs

import acekit
from acekit.logging import LOGGER_NAME

__all__ = ["COMMANDS", "Command", "build_parser", "main", "version_text"]


@attrs.frozen
class Command:
    """A subcommand: its one-line help, how it declares arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: Lowest level of log lines shown on stderr while the command runs.
    log_level: int = logging.WARNING


def version_text() -> str:
    """``acekit 0.1.0 (torch 2.4.0, Python 3.11.7)``."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return (
        f"acekit {acekit.__version__} (torch {torch_version}, Python {platform.python_version()})"
    )


# -- acekit plugins ------------------------------------------------------------------------


def _configure_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the listing as JSON (for scripts)"
    )


#: The order ``acekit plugins`` lists what a plugin registers in.
_DISPLAY_ORDER = ("parsers", "passes", "presets", "quantizers", "targets", "ops")


def _plugins_data() -> dict[str, Any]:
    from acekit.plugin import get_plugin_manager

    manager = get_plugin_manager()
    return {
        "plugins": [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "registers": {
                    kind: sorted(info.registered[kind])
                    for kind in _DISPLAY_ORDER
                    if info.registered.get(kind)
                },
            }
            for info in sorted(manager.plugins, key=lambda p: p.name)
        ],
        "failed": [attrs.asdict(failed) for failed in manager.failed],
        "disabled": [attrs.asdict(disabled) for disabled in manager.disabled],
    }


def _format_plugins(data: dict[str, Any], out: TextIO) -> None:
    from acekit.plugin.registry import describe_source

    header = ("Plugin", "Distribution", "Version", "Registers")
    rows: list[tuple[str, str, str, list[str]]] = []
    for plugin in data["plugins"]:
        registers = [f"{kind}: {', '.join(names)}" for kind, names in plugin["registers"].items()]
        rows.append(
            (
                plugin["name"],
                plugin["distribution"] or "(in-process)",
                plugin["version"] or "-",
                registers or ["nothing"],
            )
        )
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(3)]

    def line(cells: Sequence[str]) -> str:
        return (
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + "  "
        )

    if rows:
        print(line(header[:3]) + header[3], file=out)
        print(line(["-" * w for w in widths]) + "-" * len(header[3]), file=out)
        for name, distribution, plugin_version, registers in rows:
            print(line([name, distribution, plugin_version]) + registers[0], file=out)
            for extra in registers[1:]:
                print(line(["", "", ""]) + extra, file=out)
    else:
        print("No plugins loaded.", file=out)
    if data["failed"]:
        print("\nFailed to load:", file=out)
        for failed in data["failed"]:
            source = describe_source(failed["distribution"], failed["version"])
            print(f"  {failed['name']} ({source}): {failed['reason']}", file=out)
    if data["disabled"]:
        names = ", ".join(disabled["name"] for disabled in data["disabled"])
        print(f"\nDisabled by ACEKIT_DISABLE_PLUGINS: {names}", file=out)


def _run_plugins(args: argparse.Namespace) -> int:
    from acekit.plugin import PluginConflictError

    try:
        data = _plugins_data()
    except PluginConflictError as error:
        print(f"acekit: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _format_plugins(data, sys.stdout)
    return 0


# -- acekit demo ---------------------------------------------------------------------------


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for the files (out/demo)")


def _run_demo(args: argparse.Namespace) -> int:
    from acekit.cli_quantize import QuantizeCommandError, check_out_dir, create_out_dir
    from acekit.demo import run_demo

    try:
        out_dir = create_out_dir(check_out_dir(args.out))
    except QuantizeCommandError as error:
        print(f"acekit demo: error: {error}", file=sys.stderr)
        return 2
    run_demo(out_dir)  # the report is the run log's last block
    return 0


def _configure_quantize(parser: argparse.ArgumentParser) -> None:
    from acekit.cli_quantize import configure

    configure(parser)


def _run_quantize(args: argparse.Namespace) -> int:
    from acekit.api import ParseError
    from acekit.cli_quantize import QuantizeCommandError, run
    from acekit.fileio import OutputPathError
    from acekit.passes.pipeline import PassFailedError
    from acekit.quant.data import CalibrationDataError
    from acekit.quant.layers import UnknownLayerError
    from acekit.quant.targets import TargetError
    from acekit.settings import SettingsError

    # Mistakes in the user's model, data or settings: one line that names them, no
    # traceback. Anything else is a bug and keeps its traceback.
    user_errors = (
        QuantizeCommandError,
        ParseError,
        CalibrationDataError,
        UnknownLayerError,
        TargetError,
        SettingsError,
        OutputPathError,
    )
    try:
        return run(args)
    except user_errors as error:
        print(f"acekit quantize: error: {error}", file=sys.stderr)
        return 2
    except PassFailedError as error:
        # Calibration checks each batch as it reads it: a bad one found there is the
        # user's data, not the pass's bug.
        if not isinstance(error.__cause__, user_errors):
            raise
        print(f"acekit quantize: error: {error.__cause__}", file=sys.stderr)
        return 2


#: The subcommands, by name.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="quantize torchvision resnet18 for ONNX Runtime and report speed and fidelity",
        configure=_configure_demo,
        run=_run_demo,
        log_level=logging.INFO,
    ),
    "quantize": Command(
        help="quantize your model (package.module:factory or TorchScript file) and deploy it",
        configure=_configure_quantize,
        run=_run_quantize,
        log_level=logging.INFO,
    ),
    "plugins": Command(
        help="list the installed plugins and what each registers",
        configure=_configure_plugins,
        run=_run_plugins,
        # Load failures are part of the listing; repeating them as log lines is noise.
        log_level=logging.ERROR,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``acekit`` command, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="acekit",
        description="Parse, clean, quantize and deploy PyTorch models.",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the versions of acekit, torch and Python"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
    return parser


@contextlib.contextmanager
def _cli_logging(level: int) -> Iterator[None]:
    # Outside a run, acekit's loggers fall through to stdlib logging, which prints
    # warnings to stderr so that stdout stays machine-readable (--json). Each command
    # picks how much of that it wants; the previous level is restored for callers of main().
    logger = logging.getLogger(LOGGER_NAME)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``acekit`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    command = COMMANDS[args.command]
    with _cli_logging(command.log_level):
        return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
