"""The ``clika`` torch.compile backend: ``torch.compile(model, backend="clika")``.

Registered in the ``torch_dynamo_backends`` entry-point group, so torch finds it by name
without ``import acekit``. Dynamo hands the backend the captured graph; the backend runs
the whole acekit job on it (parse, clean, quantize, calibrate with
``options["calibration_inputs"]``) and the compiled model then runs the
:class:`~acekit.runtime.quantized.QuantizedModule`.

torch.compile is lazy: the job runs on the first call. After it, the compiled module
also answers ``export(path)``, ``visualize(path)``, ``save(path)`` and
``quantized_module()``, which torch's ``OptimizedModule`` gains when this backend is
looked up (they defer to the user's model for any module compiled with another backend).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from acekit.runtime.quantized import QuantizedModule

__all__ = ["ClikaBackendError", "clika_backend", "quantized_module"]

#: Options ``torch.compile(..., options=...)`` may give, passed to ``acekit.compile``.
OPTIONS = ("settings", "calibration_inputs", "select", "pipeline", "logs_dir")

# id of a parameter dynamo lifted from a user's model -> (weak ref to it, the
# QuantizedModule made for it). Keyed by id because tensors compare elementwise; the
# entry goes when the parameter is collected.
_COMPILED: dict[int, tuple[weakref.ref[Any], QuantizedModule]] = {}


def _remember(parameter: torch.Tensor | torch.nn.Module, module: QuantizedModule) -> None:
    key = id(parameter)
    _COMPILED[key] = (weakref.ref(parameter, lambda _: _COMPILED.pop(key, None)), module)


def _lookup(parameter: torch.Tensor | torch.nn.Module) -> QuantizedModule | None:
    entry = _COMPILED.get(id(parameter))
    if entry is None or entry[0]() is not parameter:
        return None
    return entry[1]


class ClikaBackendError(RuntimeError):
    """The clika backend was used wrongly (unknown option, asked before the first call)."""


def clika_backend(
    gm: torch.fx.GraphModule,
    example_inputs: list[Any],
    options: Mapping[str, Any] | None = None,
    **unused: Any,
) -> Callable[..., Any]:
    """Quantize the graph dynamo captured; return the function dynamo calls instead."""
    from acekit_fx.dynamo import user_input_positions

    given = dict(options or {})
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ClikaBackendError(
            f"unknown clika backend option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    positions = user_input_positions(gm, example_inputs)
    lifted = [
        example
        for i, example in enumerate(example_inputs)
        if i not in positions and isinstance(example, torch.nn.Parameter)
    ]
    graph_break = _graph_break()
    if graph_break is not None:
        raise ClikaBackendError(
            f"dynamo split the model's forward into partial graphs ({graph_break}); the "
            "clika backend quantizes a whole forward, calibrated with the model's inputs. "
            "Remove the graph break, or quantize with acekit.compile(model, "
            "example_inputs=..., calibration_inputs=...), which parses the whole model"
        )
    owner = _whole_module()
    # Dynamo compiles the whole forward again when a guard fails (train/eval, grad mode,
    # new shapes): the model keeps the QuantizedModule it has, scales and training
    # included.
    module = None
    if owner is not None:
        module = next((m for m in map(_lookup, lifted) if m is not None), None)
    if module is None:
        module = _quantize(gm, example_inputs, positions, given, owner)
        for parameter in lifted:
            _remember(parameter, module)
        if owner is not None:
            # Exporters swap the parameters for their own tensors: found by module too.
            _remember(owner, module)

    def run(*args: Any) -> Any:
        result = module(*(args[i] for i in positions))
        return result if isinstance(result, tuple) else (result,)

    return run


def _quantize(
    gm: torch.fx.GraphModule,
    example_inputs: list[Any],
    positions: list[int],
    options: Mapping[str, Any],
    owner: torch.nn.Module | None,
) -> QuantizedModule:
    """Run acekit's job on the graph dynamo captured (on ``owner`` when it is whole)."""
    from acekit.api import parse_as_declared
    from acekit.quant.compile import quantize_parsed
    from acekit_fx.dynamo import classify_placeholder, parse_dynamo_graph

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    names = [classify_placeholder(placeholders[i], example_inputs[i])[1] for i in positions]
    inputs = tuple(example_inputs[i] for i in positions)
    if owner is not None:
        # Dynamo captured the module's whole forward: parse the module itself, so the
        # graph, its names and the log are exactly those of acekit.compile(model).
        def parse_model() -> Any:
            return parse_as_declared(owner, inputs)
    else:

        def parse_model() -> Any:
            return parse_dynamo_graph(gm, example_inputs)

    return quantize_parsed(
        parse_model,
        example_inputs=inputs,
        input_names=names,
        calibration_inputs=options.get("calibration_inputs"),
        settings=options.get("settings"),
        select=options.get("select"),
        pipeline=options.get("pipeline"),
        logs_dir=options.get("logs_dir", "logs"),
    )


