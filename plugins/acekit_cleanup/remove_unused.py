"""``remove-unused``: erase nodes whose results nobody reads."""

from __future__ import annotations

from typing import ClassVar

import attrs

from acekit.ir import Graph
from acekit.passes import Pass, PassResult
from acekit_cleanup._logging import log_removed_nodes
from acekit_cleanup._rewrite import Rewriter, has_effect


@attrs.frozen
class RemoveUnused(Pass):
    """Erase every node whose results are read by no other node and that has no effect.

    Graph inputs, the output node and effect ops (``assert``, in-place ops) stay;
    parameters and constants nobody reads go, and their tensors leave the graph.
    One backward sweep suffices: a node's readers all come after it, so by the time
    the sweep reaches a node, every reader that will be erased is gone.
    """

    name: ClassVar[str] = "remove-unused"
    summary: ClassVar[str] = "erase nodes whose results nobody reads"

    def run(self, graph: Graph) -> PassResult:
        """Erase the unused nodes of ``graph``; stats: ``removed``."""
        rewriter = Rewriter(graph)
        for node in reversed(list(graph.nodes)):
            if not node.users and not has_effect(node):
                rewriter.erase(node)
        log_removed_nodes(self.name, rewriter.net_removed)
        return PassResult(graph, rewriter.removed > 0, {"removed": rewriter.net_removed})
