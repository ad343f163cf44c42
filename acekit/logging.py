"""acekit's logging: structlog loggers for library code, and the run log.

Library modules log through :func:`get_logger`::

    from acekit.logging import get_logger

    log = get_logger(__name__)
    log.info("Removed 37 Dropout layers", pass_name="remove-dropout", removed=37)

The event is a sentence for people; keyword values are structure for machines (they
appear in JSON output, not in human lines).

Nothing is configured at import, and structlog's global configuration is never
touched: the user's program may use structlog its own way.  :func:`get_logger` builds
loggers with acekit's own processor chain that hands each event to the stdlib logger
``acekit.<module>``.  Outside a run those records follow the user's ``logging`` setup
(by default only WARNING and above reach stderr).  :func:`start_run_log` (or
:func:`run_logging`) attaches the run's console and file handlers to the ``acekit``
logger and takes them away again on :meth:`RunLog.close`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import importlib.metadata
import json as _json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO, TypeVar

import structlog
import structlog.contextvars
import structlog.stdlib
from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "LOGGER_NAME",
    "PROGRESS_BAR_FORMAT",
    "RunLog",
    "current_run",
    "get_logger",
    "progress",
    "run_logging",
    "start_run_log",
]

_T = TypeVar("_T")

#: The stdlib logger every acekit logger lives under; runs attach their handlers here.
LOGGER_NAME = "acekit"
#: tqdm format of progress bars, as in the seed log
#: (``Calibrating Model: 100%|##########| 20/20 [00:06<00:00,  3.31it/s]``).
PROGRESS_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"
_PROGRESS_ASCII = " #"

# Attributes set on stdlib LogRecords, namespaced so they never collide with `extra`s
# from other code.
_EVENT_ATTR = "acekit_event"
_FILE_ONLY_ATTR = "acekit_file_only"

# Progress bars currently drawn; console lines written meanwhile must not tear them.
_bars_on_screen = 0

JsonMode = bool | Literal["file", "console", "both"]


# --------------------------------------------------------------------------- loggers


def _to_stdlib(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> Any:
    """Final processor: the event becomes the record's message, the rest rides along."""
    kwargs: dict[str, Any] = {}
    for key in ("exc_info", "stack_info"):
        if key in event_dict:
            kwargs[key] = event_dict.pop(key)
    event = event_dict.pop("event", "")
    # The message is passed without args, so '%' in it is never interpreted by stdlib.
    kwargs["extra"] = {_EVENT_ATTR: event_dict}
    return (event if isinstance(event, str) else str(event),), kwargs


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.PositionalArgumentsFormatter(),
    _to_stdlib,
]


def _stdlib_name(name: str) -> str:
    # Plugin packages (acekit_fx, ...) live outside the `acekit.` namespace; nesting
    # them under it lets one handler on "acekit" see every acekit event.
    if name == LOGGER_NAME or name.startswith(LOGGER_NAME + "."):
        return name
    return f"{LOGGER_NAME}.{name}"


def get_logger(name: str = LOGGER_NAME, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger for acekit code (library or plugin), named ``name``.

    Pass ``__name__``.  The logger writes to the stdlib logger ``acekit.<name>`` (or
    ``name`` itself when it is already under ``acekit``), so a run's handlers receive
    its events.  ``initial_values`` are bound to every event.  Creating a logger
    configures nothing, so module-level ``log = get_logger(__name__)`` is fine.
    """
    return structlog.stdlib.BoundLogger(
        logging.getLogger(_stdlib_name(name)),
        processors=_PROCESSORS,
        context=dict(initial_values),
    )


# --------------------------------------------------------------------------- formatters


def _event_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, _EVENT_ATTR, None)
    return dict(fields) if isinstance(fields, dict) else {}


class _HumanFormatter(logging.Formatter):
    """``[YYYY-MM-DD HH:MM:SS] message``: the seed log's line, key/values left out."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname}: {message}"
        first, newline, rest = message.partition("\n")
        # A block that starts on the next line (the settings) leaves "[stamp]" alone,
        # without a trailing space.
        text = f"[{stamp}] {first}".rstrip() + newline + rest
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, event, then the key/values."""

    def format(self, record: logging.LogRecord) -> str:
        created = _dt.datetime.fromtimestamp(record.created).astimezone()
        payload: dict[str, Any] = {
            "timestamp": created.isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _event_fields(record).items():
            payload.setdefault(key, value)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(payload, default=repr, ensure_ascii=False)


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, _FILE_ONLY_ATTR, False)


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """A stream handler that lifts an active progress bar out of the way of its lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if _bars_on_screen:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=self.stream):
                super().emit(record)
        else:
            super().emit(record)


