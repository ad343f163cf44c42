"""``torch.onnx.export(qm, args, f)`` writes what ``qm.export(f)`` writes.

Users deploy the way they always have: with ``torch.onnx.export``. A
:class:`~acekit.runtime.quantized.QuantizedModule`'s forward, while an exporter traces
it, lowers the graph with the settings' target (the same call ``qm.export`` makes) and
hands the result to torch node by node:

* the TorchScript-based exporter (``dynamo=False``) meets one op,
  :class:`DeployedModel`, whose symbolic function re-emits the target's model (its
  initializers become ``Constant`` nodes);
* the torch.export-based exporter (the default) records each node as
  ``torch.onnx.ops.symbolic`` with the initializers as constants.

Either way the file holds the target's nodes: integer weights behind
``DequantizeLinear``, biases as its rules say. What cannot be re-emitted (an attribute
torch cannot carry, a target writing another format) fails with one line naming the
calls that work (:data:`EXPORT_HINT`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import onnx
import torch
from onnx import helper, numpy_helper

#: What to call instead of an export that cannot write the deployable model.
EXPORT_HINT = (
    "use qm.export(path) (the deployable model for the settings' target), or "
    "torch.onnx.export(qm, args, path, dynamo=False), which writes the same model"
)

# Lowering callbacks of the modules being exported (torch passes only plain values to
# a symbolic function; the key is one of them).
_LOWERINGS: dict[int, tuple[Callable[[int], onnx.ModelProto], Callable[..., Any]]] = {}


class TorchOnnxExportError(RuntimeError):
    """A QuantizedModule was given to an exporter that cannot write its deployable model."""


def deployed_forward(
    key: int,
    lower: Callable[[int], onnx.ModelProto],
    simulate: Callable[..., Any],
    inputs: Sequence[torch.Tensor],
) -> Any:
    """The module's output while torch's TorchScript-based exporter traces it.

    ``lower(opset)`` returns the target's ONNX model; ``simulate`` computes the values
    the trace records (shapes and dtypes of the outputs).
    """
    _LOWERINGS[key] = (lower, simulate)
    # The simulated outputs give the trace its shapes and dtypes. They are computed
    # untraced and go in as (constant) arguments that the symbolic function ignores,
    # so torch drops them; the module's tensors never enter the trace.
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)  # type: ignore[attr-defined]
    try:
        with torch.no_grad():
            outputs = simulate(*inputs)
    finally:
        torch._C._set_tracing_state(state)  # type: ignore[attr-defined]
    flat = outputs if isinstance(outputs, tuple) else (outputs,)
    results = DeployedModel.apply(key, len(inputs), *inputs, *flat)
    return results


class DeployedModel(torch.autograd.Function):
    """One traced op standing for the whole deployed model (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, key: int, count: int, *tensors: torch.Tensor) -> Any:
        """The simulated outputs (given after the ``count`` inputs)."""
        outputs = tuple(t.clone() for t in tensors[count:])
        return outputs[0] if len(outputs) == 1 else outputs

    @staticmethod
    def symbolic(g: Any, key: int, count: int, *tensors: Any) -> Any:
        """Emit the target's exported model, node by node, into torch's ONNX graph."""
        entry = _LOWERINGS.pop(key, None)
        if entry is None:
            raise TorchOnnxExportError(f"the model to export was lost; {EXPORT_HINT}")
        lower = entry[0]
        with _outer_export_kept():
            model = lower(int(g.opset))
        outputs = _emit(g, model, tensors[:count])
        return outputs[0] if len(outputs) == 1 else outputs


@contextlib.contextmanager
def _outer_export_kept() -> Iterator[None]:
    """Run a nested TorchScript-based export without ending the one in progress."""
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    saved = dict(vars(GLOBALS))
    GLOBALS.in_onnx_export = False
    try:
        yield
    finally:
        vars(GLOBALS).update(saved)


