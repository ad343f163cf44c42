"""The Pass contract: a named, stateless graph transformation with validated options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from acekit.ir.graph import Graph


@attrs.frozen
class PassResult:
    """What a pass returns: the graph, whether it changed, and counts for the log."""

    graph: Graph
    modified: bool
    stats: Mapping[str, int | float] = attrs.field(factory=dict)


class PassContractError(TypeError):
    """A pass broke its contract (wrong return type, failed requires/ensures)."""


class Pass:
    """Base class of every pass.

    Subclass it as an attrs class whose fields are the pass's options (with validators),
    set ``name`` to the word used in pipeline spec strings, and implement :meth:`run`::

        @attrs.frozen
        class RemoveDropout(Pass):
            name: ClassVar[str] = "remove-dropout"
            def run(self, graph: Graph) -> PassResult: ...

    Passes keep no state between runs. :meth:`requires` and :meth:`ensures` may raise
    to say the input is unsuitable or the output broke a promise.
    """

    name: ClassVar[str] = ""
    #: One line shown by ``acekit plugins`` and in error messages.
    summary: ClassVar[str] = ""
    #: Where a post-training algorithm goes in the default pipeline (``"before-calibration"``
    #: or ``"after-calibration"``), making it nameable in the settings' ``algorithms``;
    #: empty for every other pass.
    stage: ClassVar[str] = ""

    def requires(self, graph: Graph) -> None:
        """Raise when ``graph`` is not a valid input for this pass (default: accept all)."""

    def ensures(self, graph: Graph) -> None:
        """Raise when the output ``graph`` breaks this pass's promise (default: none)."""

    def run(self, graph: Graph) -> PassResult:
        """Transform ``graph`` (in place or into a new graph) and report what changed."""
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")

    def __call__(self, graph: Graph) -> PassResult:
        """Run requires -> run -> ensures and check the result's type."""
        self.requires(graph)
        result = self.run(graph)
        if not isinstance(result, PassResult):
            raise PassContractError(
                f"pass {self.name!r} returned {type(result).__name__}, not PassResult"
            )
        self.ensures(result.graph)
        return result

    def options(self) -> dict[str, Any]:
        """The pass's options as a dict (attrs fields), for specs and logs."""
        if not attrs.has(type(self)):
            return {}
        return attrs.asdict(self, recurse=False)  # type: ignore[arg-type]

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        """The options' default values, where they have one."""
        if not attrs.has(cls):
            return {}
        defaults = {}
        for field in attrs.fields(cls):
            default = field.default
            if default is attrs.NOTHING:
                continue
            # attrs.Factory instances describe how to build the default, not the value.
            factory = getattr(default, "factory", None)
            defaults[field.name] = factory() if callable(factory) else default
        return defaults