# --------------------------------------------------------------------------- runs


class _Router(logging.Handler):
    """The one handler on the ``acekit`` logger while runs are open.

    Records are emitted in the thread (and context) that logs them, so the run current
    in that context receives them: two runs in two threads each get their own lines.
    A record logged outside any run goes where it would go without acekit's handler.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        logger = logging.getLogger(LOGGER_NAME)
        self.saved_level = logger.level
        self.saved_propagate = logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        run = current_run()
        if run is not None:
            for handler in run._handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        elif self.saved_propagate:
            self._outside_run(record)

    def _outside_run(self, record: logging.LogRecord) -> None:
        # What stdlib would do with the acekit logger untouched: its own level (or the
        # parent's), then the ancestors' handlers, then the last resort.
        parent = logging.getLogger(LOGGER_NAME).parent
        level = self.saved_level or (parent.getEffectiveLevel() if parent else logging.WARNING)
        if record.levelno < level:
            return
        found = 0
        logger = parent
        while logger is not None:
            for handler in logger.handlers:
                found += 1
                if record.levelno >= handler.level:
                    handler.handle(record)
            logger = logger.parent if logger.propagate else None
        last = logging.lastResort
        if not found and last is not None and record.levelno >= last.level:
            last.handle(record)

    # The router's own lock would serialise every run's output behind one lock.
    def handle(self, record: logging.LogRecord) -> bool:
        """Route ``record`` without taking this handler's lock (its targets lock)."""
        if self.filter(record):
            self.emit(record)
        return True


_lock = threading.RLock()
#: Every open run of the process, in the order they started.
_open: list[RunLog] = []
_router: _Router | None = None
#: The run of the current context (thread, task): what its log lines go to.
_CURRENT: contextvars.ContextVar[RunLog | None] = contextvars.ContextVar(
    "acekit_run_log", default=None
)


def _install(run: RunLog) -> None:
    """Register ``run`` (under ``_lock``) and route the ``acekit`` logger to the runs."""
    global _router
    logger = logging.getLogger(LOGGER_NAME)
    if _router is None:
        _router = _Router()
        logger.addHandler(_router)
        # The runs' handlers own acekit's output; propagating too would print every
        # line twice in programs that configured the root logger.
        logger.propagate = False
    _open.append(run)
    _set_level(logger)


def _uninstall(run: RunLog) -> None:
    """Forget ``run`` (under ``_lock``); the last run out restores the logger."""
    global _router
    if run in _open:
        _open.remove(run)
    logger = logging.getLogger(LOGGER_NAME)
    if _open or _router is None:
        _set_level(logger)
        return
    logger.removeHandler(_router)
    logger.setLevel(_router.saved_level)
    logger.propagate = _router.saved_propagate
    _router = None


def _set_level(logger: logging.Logger) -> None:
    if _router is None:
        return
    levels = [h.level for run in _open for h in run._handlers]
    logger.setLevel(min(levels, default=_router.saved_level or logging.WARNING))


class RunLog:
    """The logging of one acekit run: a console handler and a log file.

    Created by :func:`start_run_log`; ends with :meth:`close` (or the ``with`` block).
    A run belongs to the context (thread, asyncio task) that started it: only lines
    logged there reach its handlers.

    Attributes:
        path: The run's log file (``None`` when the run writes no file).
        console_stream: Where console lines go (``None`` without a console).
        parent: The run that was current where this one started (it resumes after).
    """

    def __init__(
        self,
        path: Path | None,
        handlers: list[logging.Handler],
        console_stream: TextIO | None,
        parent: RunLog | None = None,
    ) -> None:
        self.path = path
        self.console_stream = console_stream
        self.parent = parent
        self._handlers = handlers
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def log_versions(self, versions: Mapping[str, str]) -> None:
        """Log one ``'name' Version: x`` line per entry (plugins, extra packages)."""
        log = get_logger(LOGGER_NAME)
        for name, version in versions.items():
            log.info(f"{name!r} Version: {version}", package=name, version=version)

    def log_block(self, text: str) -> None:
        """Log a multi-line block (the settings) under one timestamp, then a blank line.

        Rendered as in the seed log: the ``[timestamp]`` alone on a line, the block,
        an empty line.
        """
        get_logger(LOGGER_NAME).info("\n" + text.rstrip("\n") + "\n")

    def _inside(self, other: RunLog) -> bool:
        run = self.parent
        while run is not None:
            if run is other:
                return True
            run = run.parent
        return False

    def close(self) -> None:
        """End the run: close its handlers; the last run out restores the logger.

        Runs started inside this one are closed first.  Calling it again does nothing.
        """
        with _lock:
            if self._closed:
                return
            for inner in [r for r in reversed(_open) if r._inside(self)]:
                inner.close()
            self._closed = True
            _uninstall(self)
            for handler in self._handlers:
                handler.flush()
                if isinstance(handler, logging.FileHandler):
                    handler.close()
        if _CURRENT.get() is self:
            _CURRENT.set(_open_parent(self))

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not self._closed:
            # The traceback reaches the console anyway; the file needs it for reports.
            logging.getLogger(LOGGER_NAME).error(
                "Run failed: %s: %s",
                exc_type.__name__ if exc_type else "Exception",
                exc,
                exc_info=(exc_type, exc, tb) if exc_type else None,
                extra={_FILE_ONLY_ATTR: True},
            )
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RunLog {str(self.path)!r} {state}>"


