"""Tensor metadata carried by every IR value: element type and (possibly symbolic) shape."""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch

#: A dimension is a concrete size or a symbol such as ``"batch"``.
Dim = int | str

_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "bool",
    torch.complex64: "c64",
}
_DTYPES_BY_NAME = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Return the short stable name of a torch dtype (``torch.float32`` -> ``"f32"``)."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of :func:`dtype_name`."""
    if name in _DTYPES_BY_NAME:
        return _DTYPES_BY_NAME[name]
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype name {name!r}")
    return dtype


def _to_shape(dims: Iterable[Dim] | None) -> tuple[Dim, ...] | None:
    if dims is None:
        return None
    shape = tuple(dims)
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int | str):
            raise TypeError(f"a dimension must be an int or a symbol name, got {dim!r}")
        if isinstance(dim, int) and dim < 0:
            raise ValueError(f"a dimension must be >= 0, got {dim}")
    return shape


@attrs.frozen
class TensorType:
    """The type of a tensor value: dtype and shape.

    ``shape`` is ``None`` when unknown (rank unknown too); single dimensions may be
    symbols (``"batch"``) when the size varies between calls.
    """

    dtype: torch.dtype | None = None
    shape: tuple[Dim, ...] | None = attrs.field(default=None, converter=_to_shape)

    @property
    def rank(self) -> int | None:
        """Number of dimensions, or ``None`` when the shape is unknown."""
        return None if self.shape is None else len(self.shape)

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorType:
        """The concrete type of ``tensor``."""
        return cls(tensor.dtype, tuple(tensor.shape))

    def __str__(self) -> str:
        dtype = "?" if self.dtype is None else dtype_name(self.dtype)
        if self.shape is None:
            return f"{dtype}[*]"
        return f"{dtype}[{','.join(str(d) for d in self.shape)}]"


#: The type of a value about which nothing is known yet.
UNKNOWN = TensorType()
