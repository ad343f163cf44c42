"""Graphs handed over by dynamo: a ``torch.compile`` backend's ``(gm, example_inputs)``.

Dynamo lifts the model's parameters and buffers to graph inputs. Each placeholder's
source (``L['self']._modules['conv']._parameters['weight']``) names what it is, so they
become ``parameter`` nodes with their state-dict refs (``conv.weight``) again, and only
the model's own inputs remain graph inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from acekit.ir import Graph, Value
from acekit.logging import get_logger
from acekit.parsing import type_of
from acekit_fx.context import NodeContext
from acekit_fx.converter import Converter
from acekit_fx.frontend import encode_outputs, finish, normalise_module_path, stack_scope
from acekit_fx.naming import sanitize
from acekit_fx.values import ConstTensor

log = get_logger(__name__)

_SOURCE_KIND = re.compile(r"\._(parameters|buffers)\[['\"]([^'\"]+)['\"]\]$")
_LIFTED_NAME = re.compile(r"^l_self_(.*)_$", re.IGNORECASE)
_NAME_TOKEN = re.compile(r"(?:^|_)(modules|parameters|buffers)_")


def is_dynamo_graph(gm: torch.fx.GraphModule) -> bool:
    """Whether ``gm`` came from dynamo (its placeholders carry their sources)."""
    return any(node.op == "placeholder" and "grapharg" in node.meta for node in gm.graph.nodes)


def classify_placeholder(node: torch.fx.Node, example: Any) -> tuple[str, str]:
    """``(kind, name)``: ``("input", "x")``, ``("parameter", "conv.weight")``, ``("buffer", ...)``,
    ``("constant", ...)`` or ``("size", "s0")``.

    Uses the dynamo source when there is one, else the lifted name
    (``l_self_modules_conv_parameters_weight_``), else whether the example is a
    ``torch.nn.Parameter`` (``_param_constant0``).
    """
    text = _source_text(node)
    if text is not None:
        match = _SOURCE_KIND.search(text)
        if match:
            owner = normalise_module_path(text[: match.start()])
            ref = f"{owner}.{match.group(2)}" if owner else match.group(2)
            return ("parameter" if match.group(1) == "parameters" else "buffer", ref)
        if text.startswith("L['self']") or text.startswith('L["self"]'):
            return ("constant", normalise_module_path(text))
        local = re.fullmatch(r"L\[['\"]([^'\"]+)['\"]\]", text)
        if local:
            return ("input", local.group(1))
    lifted = _LIFTED_NAME.match(node.name)
    if lifted and ("_parameters_" in node.name or "_buffers_" in node.name):
        tokens = _NAME_TOKEN.split(lifted.group(1))
        kind = "parameter" if "parameters" in tokens else "buffer"
        parts = [t for i, t in enumerate(tokens) if i % 2 == 0 and t]
        return (kind, ".".join(parts))
    if isinstance(example, torch.nn.Parameter):
        return ("parameter", node.name)
    if isinstance(example, (int, torch.SymInt)):
        # A size dynamo made symbolic (``s0`` for ``L['x'].size()[0]``) after a call at
        # another shape: it comes from an input's shape, it is not an input itself.
        return ("size", node.name)
    return ("input", node.name)


def user_input_positions(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> list[int]:
    """Which of dynamo's graph inputs are the model's own inputs (not lifted weights)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return [
        i
        for i, (node, example) in enumerate(zip(placeholders, example_inputs, strict=True))
        if classify_placeholder(node, example)[0] == "input"
    ]


