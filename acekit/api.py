"""acekit's public entry points: ``parse`` turns a model into a Graph.

The parser is a plugin: ``parse`` asks the ``acekit_choose_parser`` hook which one to
use unless the caller names one (``"fx"``, ``"torchscript"``) or passes a parser object.
The graph it returns has symbolic sizes where the inputs' dims are free
(:mod:`acekit.dims`), as the graphs ``acekit.compile`` quantizes do.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
import torch

if TYPE_CHECKING:
    from acekit.ir.graph import Graph
    from acekit.plugin.interfaces import Parser

__all__ = [
    "ExampleInputsError",
    "ParseError",
    "check_example_inputs",
    "input_names",
    "parse",
    "parse_as_declared",
]

log = structlog.get_logger()


class ParseError(ValueError):
    """A model could not be parsed into a Graph; parser plugins raise subclasses."""


class ExampleInputsError(ParseError, TypeError):
    """The example inputs do not fit the model: wrong type or wrong number."""


def parse(
    model: Any,
    example_inputs: Any,
    parser: str | Parser | None = None,
    *,
    dynamic_shapes: Any = None,
) -> Graph:
    """Parse ``model`` into a new :class:`acekit.ir.Graph`.

    ``example_inputs`` is a tensor or a tuple of tensors, what ``model(*example_inputs)``
    is called with; it is checked against ``model.forward``'s signature before any
    tracing. ``parser`` names a registered parser (``"fx"``, ``"torchscript"``), or is a
    parser object; ``None`` lets the ``acekit_choose_parser`` hook decide. The model
    itself is never modified.

    The batch dim of every input and the sequence dim of integer token inputs are free:
    the graph keeps their sizes symbolic (``batch``, ``sequence``), so it runs at other
    sizes. ``dynamic_shapes`` (as for ``torch.export``: per input, ``{dim: name}``)
    replaces that policy for the inputs it names (``({},)``: every dim of the one input
    stays at the example's size). A free dim the model fixes stays static, with a warning
    naming the node that fixes it.
    """
    from acekit.dims import declaring, infer_free_dims
    from acekit.runtime.symbolic import generalize_types

    inputs = check_example_inputs(model, example_inputs)
    names = input_names(model, len(inputs))
    free = infer_free_dims(inputs, names, dynamic_shapes=dynamic_shapes)
    with declaring(free):
        graph = parse_as_declared(model, inputs, parser)
    for fixed in generalize_types(graph, inputs, free):
        log.warning(f"Dynamic dim kept static: {fixed.describe()}", node=fixed.node)
    return graph


def parse_as_declared(
    model: Any, inputs: tuple[Any, ...], parser: str | Parser | None = None
) -> Graph:
    """Parse ``model`` with the free dims the caller declared (:func:`acekit.dims.declaring`).

    The graph's types stay at the example's sizes: the caller generalizes them
    (``acekit.compile`` does, after logging which dims are free). ``inputs`` must have
    passed :func:`check_example_inputs`.
    """
    return _resolve_parser(model, inputs, parser).parse(model, inputs)


def input_names(model: Any, count: int) -> list[str]:
    """The names of ``model.forward``'s first ``count`` inputs (``input_<i>`` where the
    signature has none), as ``dynamic_shapes`` dicts and error messages name them."""
    forward = getattr(model, "forward", None)
    try:
        params = list(inspect.signature(forward).parameters) if forward is not None else []
    except (TypeError, ValueError):
        params = []
    found = [p for p in params if p not in ("self", "args", "kwargs")][:count]
    return found + [f"input_{i}" for i in range(len(found), count)]


def check_example_inputs(model: Any, example_inputs: Any) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, after checking types and arity against the model.

    Raises :class:`ExampleInputsError` naming the model's class and what it expected.
    """
    name = type(model).__name__
    if isinstance(example_inputs, torch.Tensor):
        inputs: tuple[Any, ...] = (example_inputs,)
    elif isinstance(example_inputs, list | tuple):
        inputs = tuple(example_inputs)
    else:
        raise ExampleInputsError(
            f"example inputs for {name!r} must be a tensor or a tuple of tensors in the "
            f"order forward() takes them, got {type(example_inputs).__name__}"
        )
    for i, item in enumerate(inputs):
        if not isinstance(item, torch.Tensor):
            raise ExampleInputsError(
                f"example input {i} for {name!r} is a {type(item).__name__}, not a tensor: "
                "pass tensors only (a model option belongs in its constructor)"
            )
    forward = getattr(model, "forward", None)
    if isinstance(model, torch.nn.Module) and callable(forward):
        _check_arity(name, forward, len(inputs))
    return inputs


def _check_arity(name: str, forward: Any, count: int) -> None:
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):  # builtins and some C extensions have none
        return
    kinds = inspect.Parameter
    params = list(signature.parameters.values())
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind is kinds.VAR_POSITIONAL for p in params)
    keyword_only = [p for p in params if p.kind is kinds.KEYWORD_ONLY and p.default is p.empty]
    described = f"{name}.forward({', '.join(p.name for p in positional)})"
    if keyword_only:
        raise ExampleInputsError(
            f"{described} has required keyword-only arguments "
            f"({', '.join(p.name for p in keyword_only)}) that example inputs cannot fill"
        )
    if count < len(required):
        missing = ", ".join(p.name for p in required[count:])
        raise ExampleInputsError(
            f"{described} needs {len(required)} input(s), got {count} example input(s): "
            f"missing {missing}"
        )
    if not varargs and count > len(positional):
        raise ExampleInputsError(
            f"{described} takes at most {len(positional)} input(s), got {count} example inputs"
        )


def _resolve_parser(model: Any, inputs: tuple[Any, ...], parser: str | Parser | None) -> Parser:
    if parser is not None and not isinstance(parser, str):
        if not callable(getattr(parser, "parse", None)):
            raise TypeError(f"parser must be a name or an object with parse(), got {parser!r}")
        return parser
    from acekit.plugin import get_plugin_manager

    manager = get_plugin_manager()
    parsers = manager.registry.parsers
    name = parser if parser is not None else manager.choose_parser(model, inputs)
    if name is None:
        raise ParseError(
            f"no installed parser accepts a {type(model).__name__}; installed parsers: "
            f"{_names(list(parsers))}"
        )
    try:
        return parsers[name]
    except KeyError:
        raise ParseError(
            f"no parser called {name!r} is installed; installed parsers: {_names(list(parsers))}"
        ) from None


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none (is the acekit_fx plugin installed?)"
