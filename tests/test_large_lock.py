"""``@pytest.mark.large`` tests hold a machine-wide lock (tests/conftest.py)."""

from __future__ import annotations

import fcntl

import pytest

from tests.conftest import LARGE_LOCK


def _lock_is_free() -> bool:
    with LARGE_LOCK.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@pytest.mark.large
def test_a_large_test_holds_the_lock() -> None:
    # flock locks belong to an open file: a second open in this process conflicts too.
    assert not _lock_is_free()
