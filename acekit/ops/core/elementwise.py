"""Elementwise arithmetic, comparisons and math (tensors and python scalars alike)."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

from acekit.ir.tensor_type import dtype_from_name
from acekit.ops.opdef import KernelFn, OpDef
from acekit.ops.schemas import (
    DTYPE,
    FLOAT,
    STR,
    OpSchema,
    binary,
    unary,
)


def add(input: Any, other: Any, *, alpha: float | None = None) -> Any:
    """``input + alpha * other``."""
    if alpha is None or alpha == 1:
        return input + other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.add(torch.as_tensor(input), other, alpha=alpha)
    return input + alpha * other


def sub(input: Any, other: Any, *, alpha: float | None = None) -> Any:
    """``input - alpha * other``."""
    if alpha is None or alpha == 1:
        return input - other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.sub(torch.as_tensor(input), other, alpha=alpha)
    return input - alpha * other


def div(input: Any, other: Any, *, rounding_mode: str | None = None) -> Any:
    """True division, or rounded division when ``rounding_mode`` is given."""
    if rounding_mode is None:
        return input / other
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        return torch.div(torch.as_tensor(input), other, rounding_mode=rounding_mode)
    if rounding_mode == "floor":
        return input // other
    return math.trunc(input / other)


def _binary_operator(op: str, fn: Any) -> KernelFn:
    def kernel(input: Any, other: Any) -> Any:
        return fn(input, other)

    kernel.__name__ = kernel.__qualname__ = f"binary_{op}"
    kernel.__doc__ = f"``{op}`` with Python operator semantics (tensors and scalars)."
    globals()[kernel.__name__] = kernel  # generated modules import kernels by name
    return kernel


_OPERATORS: dict[str, Any] = {
    "mul": operator.mul,
    "floor_divide": operator.floordiv,
    "remainder": operator.mod,
    "pow": operator.pow,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "bitwise_and": operator.and_,
    "bitwise_or": operator.or_,
    "bitwise_xor": operator.xor,
}
_BINARY = {name: _binary_operator(name, fn) for name, fn in _OPERATORS.items()}


def _either_tensor(*values: Any) -> bool:
    return any(isinstance(v, Tensor) for v in values)


def logical_and(input: Any, other: Any) -> Any:
    """Logical and of tensors or python bools."""
    if _either_tensor(input, other):
        return torch.logical_and(torch.as_tensor(input), torch.as_tensor(other))
    return bool(input) and bool(other)


def logical_or(input: Any, other: Any) -> Any:
    """Logical or of tensors or python bools."""
    if _either_tensor(input, other):
        return torch.logical_or(torch.as_tensor(input), torch.as_tensor(other))
    return bool(input) or bool(other)


def bitwise_not(input: Tensor) -> Tensor:
    """``~input`` (``torch.bitwise_not``)."""
    return torch.bitwise_not(input)


def logical_not(input: Any) -> Any:
    """Logical not of a tensor or python bool."""
    return torch.logical_not(input) if isinstance(input, Tensor) else not input


def maximum(input: Any, other: Any) -> Any:
    """Elementwise maximum."""
    if _either_tensor(input, other):
        return torch.maximum(torch.as_tensor(input), torch.as_tensor(other))
    return max(input, other)


def minimum(input: Any, other: Any) -> Any:
    """Elementwise minimum."""
    if _either_tensor(input, other):
        return torch.minimum(torch.as_tensor(input), torch.as_tensor(other))
    return min(input, other)


def neg(input: Any) -> Any:
    """``-input``."""
    return -input


def abs_(input: Any) -> Any:
    """``abs(input)``."""
    return abs(input)


def _math_unary(op: str, tensor_fn: Any, scalar_fn: Any) -> KernelFn:
    def kernel(input: Any) -> Any:
        return tensor_fn(input) if isinstance(input, Tensor) else scalar_fn(input)

    kernel.__name__ = kernel.__qualname__ = f"unary_{op}"
    kernel.__doc__ = f"``torch.{op}`` (math.{op} for python scalars)."
    globals()[kernel.__name__] = kernel
    return kernel


# ONNX lowerings of the math torch's (TorchScript-based) ONNX exporter cannot write.


def expm1_onnx(input: Tensor) -> Tensor:
    """``exp(x) - 1``."""
    return torch.exp(input) - 1


def sinh_onnx(input: Tensor) -> Tensor:
    """``(exp(x) - exp(-x)) / 2``."""
    return (torch.exp(input) - torch.exp(-input)) / 2


def cosh_onnx(input: Tensor) -> Tensor:
    """``(exp(x) + exp(-x)) / 2``."""
    return (torch.exp(input) + torch.exp(-input)) / 2


def asinh_onnx(input: Tensor) -> Tensor:
    """``log(x + sqrt(x^2 + 1))``."""
    return torch.log(input + torch.sqrt(input * input + 1))


def acosh_onnx(input: Tensor) -> Tensor:
    """``log(x + sqrt(x^2 - 1))``."""
    return torch.log(input + torch.sqrt(input * input - 1))


def atanh_onnx(input: Tensor) -> Tensor:
    """``log((1 + x) / (1 - x)) / 2``."""
    return torch.log((1 + input) / (1 - input)) / 2


def trunc_onnx(input: Tensor) -> Tensor:
    """Rounding towards zero: ``ceil`` below zero, ``floor`` above."""
    return torch.where(input < 0, torch.ceil(input), torch.floor(input))


def bitwise_xor_onnx(input: Any, other: Any) -> Any:
    """``Xor`` for bools (ONNX has no integer xor before opset 18)."""
    if isinstance(input, Tensor) and input.dtype == torch.bool:
        return torch.logical_xor(input, torch.as_tensor(other))
    return operator.xor(input, other)


_ONNX_LOWERINGS: dict[str, KernelFn] = {
    "expm1": expm1_onnx,
    "sinh": sinh_onnx,
    "cosh": cosh_onnx,
    "asinh": asinh_onnx,
    "acosh": acosh_onnx,
    "atanh": atanh_onnx,
    "trunc": trunc_onnx,
}

#: Unary math the core ATen opset has, beyond the ops the zoo models need most:
#: (op, torch function, python scalar function, other torch names).
_MORE_MATH: tuple[tuple[str, Any, Any, tuple[Any, ...]], ...] = (
    ("tan", torch.tan, math.tan, ()),
    ("atan", torch.atan, math.atan, (torch.arctan,)),
    ("asin", torch.asin, math.asin, (torch.arcsin,)),
    ("acos", torch.acos, math.acos, (torch.arccos,)),
    ("sinh", torch.sinh, math.sinh, ()),
    ("cosh", torch.cosh, math.cosh, ()),
    ("asinh", torch.asinh, math.asinh, (torch.arcsinh,)),
    ("acosh", torch.acosh, math.acosh, (torch.arccosh,)),
    ("atanh", torch.atanh, math.atanh, (torch.arctanh,)),
    ("log1p", torch.log1p, math.log1p, (torch.special.log1p,)),
    ("log2", torch.log2, math.log2, ()),
    ("log10", torch.log10, math.log10, ()),
    ("expm1", torch.expm1, math.expm1, (torch.special.expm1,)),
    ("sign", torch.sign, lambda v: (v > 0) - (v < 0), ()),
    ("trunc", torch.trunc, math.trunc, (torch.fix,)),
    ("round", torch.round, round, ()),
    ("isnan", torch.isnan, math.isnan, ()),
    ("isinf", torch.isinf, math.isinf, ()),
)

_UNARY = {
    op: _math_unary(op, tensor_fn, scalar_fn)
    for op, tensor_fn, scalar_fn in (
        ("exp", torch.exp, math.exp),
        ("log", torch.log, math.log),
        ("sqrt", torch.sqrt, math.sqrt),
        ("rsqrt", torch.rsqrt, lambda v: 1.0 / math.sqrt(v)),
        ("reciprocal", torch.reciprocal, lambda v: 1.0 / v),
        ("erf", torch.erf, math.erf),
        ("sin", torch.sin, math.sin),
        ("cos", torch.cos, math.cos),
        ("floor", torch.floor, math.floor),
        ("ceil", torch.ceil, math.ceil),
    )
} | {op: _math_unary(op, tensor_fn, scalar_fn) for op, tensor_fn, scalar_fn, _ in _MORE_MATH}


def _math_binary(op: str, tensor_fn: Any, scalar_fn: Any) -> KernelFn:
    def kernel(input: Any, other: Any) -> Any:
        if _either_tensor(input, other):
            return tensor_fn(torch.as_tensor(input), torch.as_tensor(other))
        return scalar_fn(input, other)

    kernel.__name__ = kernel.__qualname__ = f"binary_{op}"
    kernel.__doc__ = f"``torch.{op}`` (math.{op} for python scalars)."
    globals()[kernel.__name__] = kernel
    return kernel


_MATH_BINARY = {
    "fmod": _math_binary("fmod", torch.fmod, math.fmod),
    "atan2": _math_binary("atan2", torch.atan2, math.atan2),
    "logical_xor": _math_binary("logical_xor", torch.logical_xor, lambda a, b: bool(a) != bool(b)),
}


def clamp(input: Tensor, *, min: float | None = None, max: float | None = None) -> Tensor:
    """``torch.clamp``."""
    return torch.clamp(input, min, max)


def to(input: Tensor, *, dtype: str | None = None) -> Tensor:
    """Cast to ``dtype`` (a short dtype name)."""
    return input if dtype is None else input.to(dtype_from_name(dtype))


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    """``torch.where``."""
    return torch.where(condition, input, other)


def masked_fill(
    input: Tensor, mask: Tensor, value_input: Tensor | None = None, *, value: float | None = None
) -> Tensor:
    """``input.masked_fill(mask, value)``."""
    fill = value_input if value_input is not None else value
    assert fill is not None, "masked_fill needs a value"
    return input.masked_fill(mask, fill)


DEFINITIONS = [
    OpDef(
        binary("add", alpha=FLOAT, doc="input + alpha * other (tensors or python scalars)."),
        kernel=add,
        functions=(
            operator.add,
            operator.iadd,
            torch.add,
        ),
        methods=(
            "add",
            "__add__",
        ),
        aten=("add",),
    ),
    OpDef(
        binary("sub", alpha=FLOAT, doc="input - alpha * other."),
        kernel=sub,
        functions=(
            operator.sub,
            operator.isub,
            torch.sub,
            torch.subtract,
        ),
        methods=(
            "sub",
            "subtract",
        ),
        aten=("sub",),
    ),
    OpDef(
        binary("mul"),
        kernel=_BINARY["mul"],
        functions=(
            operator.mul,
            operator.imul,
            torch.mul,
            torch.multiply,
        ),
        methods=(
            "mul",
            "multiply",
        ),
        aten=("mul",),
    ),
    OpDef(
        binary("div", rounding_mode=STR),
        kernel=div,
        functions=(
            operator.truediv,
            operator.itruediv,
            torch.div,
            torch.divide,
            torch.true_divide,
        ),
        methods=(
            "div",
            "divide",
            "true_divide",
        ),
        aten=("div",),
    ),
    OpDef(
        binary("floor_divide"),
        kernel=_BINARY["floor_divide"],
        functions=(
            operator.floordiv,
            operator.ifloordiv,
            torch.floor_divide,
        ),
        methods=("floor_divide",),
        aten=("floor_divide",),
    ),
    OpDef(
        binary("remainder"),
        kernel=_BINARY["remainder"],
        functions=(
            operator.mod,
            torch.remainder,
        ),
        methods=("remainder",),
        aten=("remainder",),
    ),
    OpDef(
        binary("pow"),
        kernel=_BINARY["pow"],
        functions=(
            operator.pow,
            torch.pow,
        ),
        methods=("pow",),
        aten=("pow",),
    ),
    OpDef(
        binary("eq"),
        kernel=_BINARY["eq"],
        functions=(
            operator.eq,
            torch.eq,
        ),
        methods=("eq",),
        aten=("eq",),
    ),
    OpDef(
        binary("ne"),
        kernel=_BINARY["ne"],
        functions=(
            operator.ne,
            torch.ne,
            torch.not_equal,
        ),
        methods=("ne",),
        aten=("ne",),
    ),
    OpDef(
        binary("lt"),
        kernel=_BINARY["lt"],
        functions=(
            operator.lt,
            torch.lt,
            torch.less,
        ),
        methods=("lt",),
        aten=("lt",),
    ),
    OpDef(
        binary("le"),
        kernel=_BINARY["le"],
        functions=(
            operator.le,
            torch.le,
            torch.less_equal,
        ),
        methods=("le",),
        aten=("le",),
    ),
    OpDef(
        binary("gt"),
        kernel=_BINARY["gt"],
        functions=(
            operator.gt,
            torch.gt,
            torch.greater,
        ),
        methods=("gt",),
        aten=("gt",),
    ),
    OpDef(
        binary("ge"),
        kernel=_BINARY["ge"],
        functions=(
            operator.ge,
            torch.ge,
            torch.greater_equal,
        ),
        methods=("ge",),
        aten=("ge",),
    ),
    OpDef(
        binary("logical_and"),
        kernel=logical_and,
        functions=(torch.logical_and,),
        methods=("logical_and",),
        aten=("logical_and",),
    ),
    OpDef(
        binary("logical_or"),
        kernel=logical_or,
        functions=(torch.logical_or,),
        methods=("logical_or",),
        aten=("logical_or",),
    ),
    OpDef(
        binary("bitwise_and"),
        kernel=_BINARY["bitwise_and"],
        functions=(
            operator.and_,
            torch.bitwise_and,
        ),
        methods=(
            "bitwise_and",
            "__and__",
        ),
        aten=(
            "bitwise_and",
            "__and__",
        ),
    ),
    OpDef(
        binary("bitwise_or"),
        kernel=_BINARY["bitwise_or"],
        functions=(
            operator.or_,
            torch.bitwise_or,
        ),
        methods=(
            "bitwise_or",
            "__or__",
        ),
        aten=(
            "bitwise_or",
            "__or__",
        ),
    ),
    OpDef(
        binary("maximum"),
        kernel=maximum,
        functions=(torch.maximum,),
        methods=("maximum",),
        aten=(
            "maximum",
            "max.other",
        ),
    ),
    OpDef(
        binary("minimum"),
        kernel=minimum,
        functions=(torch.minimum,),
        methods=("minimum",),
        aten=(
            "minimum",
            "min.other",
        ),
    ),
    OpDef(
        unary("logical_not"),
        kernel=logical_not,
        functions=(torch.logical_not,),
        methods=("logical_not",),
        aten=("logical_not",),
    ),
    OpDef(
        unary("bitwise_not", doc="~input: bitwise not of integers, logical not of bools."),
        kernel=bitwise_not,
        functions=(
            torch.bitwise_not,
            operator.invert,
        ),
        methods=("bitwise_not",),
        aten=("bitwise_not",),
    ),
    OpDef(
        unary("neg"),
        kernel=neg,
        functions=(
            operator.neg,
            torch.neg,
            torch.negative,
        ),
        methods=("neg",),
        aten=("neg",),
    ),
    OpDef(
        unary("abs"),
        kernel=abs_,
        functions=(abs, torch.abs, operator.abs),
        methods=("abs",),
        aten=("abs",),
    ),
    OpDef(
        unary("exp"),
        kernel=_UNARY["exp"],
        functions=(torch.exp,),
        methods=("exp",),
        aten=("exp",),
    ),
    OpDef(
        unary("log"),
        kernel=_UNARY["log"],
        functions=(torch.log,),
        methods=("log",),
        aten=("log",),
    ),
    OpDef(
        unary("sqrt"),
        kernel=_UNARY["sqrt"],
        functions=(torch.sqrt,),
        methods=("sqrt",),
        aten=("sqrt",),
    ),
    OpDef(
        unary("rsqrt"),
        kernel=_UNARY["rsqrt"],
        functions=(torch.rsqrt,),
        methods=("rsqrt",),
        aten=("rsqrt",),
    ),
    OpDef(
        unary("reciprocal"),
        kernel=_UNARY["reciprocal"],
        functions=(torch.reciprocal,),
        methods=("reciprocal",),
        aten=("reciprocal",),
    ),
    OpDef(
        unary("erf"),
        kernel=_UNARY["erf"],
        functions=(
            torch.erf,
            torch.special.erf,
        ),
        methods=("erf",),
        aten=("erf",),
    ),
    OpDef(
        unary("sin"),
        kernel=_UNARY["sin"],
        functions=(torch.sin,),
        methods=("sin",),
        aten=("sin",),
    ),
    OpDef(
        unary("cos"),
        kernel=_UNARY["cos"],
        functions=(torch.cos,),
        methods=("cos",),
        aten=("cos",),
    ),
    OpDef(
        unary("floor"),
        kernel=_UNARY["floor"],
        functions=(torch.floor, math.floor),  # math.*: shape arithmetic (ceil(H / stride))
        methods=("floor",),
        aten=("floor",),
    ),
    OpDef(
        unary("ceil"),
        kernel=_UNARY["ceil"],
        functions=(torch.ceil, math.ceil),  # math.*: shape arithmetic (ceil(H / stride))
        methods=("ceil",),
        aten=("ceil",),
    ),
    OpDef(
        unary("clamp", min=FLOAT, max=FLOAT),
        kernel=clamp,
        functions=(
            torch.clamp,
            torch.clip,
        ),
        methods=(
            "clamp",
            "clip",
        ),
        aten=("clamp",),
    ),
    OpDef(
        unary("to", dtype=DTYPE, doc="Casts to dtype (device moves are the module's business)."),
        kernel=to,
        methods=(
            "to",
            "type",
            "float",
            "double",
            "half",
            "bfloat16",
            "int",
            "long",
            "short",
            "bool",
            "byte",
            "type_as",
        ),
    ),
    OpDef(
        OpSchema(
            "where",
            ("condition", "input", "other"),
            doc="condition ? input : other; input/other may be python-scalar constant nodes.",
        ),
        kernel=where,
        functions=(torch.where,),
        aten=("where",),
    ),
    OpDef(
        OpSchema(
            "masked_fill",
            ("input", "mask", "value"),
            {"value": FLOAT},
            optional_inputs=1,
            doc="Fills where mask is true: value attribute, or a 0-d tensor input.",
        ),
        kernel=masked_fill,
        functions=(torch.masked_fill,),
        methods=("masked_fill",),
        aten=("masked_fill",),
    ),
]

DEFINITIONS += [
    OpDef(
        unary(op),
        kernel=_UNARY[op],
        functions=(tensor_fn, *aliases),
        methods=(op,),
        aten=(op,),
        onnx=_ONNX_LOWERINGS.get(op),
    )
    for op, tensor_fn, _, aliases in _MORE_MATH
]
DEFINITIONS += [
    OpDef(
        binary("bitwise_xor"),
        kernel=_BINARY["bitwise_xor"],
        functions=(operator.xor, torch.bitwise_xor),
        methods=("bitwise_xor", "__xor__"),
        aten=("bitwise_xor", "__xor__"),
        onnx=bitwise_xor_onnx,
    ),
    OpDef(
        binary("logical_xor"),
        kernel=_MATH_BINARY["logical_xor"],
        functions=(torch.logical_xor,),
        methods=("logical_xor",),
        aten=("logical_xor",),
    ),
    OpDef(
        binary("fmod", doc="Remainder with the sign of input (C fmod)."),
        kernel=_MATH_BINARY["fmod"],
        functions=(torch.fmod,),
        methods=("fmod",),
        aten=("fmod",),
    ),
    OpDef(
        binary("atan2"),
        kernel=_MATH_BINARY["atan2"],
        functions=(torch.atan2, torch.arctan2),
        methods=("atan2", "arctan2"),
        aten=("atan2",),
    ),
]