def _open_parent(run: RunLog | None) -> RunLog | None:
    parent = run.parent if run is not None else None
    while parent is not None and parent.closed:
        parent = parent.parent
    return parent


def current_run() -> RunLog | None:
    """Return the innermost open run of the current context, or ``None``.

    Each thread (and asyncio task) has its own: a run started in another thread is not
    this one's.
    """
    run = _CURRENT.get()
    return run if run is None or not run.closed else _open_parent(run)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        module = sys.modules.get(name)
        return str(getattr(module, "__version__", "unknown"))


def _new_log_path(logs_dir: Path) -> Path:
    logs_dir.mkdir(parents=True, exist_ok=True)
    # ':' is not allowed in Windows file names, hence '-' between hours and minutes.
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt}"
        path = logs_dir / f"acekit_{stamp}{suffix}.log"
        try:
            # Exclusive creation: two runs started in the same microsecond
            # (parallel test workers) must not share a file.
            path.open("x", encoding="utf-8").close()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a new log file in {logs_dir}")


def _json_targets(json: JsonMode) -> tuple[bool, bool]:
    if json is True or json == "file":
        return True, False
    if json is False:
        return False, False
    if json == "console":
        return False, True
    if json == "both":
        return True, True
    raise ValueError(f"json must be a bool, 'file', 'console' or 'both'; got {json!r}")


def start_run_log(
    logs_dir: str | os.PathLike[str] | None = "logs",
    *,
    console: bool = True,
    json: JsonMode = False,
    extra_versions: Mapping[str, str] | None = None,
    console_level: int | str = logging.INFO,
    file_level: int | str = logging.DEBUG,
    stream: TextIO | None = None,
) -> RunLog:
    """Start logging a run: create the log file, print where it is, write the header.

    Creates ``logs_dir/acekit_<YYYY-MM-DD_HH-MM-SS.ffffff>.log`` (and ``logs_dir``),
    prints ``Created log at: <path>`` on the console, then logs the header: the
    acekit, torch and Python versions and one ``'name' Version: x`` line per entry of
    ``extra_versions`` (the loaded plugins; the caller passes them so that logging
    never loads plugins itself).

    Args:
        logs_dir: Directory of the log files; ``None`` writes no file. When it cannot
            be written (a read-only working folder), the file goes to a folder in the
            system's temporary directory instead and a warning says so and how to
            choose ``logs_dir``; when that fails too, the run has no file.
        console: Print events on ``stream`` as well.
        json: ``True`` or ``"file"``: the file holds JSON lines; ``"console"``: the
            console prints JSON lines; ``"both"``; ``False``: human lines everywhere.
        extra_versions: ``{name: version}`` logged after the built-in versions.
        console_level: Least level printed on the console.
        file_level: Least level written to the file (DEBUG: the file is for reports).
        stream: Console stream; defaults to ``sys.stderr`` at call time (so tools that
            swap ``sys.stderr``, like pytest's capsys, see the output).

    Returns:
        The open :class:`RunLog`; close it, or use it in a ``with`` block.  A run
        started while another is open in the same thread nests: the outer one gets
        no lines until the inner one closes.  Runs in other threads are independent.
    """
    file_json, console_json = _json_targets(json)
    path, problem = _create_log_file(logs_dir)

    handlers: list[logging.Handler] = []
    if path is not None:
        file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        file_handler.setLevel(file_level)
        file_handler.setFormatter(_JsonFormatter() if file_json else _HumanFormatter())
        handlers.append(file_handler)

    console_stream: TextIO | None = None
    if console:
        console_stream = sys.stderr if stream is None else stream
        console_handler = _ConsoleHandler(console_stream)
        console_handler.setLevel(console_level)
        console_handler.setFormatter(_JsonFormatter() if console_json else _HumanFormatter())
        console_handler.addFilter(_not_file_only)
        handlers.append(console_handler)
        if path is not None:
            print(f"Created log at: {path}", file=console_stream, flush=True)

    with _lock:
        run = RunLog(path, handlers, console_stream, parent=current_run())
        _install(run)
    _CURRENT.set(run)

    log = get_logger(LOGGER_NAME)
    if problem:
        log.warning(problem)
    acekit_version = _package_version("acekit")
    log.info(f"acekit Version: {acekit_version}", package="acekit", version=acekit_version)
    torch_version = _package_version("torch")
    log.info(f"'torch' Version: {torch_version}", package="torch", version=torch_version)
    python_version = sys.version.replace("\n", " ")
    log.info(f"Python Version: {python_version}", package="python", version=python_version)
    if extra_versions:
        run.log_versions(extra_versions)
    return run


