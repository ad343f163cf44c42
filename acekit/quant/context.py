"""The context quantization passes run in: settings, target rules, calibration data.

Passes take only a graph, so that pipelines stay text (``cleanup,quantize,calibrate``).
What a quantization pass needs besides the graph, ``acekit.compile`` provides for the
duration of the run through :func:`use_context`; a pass reads it with
:func:`current_context`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from acekit.quant.rules import QuantRules

if TYPE_CHECKING:
    from acekit.quant.data import CalibrationData
    from acekit.settings import Settings


class NoQuantContextError(RuntimeError):
    """A quantization pass ran outside ``acekit.compile`` (no settings, no data)."""


@attrs.define
class QuantContext:
    """What ``acekit.compile`` hands to the quantization passes of its pipeline.

    Attributes:
        settings: The run's settings.
        rules: The target's quantization rules.
        target_name: The target's registered name (for messages).
        calibration: The calibration data, or ``None`` when the run has none.
        device: Where calibration runs (the device of the example inputs).
        notes: What the passes report for the final summary (``quantized``, ``skipped``).
    """

    settings: Settings
    rules: QuantRules
    target_name: str
    calibration: CalibrationData | None = None
    device: Any = None
    notes: dict[str, Any] = attrs.field(factory=dict)


_CURRENT: contextvars.ContextVar[QuantContext | None] = contextvars.ContextVar(
    "acekit_quant_context", default=None
)


@contextlib.contextmanager
def use_context(context: QuantContext) -> Iterator[QuantContext]:
    """Make ``context`` the one :func:`current_context` returns inside the block."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def current_context(pass_name: str) -> QuantContext:
    """The running compile's context; raises naming ``pass_name`` outside a compile."""
    context = _CURRENT.get()
    if context is None:
        raise NoQuantContextError(
            f"pass {pass_name!r} needs the settings and data of a compile run: run it in "
            "acekit.compile(..., pipeline=...) rather than on its own"
        )
    return context
