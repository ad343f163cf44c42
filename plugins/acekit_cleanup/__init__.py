"""acekit's cleanup plugin: passes that make a parsed graph smaller without changing it.

Registered through the ``acekit`` entry-point group (``cleanup = "acekit_cleanup"``):

- ``fold-constants``: evaluate what does not depend on the inputs (shape arithmetic,
  asserts' conditions, constant expressions) into ``constant`` nodes;
- ``remove-useless``: bypass ``identity``, ``x + 0``, ``x * 1``, no-op reshapes ...;
- ``remove-unused``: erase nodes nobody reads;
- ``remove-dropout``: drop dropout layers;
- ``cse``: merge nodes and constants that compute the same value;
- ``fold-bn``: fold evaluation BatchNorm into the preceding conv/linear;

and the preset ``cleanup`` (:data:`CLEANUP_PRESET`) that runs them in a useful order.
``docs/cleanup.md`` describes each pass and the order.
"""

from __future__ import annotations

from typing import Final

from acekit.plugin import Registrar, hookimpl
from acekit_cleanup.cse import EliminateCommonSubexpressions
from acekit_cleanup.fold_bn import FoldBatchNorm
from acekit_cleanup.fold_constants import FoldConstants
from acekit_cleanup.remove_dropout import RemoveDropout
from acekit_cleanup.remove_unused import RemoveUnused
from acekit_cleanup.remove_useless import RemoveUseless

#: Every pass of this plugin, in the order they are documented.
PASSES: Final = (
    FoldConstants,
    RemoveUseless,
    RemoveUnused,
    RemoveDropout,
    EliminateCommonSubexpressions,
    FoldBatchNorm,
)

#: The ``cleanup`` preset (docs/cleanup.md explains the order). Folding first turns
#: shape arithmetic and asserts into constants and drops them, and remove-unused sweeps
#: what the parser left unread: the reference log's ``Removed N unnecessary nodes``.
#: Dropout goes next (``Removed 37 Dropout layers``), then remove-useless, which also
#: sees the reshape pairs and ``x + 0`` that dropout stood between; CSE merges what
#: became equal, fold-bn runs on the settled graph, and a last sweep erases anything
#: left without readers.
CLEANUP_PRESET: Final = (
    "fold-constants,remove-unused,remove-dropout,remove-useless,cse,fold-bn,remove-unused"
)

__all__ = [
    "CLEANUP_PRESET",
    "PASSES",
    "EliminateCommonSubexpressions",
    "FoldBatchNorm",
    "FoldConstants",
    "RemoveDropout",
    "RemoveUnused",
    "RemoveUseless",
    "acekit_register_passes",
    "acekit_register_pipeline_presets",
]


@hookimpl
def acekit_register_passes(registry: Registrar) -> None:
    """Register the cleanup passes by their spec names."""
    for pass_cls in PASSES:
        registry.add_pass(pass_cls)


@hookimpl
def acekit_register_pipeline_presets(registry: Registrar) -> None:
    """Register the ``cleanup`` preset."""
    registry.add_preset(
        "cleanup",
        CLEANUP_PRESET,
        summary="fold constants, drop useless, unused and dropout nodes, CSE, fold BatchNorm",
    )
