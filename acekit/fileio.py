"""Writing the user's files safely: checked before work, complete or not at all.

Files are written to a temporary file beside the target, flushed to disk, then renamed
over it, so a reader never sees half a file and a crash leaves the old one. The new
file gets the mode a plain ``open()`` would give it (the umask decides; ``mkstemp``'s
0600 would hide exports from a service running as another user), and an overwritten
file keeps its mode. Temporary files are named ``.<name>.<pid>.<random>.acekit-tmp``:
recognisable, so that the leftovers of a killed process are removed by the next write
to the same file once that process is gone (and the file has not changed for a minute:
a writer on another machine sharing the folder has a pid this one cannot see).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Suffix of acekit's temporary files (never a name a user's own file would have).
TMP_SUFFIX = ".acekit-tmp"
#: Seconds a temporary file must have been left unchanged before it counts as stale.
STALE_AFTER_S = 60.0


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
    complete file), never half-written. The data and then the folder entry are synced
    to disk before returning; the file has the umask's mode, or the old file's mode
    when it replaces one.
    """
    target = Path(path)
    remove_stale_temporaries(target)
    tmp = _create_temporary(target)
    try:
        write(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(payload, path)`` through :func:`atomic_write`."""
    # Imported here: acekit.settings saves through this module without needing torch.
    import torch

    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` left by processes that no longer run.

    Returns the removed paths. A temporary of a live process (a concurrent write), or
    one changed in the last :data:`STALE_AFTER_S` seconds, is left alone.
    """
    folder = target.parent if str(target.parent) else Path(".")
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]+{re.escape(TMP_SUFFIX)}")
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not _running(int(match.group(1))) and _unchanged(entry):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _create_temporary(target: Path) -> Path:
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            # 0o666 lets the umask decide the mode, as a plain open() would.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise OutputPathError(f"cannot create a temporary file beside {target}")


def _unchanged(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _running(pid: int) -> bool:
    # On Windows signal 0 is CTRL_C_EVENT: never probe there, keep the file.
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError included
        return True  # another user's live process, or a platform without signals
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # The rename lives in the folder's entry; without this a power cut can undo it.
    # Folders cannot be opened (or synced) on every platform: best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