def _emit(g: Any, model: onnx.ModelProto, inputs: Sequence[Any]) -> tuple[Any, ...]:
    graph = model.graph
    if len(graph.input) != len(inputs):
        raise TorchOnnxExportError(
            f"the deployed model takes {len(graph.input)} inputs, the call gave {len(inputs)}"
        )
    env: dict[str, Any] = dict(zip((proto.name for proto in graph.input), inputs, strict=True))
    for init in graph.initializer:
        array = numpy_helper.to_array(init).copy()
        env[init.name] = g.op("Constant", value_t=torch.from_numpy(array))
    for node in graph.node:
        if any(not name for name in node.input):
            raise TorchOnnxExportError(
                f"node {node.name} ({node.op_type}) has an omitted optional input; " + EXPORT_HINT
            )
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        attributes = dict(_attribute(node, a) for a in node.attribute)
        results = g.op(
            op, *(env[name] for name in node.input), outputs=len(node.output), **attributes
        )
        values = results if len(node.output) > 1 else (results,)
        env.update(zip(node.output, values, strict=True))
    return tuple(env[out.name] for out in graph.output)


def _attribute(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> tuple[str, Any]:
    """``(name_suffix, value)`` as ``g.op`` takes an ONNX attribute."""
    kinds = onnx.AttributeProto
    value = helper.get_attribute_value(attribute)
    suffix = {
        kinds.INT: "i",
        kinds.INTS: "i",
        kinds.FLOAT: "f",
        kinds.FLOATS: "f",
        kinds.STRING: "s",
        kinds.STRINGS: "s",
        kinds.TENSOR: "t",
    }.get(attribute.type)
    if suffix is None:
        raise TorchOnnxExportError(
            f"node {node.name} ({node.op_type}) has a {kinds.AttributeType.Name(attribute.type)} "
            f"attribute torch cannot re-emit; {EXPORT_HINT}"
        )
    if attribute.type == kinds.STRING:
        value = value.decode()
    elif attribute.type == kinds.STRINGS:
        value = [v.decode() for v in value]
    elif attribute.type == kinds.TENSOR:
        value = torch.from_numpy(numpy_helper.to_array(value).copy())
    return f"{attribute.name}_{suffix}", value


def deployed_symbolic(
    lower: Callable[[int | None], onnx.ModelProto], inputs: Sequence[torch.Tensor]
) -> Any:
    """The deployed model as ``torch.onnx.ops.symbolic`` nodes (torch.export-based exporter)."""
    with _outside_export_tracing(), _outer_export_kept():
        model = lower(None)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
    types = {
        info.name: info.type.tensor_type
        for info in (*inferred.graph.value_info, *inferred.graph.output)
    }
    graph = model.graph
    env: dict[str, Any] = dict(zip((proto.name for proto in graph.input), inputs, strict=True))
    for init in graph.initializer:
        env[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    for node in graph.node:
        if node.op_type == "Constant":
            env[node.output[0]] = torch.from_numpy(
                numpy_helper.to_array(helper.get_attribute_value(node.attribute[0])).copy()
            )
            continue
        if len(node.output) != 1:
            raise TorchOnnxExportError(
                f"node {node.name} ({node.op_type}) has {len(node.output)} outputs; {EXPORT_HINT}"
            )
        tensor_type = types[node.output[0]]
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor_type.shape.dim]
        attributes = {a.name: _plain(node, a) for a in node.attribute}
        env[node.output[0]] = torch.onnx.ops.symbolic(
            f"{node.domain}::{node.op_type}",
            [env[name] for name in node.input],
            attributes,
            dtype=tensor_type.elem_type,
            shape=shape,
        )
    outputs = tuple(env[out.name] for out in graph.output)
    return outputs[0] if len(outputs) == 1 else outputs


@contextlib.contextmanager
def _outside_export_tracing() -> Iterator[None]:
    """Run real torch code (a nested export) while torch.export traces: no modes active."""
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing
    from torch.overrides import _get_current_function_mode_stack, _pop_mode, _push_mode
    from torch.utils._python_dispatch import _disable_current_modes

    function_modes = [_pop_mode() for _ in _get_current_function_mode_stack()]
    try:
        with disable_proxy_modes_tracing(), _disable_current_modes():
            yield
    finally:
        for mode in reversed(function_modes):
            _push_mode(mode)


def _plain(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, int | float | str | list):
        return value
    raise TorchOnnxExportError(
        f"node {node.name} ({node.op_type}) has an attribute torch.export cannot carry; "
        + EXPORT_HINT
    )