def parse_dynamo_graph(
    gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *, name: str | None = None
) -> Graph:
    """Parse the GraphModule a ``torch.compile`` backend receives into a new Graph."""
    model_name = name or _root_name(gm)
    log.info(f"Starting to parse the model: '{model_name}'", model=model_name, frontend="dynamo")
    graph = Graph(model_name)
    converter = Converter(graph, model_name)
    converter.owner = gm
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    # Dynamo hands symbolic sizes (s0) as SymInts: the graph runs on their example ints.
    examples = [_size_hint(e) if isinstance(e, torch.SymInt) else e for e in example_inputs]
    tensors = {
        label: example
        for node, example in zip(placeholders, examples, strict=True)
        for kind, label in [classify_placeholder(node, example)]
        if kind == "input"
    }
    inputs: dict[str, Value] = {}

    def model_input(label: str) -> Value:
        # A size placeholder comes before its tensor's: the input is added at the first.
        if label not in inputs:
            inputs[label] = graph.add_input(
                sanitize(label), type_of(tensors[label]), subgraph=model_name
            )
        return inputs[label]

    def bind(cx: NodeContext, node: torch.fx.Node, example: Any) -> Any:
        kind, label = classify_placeholder(node, example)
        if kind == "input":
            value = model_input(label)
            cx.final = value.producer
            return value
        if kind == "size":
            size_of = _size_source(node)
            if size_of is None or size_of[0] not in tensors:
                return example
            return cx.out("shape", [model_input(size_of[0])], {"dim": size_of[1]})
        if not isinstance(example, torch.Tensor):
            return example
        if kind == "constant":
            return ConstTensor(example, sanitize(label), cx.subgraph, cx.location)
        value = converter.tensor_value(
            label,
            example,
            owner=None,
            leaf=label.rpartition(".")[2],
            subgraph=cx.subgraph,
            source_name=node.name,
            kind=kind,
        )
        cx.final = value.producer
        return value

    output = converter.run(gm, examples, bind_placeholder=bind, scope=stack_scope)
    leaves, structure = encode_outputs(output)
    return finish(graph, converter, model_name, leaves, structure)


_SIZE_SOURCE = re.compile(r"^L\[['\"]([^'\"]+)['\"]\]\.size\(\)\[(\d+)\]$")


def _source_text(node: torch.fx.Node) -> str | None:
    """Where dynamo took a placeholder from (``L['x']``, ``L['x'].size()[0]``), if it says."""
    source = getattr(getattr(node.meta.get("grapharg"), "source", None), "name", None)
    text = source() if callable(source) else source
    return text if isinstance(text, str) else None


def _size_source(node: torch.fx.Node) -> tuple[str, int] | None:
    """``("x", 0)`` for a placeholder dynamo made of ``L['x'].size()[0]``."""
    text = _source_text(node)
    match = _SIZE_SOURCE.match(text) if text is not None else None
    return (match.group(1), int(match.group(2))) if match else None


def _size_hint(size: torch.SymInt) -> int:
    """The example value of a symbolic size."""
    hint = getattr(size.node, "hint", None)
    return int(hint) if hint is not None else int(size)


def _root_name(gm: torch.fx.GraphModule) -> str:
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            path, kind = next(iter(stack.values()))
            if normalise_module_path(str(path)) == "":
                return str(getattr(kind, "__name__", kind)).rpartition(".")[2]
    return _compiled_module_class() or "Model"


def _compiled_module_class() -> str | None:
    """The class of the module whose forward dynamo is compiling, when it tells.

    Dynamo's module stacks start below the root module; the frame being translated
    still holds ``self``. Private API: any failure just means no name.
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        translator = InstructionTranslator.current_tx()
        owner = translator.f_locals.get("self") if translator is not None else None
    except Exception:
        return None
    return type(owner).__name__ if isinstance(owner, torch.nn.Module) else None


def make_backend(
    on_graph: Callable[[Graph], Graph] | None = None, *, name: str | None = None
) -> Callable[[torch.fx.GraphModule, list[Any]], Callable[..., Any]]:
    """A ``torch.compile`` backend that parses each graph and runs the generated module.

    ``on_graph`` may transform the parsed graph (a pipeline) before the module is
    generated. The compiled function calls the module with the model's own inputs and
    returns a tuple, as dynamo expects.
    """

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        graph = parse_dynamo_graph(gm, example_inputs, name=name)
        if on_graph is not None:
            graph = on_graph(graph)
        module = graph.to_module()
        positions = user_input_positions(gm, example_inputs)

        def run(*args: Any) -> Any:
            result = module(*(args[i] for i in positions))
            return result if isinstance(result, tuple) else (result,)

        return run

    return backend
