"""An op of the example plugin: ``hard_swish_clamp``, a fused activation of its own library.

``acekit_example::hard_swish_clamp(x, max_val)`` is ``min(hardswish(x), max_val)``, a
torch custom op (``torch.library``) that models call as
``torch.ops.acekit_example.hard_swish_clamp(x, 4.0)`` or through :func:`hard_swish_clamp`.
Importing this module defines it for torch; :data:`HARD_SWISH_CLAMP` defines it for
acekit, in one place:

- the schema: one tensor input, a float attribute ``max_val``;
- the kernel the simulation (calibration, QAT, ``qm(x)``) runs: the library's op itself;
- ``aten``: the parsers find the op under its qualified name (torch.fx records the call
  as ``torch.ops.acekit_example.hard_swish_clamp``, torch.export as its ``.default``
  overload, TorchScript as ``acekit_example::hard_swish_clamp``) and bind ``(x, max_val)``
  to ``(input, max_val)``;
- ``onnx``: torch's ONNX exporter knows nothing of the library, so ONNX targets lower
  the op to what it computes, ``HardSwish`` and ``Clip``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from acekit.ops import FLOAT, OpDef, unary

__all__ = ["HARD_SWISH_CLAMP", "hard_swish_clamp"]


@torch.library.custom_op("acekit_example::hard_swish_clamp", mutates_args=())
def hard_swish_clamp(x: torch.Tensor, max_val: float) -> torch.Tensor:
    """``min(hardswish(x), max_val)`` (the library's implementation)."""
    return torch.clamp(F.hardswish(x), max=max_val)


@hard_swish_clamp.register_fake
def _hard_swish_clamp_shape(x: torch.Tensor, max_val: float) -> torch.Tensor:
    # What torch.export traces with: the result has the input's shape and dtype.
    return torch.empty_like(x)


def _setup_backward(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.max_val = inputs[1]


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Quantization-aware training differentiates through the op: hardswish's slope,
    zero where the clamp cuts."""
    (x,) = ctx.saved_tensors
    slope = torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6))
    return grad * slope * (F.hardswish(x) < ctx.max_val), None


hard_swish_clamp.register_autograd(_backward, setup_context=_setup_backward)


def hard_swish_clamp_kernel(input: torch.Tensor, *, max_val: float = 6.0) -> torch.Tensor:
    """The IR op's kernel: the node's input, then its attributes as keywords."""
    return torch.ops.acekit_example.hard_swish_clamp(input, max_val)


def hard_swish_clamp_onnx(input: torch.Tensor, *, max_val: float = 6.0) -> torch.Tensor:
    """What ONNX exports trace instead of the kernel: ``HardSwish`` then ``Clip``."""
    return torch.clamp(F.hardswish(input), max=max_val)


#: The op's one definition, registered from ``acekit_register_ops``.
HARD_SWISH_CLAMP = OpDef(
    unary(
        "hard_swish_clamp",
        max_val=FLOAT,
        doc="min(hardswish(input), max_val): the example plugin's fused activation.",
    ),
    kernel=hard_swish_clamp_kernel,
    aten=("acekit_example::hard_swish_clamp",),
    onnx=hard_swish_clamp_onnx,
)
