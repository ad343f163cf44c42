"""Method graphs as the walker runs them: free functions inlined, method calls kept."""

from __future__ import annotations

import torch

from acekit_torchscript.jit import find_nodes

#: The op that stands for a ``prim::CallMethod`` while free functions are inlined.
PLACEHOLDER_CALL = "acekit::call_method"


def _protect_method_calls(graph: torch._C.Graph) -> None:
    # ``_jit_pass_inline`` inlines methods and functions alike. Method calls are
    # swapped for a placeholder first so the walker can follow them itself, knowing
    # which module runs each node (and keeping leaf modules such as attention whole).
    for call in list(find_nodes(graph, "prim::CallMethod")):
        placeholder = graph.create(PLACEHOLDER_CALL, list(call.inputs()), call.outputsSize())
        placeholder.s_("name", call.s("name"))
        placeholder.copyMetadata(call)
        placeholder.insertBefore(call)
        for old, new in zip(call.outputs(), placeholder.outputs(), strict=True):
            new.setType(old.type())
            if not old.debugName().isdigit():
                new.setDebugName(old.debugName())
            old.replaceAllUsesWith(new)
        call.destroy()


def prepared_graph(method: torch._C.ScriptMethod) -> torch._C.Graph:
    """A copy of ``method``'s graph with free functions inlined and method calls kept."""
    graph = method.graph.copy()
    _protect_method_calls(graph)
    torch._C._jit_pass_inline(graph)
    return graph
