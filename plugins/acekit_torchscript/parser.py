"""The TorchScript parser: a ScriptModule or saved file -> acekit Graph."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from acekit.api import ExampleInputsError
from acekit.ir import Graph, Value
from acekit.logging import get_logger
from acekit.parsing import encode_outputs, eval_mode, set_outputs, type_of
from acekit_torchscript.aten import CONVERTERS
from acekit_torchscript.context import Builder, Site
from acekit_torchscript.convert import convert_same_name
from acekit_torchscript.entries import ModuleEntry, ScalarEntry, TensorEntry, resolve
from acekit_torchscript.errors import UnsupportedOpsError
from acekit_torchscript.loading import load_script_module
from acekit_torchscript.modules import LEAF_MODULES
from acekit_torchscript.walker import ModelState, Walker

log = get_logger(__name__)


class TorchScriptParser:
    """Parses traced or scripted modules and saved TorchScript files into acekit graphs.

    Nodes get the subgraph path of the module that runs them
    (``VisionTransformer/encoder/layers/encoder_layer_0``), parameters and buffers stay
    ``parameter`` nodes named by their state-dict keys (trainable ones are never folded
    into constants), and every value's dtype and shape come from running the model on
    the example inputs.
    """

    name: ClassVar[str] = "torchscript"
    summary: ClassVar[str] = "TorchScript modules (traced or scripted) and saved TorchScript files"

    def parse(self, model: Any, example_inputs: Any) -> Graph:
        """Parse ``model`` (ScriptModule, path or plain module) on ``example_inputs``."""
        return parse_torchscript(model, example_inputs)


def parse_torchscript(
    model: torch.nn.Module | str | os.PathLike[str], example_inputs: Any
) -> Graph:
    """Parse a ScriptModule, the TorchScript file at a path, or a plain module (scripted
    with ``torch.jit.script``), into a new Graph.

    ``example_inputs`` are the positional inputs of ``forward`` (a tuple, or one
    tensor). The model runs once on them, in eval mode (its own mode is restored
    afterwards): conditions are decided by this call, and numbers computed from shapes
    stay computed in the graph.

    Raises :class:`~acekit_torchscript.errors.TorchScriptFileError` for a path that
    holds no TorchScript, :class:`~acekit_torchscript.errors.UnsupportedOpsError`
    listing every op the IR cannot express, and
    :class:`~acekit_torchscript.errors.ModelRaisedError` when the model raises.
    """
    module = load_script_module(model)
    inputs = (
        tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)
    )
    root_name = str(module.original_name)
    log.info(f"Starting to parse the model: '{root_name}'", model=root_name)
    graph = Graph(root_name)
    builder = Builder(graph, root_name)
    method = module._c._get_method("forward")
    arguments = list(method.schema.arguments)[1:]
    # Clones: an in-place op at the start of forward must not change the user's tensors.
    entries = _input_entries(graph, root_name, arguments, tuple(_clone(x) for x in inputs))
    walker = Walker(builder, ModelState.of(module), CONVERTERS, LEAF_MODULES, convert_same_name)
    with eval_mode(module, root_name), torch.no_grad():
        result = walker.call_method(ModuleEntry((), module._c), "forward", entries, ())
    if builder.unsupported:
        raise UnsupportedOpsError(root_name, builder.unsupported)
    leaves, structure = encode_outputs(
        result, lambda item: isinstance(item, TensorEntry | ScalarEntry | torch.Tensor), resolve
    )
    site = Site(method.graph.return_node(), ())
    set_outputs(graph, [builder.value(leaf, site) for leaf in leaves], structure)
    for ir_node in builder.emitted:
        if ir_node.graph is graph:
            log.debug(
                f"Parsed to -> '{ir_node.name}' (Subgraph: '{ir_node.subgraph}')",
                node=ir_node.source_name,
            )
    log.info(f"Parsed '{root_name}' into {len(graph)} nodes", model=root_name, nodes=len(graph))
    return graph


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _input_entries(
    graph: Graph, root_name: str, arguments: Sequence[torch._C.Argument], inputs: tuple[Any, ...]
) -> list[Any]:
    if len(inputs) > len(arguments):
        raise ExampleInputsError(
            f"{root_name}.forward takes {len(arguments)} inputs, {len(inputs)} example inputs given"
        )
    entries: list[Any] = []
    for index, argument in enumerate(arguments):
        if index >= len(inputs):
            if not argument.has_default_value():
                raise ExampleInputsError(
                    f"no example input for argument {argument.name!r} of {root_name}.forward"
                )
            entries.append(argument.default_value)
            continue
        example = inputs[index]
        if isinstance(example, torch.Tensor):
            value: Value = graph.add_input(argument.name, type_of(example), subgraph=root_name)
            entries.append(TensorEntry(value, example))
        else:
            # Non-tensor inputs are fixed at their example value, like fx concrete_args.
            entries.append(example)
    return entries
