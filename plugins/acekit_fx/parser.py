"""The ``fx`` parser: ``nn.Module`` -> Graph through torch.fx (torch.export as fallback)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch.export import ExportedProgram

from acekit.api import ExampleInputsError, check_example_inputs
from acekit.dims import declared_dims
from acekit.ir import Graph
from acekit.logging import get_logger
from acekit.parsing import UnsupportedOpsError, eval_mode, type_of
from acekit_fx.context import NodeContext
from acekit_fx.converter import Converter
from acekit_fx.dynamo import is_dynamo_graph, parse_dynamo_graph
from acekit_fx.errors import TraceFailedError
from acekit_fx.export import (
    convert_program,
    export_dynamic,
    export_quietly,
    parse_exported_program,
)
from acekit_fx.frontend import encode_outputs, finish, stack_scope
from acekit_fx.naming import sanitize
from acekit_fx.tracing import TraceFailure, shadow_shapes, symbolic_trace

log = get_logger(__name__)


class FxParser:
    """Parses models with ``torch.fx.symbolic_trace``.

    Also takes a dynamo GraphModule (what a ``torch.compile`` backend receives, with
    its example inputs) and a ``torch.export.ExportedProgram``. ``leaf_modules`` are
    module classes the tracer must not look into (captured with torch.export instead);
    with ``fallback_to_export`` a model symbolic tracing cannot capture is parsed through
    ``torch.export``.
    """

    name = "fx"
    summary = (
        "torch.fx symbolic tracing (torch.export as fallback); also dynamo graphs and "
        "torch.export programs"
    )

    def __init__(
        self, *, leaf_modules: Sequence[type] = (), fallback_to_export: bool = True
    ) -> None:
        self.leaf_modules = tuple(leaf_modules)
        self.fallback_to_export = fallback_to_export

    def parse(self, model: Any, example_inputs: tuple[Any, ...]) -> Graph:
        """Parse ``model`` (module, dynamo GraphModule or ExportedProgram) into a Graph."""
        if isinstance(model, ExportedProgram):
            return parse_exported_program(model, example_inputs or None)
        if isinstance(model, torch.fx.GraphModule) and is_dynamo_graph(model):
            return parse_dynamo_graph(model, example_inputs)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"the fx parser takes a torch.nn.Module, got {type(model).__name__}")
        return self.parse_module(model, example_inputs)

    def parse_graph_module(
        self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *, name: str | None = None
    ) -> Graph:
        """Parse the GraphModule a ``torch.compile`` backend receives."""
        return parse_dynamo_graph(gm, example_inputs, name=name)

    def parse_exported_program(
        self,
        program: ExportedProgram,
        example_inputs: Sequence[Any] | None = None,
        *,
        name: str | None = None,
    ) -> Graph:
        """Parse a ``torch.export.ExportedProgram``."""
        return parse_exported_program(program, example_inputs, name=name)

    def parse_module(self, model: torch.nn.Module, example_inputs: Sequence[Any]) -> Graph:
        """Trace ``model`` in eval mode on ``example_inputs`` and convert it.

        The model's own train()/eval() state is restored afterwards, and its tensors are
        copied into the graph: the model is never modified.
        """
        inputs = check_example_inputs(model, tuple(example_inputs))
        model_name = type(model).__name__
        log.info(f"Starting to parse the model: '{model_name}'", model=model_name)
        with eval_mode(model, model_name):
            traced = symbolic_trace(model, len(inputs), self.leaf_modules)
            if isinstance(traced, TraceFailure):
                return self._fallback(model, inputs, traced)
            graph = Graph(model_name)
            converter = Converter(graph, model_name)
            converter.owner = traced
            converter.state_keys = frozenset(model.state_dict(keep_vars=True))
            # Clones: an in-place op at the start of forward must not change the user's tensors.
            examples = [x.clone() for x in inputs]
            free = declared_dims()
            if free:
                converter.shadow = shadow_shapes(traced, free.resized([x.clone() for x in inputs]))

            bound_inputs = [0]

            def bind(cx: NodeContext, node: torch.fx.Node, example: Any) -> Any:
                if bound_inputs[0] == len(inputs):
                    # A parameter FX fixed to its default (concrete_args): a constant.
                    return example
                bound_inputs[0] += 1
                value = graph.add_input(sanitize(node.name), type_of(example), subgraph=model_name)
                cx.final = value.producer
                return value

            output = converter.run(traced, examples, bind_placeholder=bind, scope=stack_scope)
            leaves, structure = encode_outputs(output)
            try:
                return finish(graph, converter, model_name, leaves, structure)
            except UnsupportedOpsError as error:
                if not self.fallback_to_export:
                    raise
                return self._export_instead(model, inputs, error)

    def _export_instead(
        self, model: torch.nn.Module, inputs: tuple[Any, ...], fx_error: UnsupportedOpsError
    ) -> Graph:
        """Parse through torch.export a model FX traced into ops the IR lacks.

        torch.export records ATen ops, into which many Python-level calls decompose
        (``torch.movedim``, which the FX handlers lack). When export fails
        too, or meets unsupported ops of its own, the FX error is raised, saying so.
        """
        model_name = type(model).__name__
        ops = ", ".join(fx_error.op_names)
        try:
            program = export_dynamic(model, inputs, _declared_sizes(len(inputs)))
            try:
                graph = _convert_export(model_name, program, inputs)
            except UnsupportedOpsError:
                # Export keeps composite ops (movedim, square) that the core ATen
                # decompositions turn into ones the IR has.
                graph = _convert_export(model_name, program.run_decompositions(), inputs)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            note = f"torch.export was tried too: {type(error).__name__}: {reason}"
            fx_error.args = (f"{fx_error.args[0]}\n{note}",)
            log.info(f"torch.export cannot parse '{model_name}' either", reason=reason)
            raise fx_error from None
        log.info(
            f"torch.fx traced '{model_name}' into op(s) the IR does not support ({ops}); "
            "parsed it through torch.export instead",
            model=model_name,
        )
        return graph

    def _fallback(
        self, model: torch.nn.Module, inputs: tuple[Any, ...], failure: TraceFailure
    ) -> Graph:
        model_name = type(model).__name__
        module = "/".join([model_name, *[p for p in failure.module_path.split(".") if p]])
        if not self.fallback_to_export:
            raise TraceFailedError(
                model_name,
                module,
                failure.location,
                failure.reason,
                traceable_parts=failure.traceable_parts,
            )
        try:
            program = export_dynamic(model, inputs, _declared_sizes(len(inputs)))
        except Exception as error:
            lines = str(error).strip().splitlines()
            reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
            raise TraceFailedError(
                model_name,
                module,
                failure.location,
                failure.reason,
                reason,
                traceable_parts=failure.traceable_parts,
            ) from failure.error
        log.info(
            f"torch.fx cannot trace '{module}' ({failure.reason}); parsing it through "
            "torch.export instead",
            model=model_name,
            location=failure.location,
        )
        try:
            return _convert_export(model_name, program, inputs)
        except UnsupportedOpsError as error:
            if not any(_declared_sizes(len(inputs))):
                raise
            # Dynamic dims keep shape arithmetic (arange(seq), ...) that the IR may lack
            # an op for; at the example's sizes it folds. The dims are reported as fixed.
            ops = ", ".join(dict.fromkeys(op.op for op in error.ops))
            log.warning(
                f"Parsing '{model_name}' at the example's sizes: with free dims torch.export "
                f"keeps ops the IR does not support ({ops})",
                model=model_name,
            )
            return _convert_export(model_name, export_quietly(model, inputs), inputs)


def _convert_export(model_name: str, program: ExportedProgram, inputs: tuple[Any, ...]) -> Graph:
    graph = Graph(model_name)
    converter = Converter(graph, model_name)
    leaves, structure = convert_program(converter, program, inputs, graph_inputs=True)
    return finish(graph, converter, model_name, leaves, structure)


def _declared_sizes(count: int) -> list[dict[int, int]]:
    """Per input, the declared free dims and a second size of each (for torch.export)."""
    free = declared_dims()
    if free is None:
        return [{} for _ in range(count)]
    return [{d: f.other for d, f in free.of(i).items()} for i in range(count)]


__all__ = ["ExampleInputsError", "FxParser"]
