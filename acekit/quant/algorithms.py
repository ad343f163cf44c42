"""The settings' ``algorithms``: post-training algorithms placed around calibration.

``algorithms`` is a pipeline spec of passes that declare a ``stage`` (``cle``,
``adaround{iterations=500}``, ``bias-correction``, ...). The default pipeline runs the
``before-calibration`` ones between cleanup and ``ptq`` and the ``after-calibration``
ones after it, each in the order written.
"""

from __future__ import annotations

from acekit.passes import Pass, Pipeline
from acekit.passes.spec import parse_spec

BEFORE_CALIBRATION = "before-calibration"
AFTER_CALIBRATION = "after-calibration"


def installed_algorithms() -> list[str]:
    """The names of the installed passes that may appear in ``algorithms``."""
    from acekit.plugin import get_registry

    passes = get_registry().passes
    return sorted(name for name, cls in passes.items() if cls.stage)


def split_algorithms(spec: str) -> tuple[list[str], list[str]]:
    """The spec items of ``spec`` to run before and after calibration.

    Raises:
        ValueError: for a malformed spec, an unknown pass, an option out of range or a
            pass that is not a post-training algorithm (listing the installed ones).
    """
    if not spec.strip():
        return [], []
    steps = Pipeline.from_spec(spec).steps
    before: list[str] = []
    after: list[str] = []
    for item, step in zip(parse_spec(spec), steps, strict=True):
        stage = step.stage if isinstance(step, Pass) else ""
        if stage not in (BEFORE_CALIBRATION, AFTER_CALIBRATION):
            raise ValueError(
                f"{item.name!r} is not a post-training algorithm; the installed ones are: "
                + ", ".join(installed_algorithms())
            )
        (before if stage == BEFORE_CALIBRATION else after).append(item.text())
    return before, after
