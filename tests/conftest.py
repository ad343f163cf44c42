"""Shared test setup: verify the graph after every pass in every test."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before any pipeline runs: the pass manager reads it on each run.
os.environ.setdefault("ACEKIT_VERIFY_PASSES", "1")

#: One lock file for the machine: two pytest workers (or two runs) never hold
#: ``@pytest.mark.large`` models in memory at once.
LARGE_LOCK = Path(tempfile.gettempdir()) / "acekit-large-models.lock"


@pytest.fixture(autouse=True)
def one_large_model_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hold the machine-wide lock while a ``large`` test runs.

    Why a lock and not ``xdist_group``: under ``--dist loadgroup`` a worker that dies
    (out of memory) makes xdist re-queue its finished groups as empty work and hang at
    the end of the run (pytest-xdist #1378); plain ``--dist load`` recovers.
    """
    if request.node.get_closest_marker("large") is None:
        yield
        return
    with LARGE_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