def _create_log_file(logs_dir: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    """The run's new log file (or ``None``), and a warning when it is not in ``logs_dir``."""
    if logs_dir is None:
        return None, ""
    try:
        return _new_log_path(Path(logs_dir)), ""
    except OSError as error:
        reason = f"cannot write the run log to {str(logs_dir)!r} ({error.strerror or error})"
    how = "pass logs_dir= a writable folder, or logs_dir=None for no log file"
    # One folder per user: another user's folder in /tmp would not be writable.
    fallback = Path(tempfile.gettempdir()) / f"acekit-logs-{getattr(os, 'getuid', str)()}"
    try:
        path = _new_log_path(fallback)
    except OSError:
        return None, f"{reason}; this run has no log file ({how})"
    return path, f"{reason}; writing it to {str(path)!r} instead ({how})"


@contextlib.contextmanager
def run_logging(
    logs_dir: str | os.PathLike[str] | None = "logs",
    *,
    console: bool = True,
    json: JsonMode = False,
    extra_versions: Mapping[str, str] | None = None,
    console_level: int | str = logging.INFO,
    file_level: int | str = logging.DEBUG,
    stream: TextIO | None = None,
) -> Iterator[RunLog]:
    """Context manager around :func:`start_run_log`, reentrant.

    When a run is already open (the CLI started one and then calls
    ``acekit.compile``), it is yielded as is and left open; otherwise a new run is
    started with these arguments and closed on exit, with a failing block's
    traceback written to the file.
    """
    active = current_run()
    if active is not None:
        yield active
        return
    with start_run_log(
        logs_dir,
        console=console,
        json=json,
        extra_versions=extra_versions,
        console_level=console_level,
        file_level=file_level,
        stream=stream,
    ) as run:
        yield run


# --------------------------------------------------------------------------- progress


def progress(
    iterable: Iterable[_T],
    desc: str,
    total: int | None = None,
    *,
    force: bool | None = None,
    file: TextIO | None = None,
) -> Iterator[_T]:
    """Iterate over ``iterable`` showing a tqdm bar in the seed log's style.

    ``Calibrating Model: 100%|##########| 20/20 [00:06<00:00,  3.31it/s]``

    The bar is shown when ``file`` (default: the run's console stream, else
    ``sys.stderr``) is a terminal, or always with ``force=True``, never with
    ``force=False``.  When the iteration ends (also by ``break`` or an exception) the
    final bar is logged as one line, to the run's file only when the bar was on
    screen, to the console as well when it was not.
    """
    from tqdm import tqdm  # tqdm is only needed once a bar is drawn

    run = current_run()
    stream = file or (run.console_stream if run and run.console_stream else None) or sys.stderr
    shown = force if force is not None else bool(getattr(stream, "isatty", lambda: False)())
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    global _bars_on_screen
    count = 0
    start = time.monotonic()
    bar = (
        tqdm(
            iterable,
            desc=desc,
            total=total,
            file=stream,
            ascii=_PROGRESS_ASCII,
            bar_format=PROGRESS_BAR_FORMAT,
        )
        if shown
        else None
    )
    if bar is not None:
        _bars_on_screen += 1
    try:
        for item in bar if bar is not None else iterable:
            count += 1
            yield item
    finally:
        if bar is not None:
            bar.close()
            _bars_on_screen -= 1
        summary = tqdm.format_meter(
            count,
            total,
            time.monotonic() - start,
            prefix=desc,
            ascii=_PROGRESS_ASCII,
            bar_format=PROGRESS_BAR_FORMAT if total else None,
        )
        logging.getLogger(f"{LOGGER_NAME}.progress").info(
            summary,
            extra={
                _FILE_ONLY_ATTR: shown,
                _EVENT_ATTR: {"desc": desc, "n": count, "total": total},
            },
        )