def _whole_module() -> torch.nn.Module | None:
    """The module whose whole ``forward`` dynamo captured in one graph, else ``None``.

    Reads dynamo's translator (private API, so any surprise means ``None``): there is no
    graph break, and the frame compiled is ``forward`` of the module in ``self``.
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        translator = InstructionTranslator.current_tx()
        reason = translator.output.compile_subgraph_reason
        owner = translator.f_locals.get("self")
        whole = (
            reason is not None
            and not reason.graph_break
            and isinstance(owner, torch.nn.Module)
            and translator.f_code is type(owner).forward.__code__
        )
    except Exception:
        return None
    return owner if whole else None


def _graph_break() -> str | None:
    """Where and why dynamo broke the graph it hands over, or ``None`` for a whole graph.

    Reads dynamo's translator (private API, so any surprise means ``None``).
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        reason = InstructionTranslator.current_tx().output.compile_subgraph_reason
        if reason is None or not reason.graph_break:
            return None
        frame = reason.user_stack[-1] if reason.user_stack else None
        lines = str(reason.reason).strip().splitlines()
    except Exception:
        return None
    where = f" at {frame.filename}:{frame.lineno}" if frame is not None else ""
    return f"graph break{where}: {lines[0] if lines else 'unknown reason'}"


def quantized_module(compiled: torch.nn.Module) -> QuantizedModule:
    """The QuantizedModule behind a model compiled with ``backend="clika"``.

    Raises :class:`ClikaBackendError` before the compiled model's first call (dynamo
    compiles lazily) or for a model compiled with another backend.
    """
    original = getattr(compiled, "_orig_mod", compiled)
    whole = _lookup(original)
    if whole is not None:
        return whole
    for parameter in original.parameters():
        found = _lookup(parameter)
        if found is not None:
            return found
    raise ClikaBackendError(
        f"{type(original).__name__} has no clika-compiled module yet: torch.compile is lazy, "
        "call the compiled model once (the quantization runs on the first call)"
    )


def _method(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        original = getattr(self, "_orig_mod", None)
        try:
            module = quantized_module(self)
        except ClikaBackendError:
            own = getattr(original, name, None)
            if callable(own):  # the user's model has its own method of that name
                return own(*args, **kwargs)
            raise
        return getattr(module, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"QuantizedModule.{name} of a model compiled with backend='clika'."
    return method


def _install_methods() -> None:
    from torch._dynamo.eval_frame import OptimizedModule

    for name in ("export", "visualize", "save"):
        if not hasattr(OptimizedModule, name):
            setattr(OptimizedModule, name, _method(name))
    if not hasattr(OptimizedModule, "quantized_module"):
        OptimizedModule.quantized_module = quantized_module  # type: ignore[attr-defined]
    if not getattr(OptimizedModule.__call__, "_acekit_onnx_export", False):
        wrapped = _exported_through_quantized_module(OptimizedModule.__call__)
        OptimizedModule.__call__ = wrapped  # type: ignore[method-assign]
    initialize = getattr(OptimizedModule, "_initialize", None)
    if callable(initialize) and not getattr(initialize, "_acekit_onnx_export", False):
        wrapped = _forward_exported_through_quantized_module(initialize)
        OptimizedModule._initialize = wrapped  # type: ignore[method-assign]
    wrapper = getattr(torch, "_TorchCompileWrapper", None)
    equals = getattr(wrapper, "__eq__", None)
    if callable(equals) and not getattr(equals, "_acekit_tensor_options", False):
        wrapper.__eq__ = _equal_or_different(equals)  # type: ignore[method-assign]


def _equal_or_different(equals: Callable[..., bool]) -> Callable[..., bool]:
    """``_TorchCompileWrapper.__eq__`` that holds options with tensors in them different.

    Dynamo compares the backend of a cached compile with the new one when the same code
    (a second model of one class, a new shape) compiles again; torch compares the options
    with ``==``, which for two lists of calibration tensors raises "Boolean value of
    Tensor ... is ambiguous". Such options are different options.
    """

    def __eq__(self: Any, other: object) -> bool:
        try:
            return bool(equals(self, other))
        except RuntimeError:
            return False

    __eq__._acekit_tensor_options = True  # type: ignore[attr-defined]
    return __eq__


def _quantized_or_none(compiled: Any) -> QuantizedModule | None:
    try:
        return quantized_module(compiled)
    except ClikaBackendError:
        return None


def _exported_through_quantized_module(call: Callable[..., Any]) -> Callable[..., Any]:
    """``OptimizedModule.__call__`` that, under ``torch.onnx.export``, runs the QuantizedModule.

    torch refuses to trace a dynamo-optimized function (TorchScript-based exporter); a
    model compiled with ``backend="clika"`` is exported through its QuantizedModule
    instead, which writes the target's deployable model. Any other call is torch's own.
    """

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        module = _quantized_or_none(self) if torch.onnx.is_in_onnx_export() else None
        if module is not None:
            return module(*args, **kwargs)
        return call(self, *args, **kwargs)

    __call__._acekit_onnx_export = True  # type: ignore[attr-defined]
    return __call__


def _forward_exported_through_quantized_module(
    initialize: Callable[..., Any],
) -> Callable[..., Any]:
    """``OptimizedModule._initialize`` whose ``forward`` exports through the QuantizedModule.

    The torch.export-based exporter calls ``forward`` (which torch.export runs without
    dynamo, i.e. the float model); for a clika-compiled model it runs the QuantizedModule.
    """

    def _initialize(self: Any) -> None:
        initialize(self)
        forward = self.forward

        def exported_forward(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export():
                module = _quantized_or_none(self)
                if module is not None:
                    return module(*args, **kwargs)
            return forward(*args, **kwargs)

        self.forward = exported_forward

    _initialize._acekit_onnx_export = True  # type: ignore[attr-defined]
    return _initialize


_install_methods()
