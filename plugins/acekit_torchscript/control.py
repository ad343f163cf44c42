"""Control flow of scripted code: branches, loops, exceptions and assertions.

The walker follows the path the example call takes: ``prim::If`` runs the branch its
condition selects, ``prim::Loop`` is unrolled. Conditions on module attributes,
``None`` checks and shapes are decided that way; a condition on tensor data is
reported as unsupported, since no single graph computes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import torch

from acekit.parsing import DATA_DEPENDENT
from acekit_torchscript.entries import (
    ScalarEntry,
    UnknownEntry,
    describe_entry,
    example_of,
    is_static,
)
from acekit_torchscript.errors import ModelRaisedError

if TYPE_CHECKING:
    from acekit_torchscript.walker import Frame, Walker

# Cap on unrolled iterations: a loop that runs longer is not a model's layer loop.
MAX_ITERATIONS: Final = 100_000


def condition(
    walker: Walker, node: torch._C.Node, frame: Frame, value: torch._C.Value
) -> bool | None:
    """The truth of a branch or loop condition, or ``None`` when it cannot be decided."""
    entry = frame.get(value)
    if isinstance(entry, UnknownEntry):
        return None if entry.example is None else bool(entry.example)
    if isinstance(entry, ScalarEntry):
        # A condition on shapes holds for the example's shapes: the branch taken is
        # the one the graph keeps, as torch.jit.trace would record it.
        return bool(entry.example)
    if not is_static(entry) or isinstance(entry, torch.Tensor):
        walker.builder.report_unsupported(
            frame.site(node), f"control flow depends on {DATA_DEPENDENT} ({describe_entry(entry)})"
        )
        return None
    return bool(entry)


def run_if(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::If``: run the branch the condition selects."""
    decided = condition(walker, node, frame, node.inputsAt(0))
    if decided is None:
        walker.bind_unknown(node, frame)
        return
    blocks = list(node.blocks())
    block = blocks[0 if decided else 1]
    keep_assertion(walker, node, frame, blocks[1 if decided else 0])
    walker.run_nodes(block.nodes(), frame)
    walker.bind_outputs(node, frame, [frame.get(value) for value in block.outputs()])


def keep_assertion(walker: Walker, node: torch._C.Node, frame: Frame, other: Any) -> None:
    """``torch._assert(h == 224)`` on shapes stays in the graph as an ``assert`` node.

    TorchScript compiles an assertion to a branch that only raises; when its condition
    is computed from shapes, the graph checks it at run time as the model did. Checks
    inside torch.nn's own layers are left out: the fx parser does not see them either.
    """
    decided = frame.get(node.inputsAt(0))
    if not isinstance(decided, ScalarEntry) or frame.module.is_torch_layer:
        return
    raises = [n for n in other.nodes() if str(n.kind()) == "prim::RaiseException"]
    if len(raises) != 1 or list(node.outputs()):
        return
    message = _assertion_message(raises[0], frame)
    site = decided.site  # the condition's line is the user's ``torch._assert``
    value = walker.builder.scalar(decided)
    if not decided.example:
        # The raising branch is the "then" branch: the model asserts the opposite.
        negated = walker.builder.emit("logical_not", [value], {}, site, [True], helper=True)
        value = negated[0].value
    walker.builder.emit("assert", [value], {"message": message}, site, [], helper=True)


def _assertion_message(raise_node: torch._C.Node, frame: Frame) -> str:
    """The message of an assertion, as far as it is known without running its branch."""
    message = raise_node.inputsAt(0)
    producer = message.node()
    if producer.kind() == "prim::Constant":
        text = str(producer.output().toIValue())
    elif message.unique() in frame.env:
        text = str(example_of(frame.get(message)))
    else:
        # Built inside the branch (``"AssertionError: " + msg``): its last known part.
        parts = [
            frame.get(value)
            for value in producer.inputs()
            if value.unique() in frame.env and isinstance(frame.get(value), str)
        ]
        text = parts[-1] if parts else ""
    return text.removeprefix("AssertionError: ")


def run_loop(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::Loop``: unrolled, iteration by iteration, as the example call runs it."""
    inputs = list(node.inputs())
    trip_count = example_of(frame.get(inputs[0]))
    carried = [frame.get(value) for value in inputs[2:]]
    going = condition(walker, node, frame, inputs[1])
    if going is None or not isinstance(trip_count, int):
        walker.bind_unknown(node, frame)
        return
    block = next(iter(node.blocks()))
    block_inputs = list(block.inputs())
    block_outputs = list(block.outputs())
    iteration = 0
    while going and iteration < min(trip_count, MAX_ITERATIONS):
        frame.bind(block_inputs[0], iteration)
        for value, entry in zip(block_inputs[1:], carried, strict=True):
            frame.bind(value, entry)
        walker.run_nodes(block.nodes(), frame)
        carried = [frame.get(value) for value in block_outputs[1:]]
        going = condition(walker, node, frame, block_outputs[0])
        if going is None:
            walker.bind_unknown(node, frame)
            return
        iteration += 1
    walker.bind_outputs(node, frame, carried)


def run_raise(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::RaiseException`` on the path the example takes: the model rejects it."""
    inputs = walker.inputs(node, frame)
    message = inputs[0] if inputs and isinstance(inputs[0], str) else "exception"
    site = frame.site(node)
    where = site.location()
    raise ModelRaisedError(
        f"the model raised on the example inputs in '{walker.builder.subgraph(site.module_path)}'"
        + (f" at {where}" if where else "")
        + f": {message}"
    )
