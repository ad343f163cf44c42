"""The human log lines of the cleanup passes, worded as in the reference product's log."""

from __future__ import annotations

from typing import Any

from acekit.logging import get_logger

log = get_logger(__name__)


def log_removed_nodes(pass_name: str, removed: int, **stats: Any) -> None:
    """Log ``Removed N unnecessary nodes`` when a pass made the graph smaller."""
    if removed > 0:
        log.info(
            f"Removed {removed} unnecessary nodes", pass_name=pass_name, removed=removed, **stats
        )
