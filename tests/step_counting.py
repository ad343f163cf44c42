"""Counting the work a piece of code does, for complexity checks that no clock can upset."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import TraceFunction


def interpreter_steps(action: Callable[[], object]) -> int:
    """How many Python trace events (calls, lines, loop iterations) ``action`` runs.

    A count of the work done, not a clock: it does not vary with the machine's load, so
    ``steps(2n) ~ 2 * steps(n)`` proves linear work where a timed assertion would flake.
    """
    steps = 0

    def tracer(frame: FrameType, event: str, arg: object) -> TraceFunction:
        nonlocal steps
        steps += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(previous)
    return steps
