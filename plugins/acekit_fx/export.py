"""torch.export: ``ExportedProgram``s handed to the parser, and the export fallback.

An exported program is an ATen-level FX graph whose parameters, buffers and constants
are placeholders; ``graph_signature`` says which, with their state-dict keys, so they
become ``parameter``/``constant`` nodes with the original refs again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from acekit.ir import Graph
from acekit.logging import get_logger
from acekit.parsing import type_of
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.converter import Converter
from acekit_fx.frontend import encode_outputs, finish, stack_scope, structure_from_spec
from acekit_fx.naming import sanitize
from acekit_fx.values import ConstTensor

log = get_logger(__name__)

#: Maps an export input (its kind, target and placeholder) to what it is bound to.
InputBinder = Callable[[NodeContext, torch.fx.Node, Any], Any]


def functional(program: ExportedProgram) -> ExportedProgram:
    """``program`` without in-place ops (export's training IR may keep some)."""
    for node in program.graph.nodes:
        target = node.target
        if isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable:
            return program.run_decompositions({})
    return program


def root_name_of(program: ExportedProgram) -> str:
    """The class name of the exported root module, from the nodes' module stacks."""
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            _, kind = next(iter(stack.values()))
            return str(getattr(kind, "__name__", kind)).rpartition(".")[2]
    return "ExportedProgram"


def parse_exported_program(
    program: ExportedProgram,
    example_inputs: Sequence[Any] | None = None,
    *,
    name: str | None = None,
) -> Graph:
    """Parse an ``ExportedProgram`` into a new Graph.

    ``example_inputs`` default to the ones the program was exported with.
    """
    model_name = name or root_name_of(program)
    log.info(f"Starting to parse the model: '{model_name}'", model=model_name, frontend="export")
    graph = Graph(model_name)
    converter = Converter(graph, model_name)
    leaves, structure = convert_program(converter, program, example_inputs, graph_inputs=True)
    return finish(graph, converter, model_name, leaves, structure)


def convert_program(
    converter: Converter,
    program: ExportedProgram,
    example_inputs: Sequence[Any] | None,
    *,
    graph_inputs: bool,
    user_inputs: Sequence[Any] | None = None,
    ref_of: Callable[[str], str] = lambda target: target,
    tensor_of: Callable[[str], torch.Tensor | None] = lambda target: None,
) -> tuple[list[Any], Any]:
    """Convert ``program``'s graph into ``converter``'s Graph.

    With ``graph_inputs`` its user inputs become graph inputs; otherwise (a function
    inlined into another graph) they are bound to ``user_inputs``. ``ref_of`` maps a
    state-dict key of the program to the graph's ref; ``tensor_of`` gives the model's
    own tensor object for a key (so a weight read twice is one node). Returns the
    flat outputs and their ``structure``.
    """
    program = functional(program)
    signature = program.graph_signature
    specs = {spec.arg.name: spec for spec in signature.input_specs if hasattr(spec.arg, "name")}
    examples = _user_examples(program, example_inputs)
    concrete: list[Any] = []
    user_index = 0
    for node in program.graph.nodes:
        if node.op != "placeholder":
            continue
        spec = specs[node.name]
        if spec.kind is InputKind.USER_INPUT:
            concrete.append(examples[user_index])
            user_index += 1
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            target = str(spec.target)
            own = tensor_of(target)
            concrete.append(own if own is not None else _state(program, target))
        elif spec.kind is InputKind.CONSTANT_TENSOR:
            concrete.append(program.constants[str(spec.target)])
        else:
            concrete.append(None)
    inputs_seen = [0]

    def bind(cx: NodeContext, node: torch.fx.Node, value: Any) -> Any:
        spec = specs[node.name]
        if spec.kind is InputKind.USER_INPUT:
            position = inputs_seen[0]
            inputs_seen[0] += 1
            if not graph_inputs:
                assert user_inputs is not None
                return user_inputs[position]
            graph_input = converter.graph.add_input(
                sanitize(node.name), type_of(value), subgraph=converter.root_name
            )
            assert graph_input.producer is not None
            cx.final = graph_input.producer
            return graph_input
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            target = str(spec.target)
            kind = "parameter" if spec.kind is InputKind.PARAMETER else "buffer"
            if spec.kind is InputKind.BUFFER and spec.persistent is False:
                kind = "constant"
            bound = converter.tensor_value(
                ref_of(target),
                value,
                owner=None,
                leaf=target.rpartition(".")[2],
                subgraph=cx.subgraph,
                source_name=node.name,
                kind=kind,
            )
            cx.final = bound.producer
            return bound
        if spec.kind is InputKind.CONSTANT_TENSOR:
            return ConstTensor(value, sanitize(node.name), cx.subgraph, cx.location)
        raise Unsupported(f"exported input {node.name!r} of kind {spec.kind.name}")

    converter.owner = program.graph_module
    output = converter.run(program.graph_module, concrete, bind_placeholder=bind, scope=stack_scope)
    kinds = [spec.kind for spec in signature.output_specs]
    flat = list(output) if isinstance(output, tuple | list) else [output]
    if any(kind not in (OutputKind.USER_OUTPUT, OutputKind.BUFFER_MUTATION) for kind in kinds):
        raise Unsupported("the exported program mutates its inputs")
    user = [out for out, kind in zip(flat, kinds, strict=True) if kind is OutputKind.USER_OUTPUT]
    spec = program.call_spec.out_spec
    if spec is None:
        return encode_outputs(user[0] if len(user) == 1 else tuple(user))
    leaves, _ = encode_outputs(tuple(user))
    structure = structure_from_spec(spec, [0])
    if structure == 0:
        structure = None
    return leaves, structure


def _state(program: ExportedProgram, target: str) -> torch.Tensor:
    if target in program.state_dict:
        return program.state_dict[target]
    return program.constants[target]  # non-persistent buffers live among the constants


def _user_examples(program: ExportedProgram, given: Sequence[Any] | None) -> list[Any]:
    if given:
        return list(given)
    stored = getattr(program, "example_inputs", None)
    if stored is None:
        return []
    return [leaf for leaf in pytree_leaves(stored) if isinstance(leaf, torch.Tensor)]


def pytree_leaves(tree: Any) -> list[Any]:
    """The leaves of a pytree (args and kwargs of an export)."""
    import torch.utils._pytree as pytree

    return list(pytree.tree_leaves(tree))


def export_quietly(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    dynamic_shapes: Any = None,
) -> ExportedProgram:
    """``torch.export.export`` in non-strict mode, without torch's own log output.

    It is a fallback or an inner step of parsing: when it fails, the parser's error
    says so, and torch's warnings and graph dumps would only bury that message.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        # torch.export prints the partial graph of a failed export straight to stderr.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return torch.export.export(
                model, tuple(example_inputs), dynamic_shapes=dynamic_shapes, strict=False
            )
    finally:
        logging.disable(previous)


def export_dynamic(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    free: Sequence[Mapping[int, int]],
    *,
    varargs: bool = False,
) -> ExportedProgram:
    """Export ``model`` with the dims in ``free`` dynamic (``Dim.DYNAMIC``).

    ``free[i]`` maps a dim of input ``i`` to a second size it takes. The export runs on
    the inputs at those sizes, so that an example size of 1 is not specialised away
    (torch.export fixes dims of size 0 and 1); the program then runs at either size.
    When the model cannot be exported with them dynamic, it is exported static: the
    dims the model fixes are reported once the graph is typed (acekit.runtime.symbolic).
    ``varargs``: the model's ``forward`` takes ``*tensors``.
    """
    if not any(free):
        return export_quietly(model, tuple(example_inputs))
    resized = [
        _resized(x, dims) if isinstance(x, torch.Tensor) else x
        for x, dims in zip(example_inputs, free, strict=True)
    ]
    specs = tuple({d: Dim.DYNAMIC for d in dims} or None for dims in free)
    try:
        return export_quietly(model, tuple(resized), (specs,) if varargs else specs)
    except Exception as error:
        log.debug(
            f"torch.export could not keep the dims dynamic ({type(error).__name__}); "
            "exporting at the example's sizes"
        )
        return export_quietly(model, tuple(example_inputs))


def _resized(tensor: torch.Tensor, dims: Mapping[int, int]) -> torch.Tensor:
    """``tensor`` with each dim in ``dims`` at its new size, elements repeated cyclically."""
    for dim, size in dims.items():
        index = torch.arange(size, device=tensor.device) % tensor.shape[dim]
        tensor = tensor.index_select(dim, index)
    return tensor
