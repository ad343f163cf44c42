"""Typed quantization facts attached to tensor edges of the graph."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs


class Granularity(enum.Enum):
    """How many (scale, zero-point) pairs a tensor has."""

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _ints(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) for v in values)


def _integer_range(bits: int, signed: bool, symmetric: bool) -> tuple[int, int]:
    # Imported here: acekit.quant imports this module (the IR is the lower floor).
    from acekit.quant.qmath import integer_range

    return integer_range(bits, signed=signed, symmetric=symmetric)


def _symmetric_zero_point(bits: int, signed: bool) -> int:
    from acekit.quant.qmath import symmetric_zero_point

    return symmetric_zero_point(bits, signed=signed)


@attrs.frozen
class QuantSpec:
    """How one tensor edge is quantized.

    The *what* (bits, signedness, symmetry, granularity) is decided when the graph is
    annotated with a target's rules; ``scale`` and ``zero_point`` are filled in once
    calibration has measured the tensor. ``skip=True`` records a decision to keep the
    edge in floating point (``reason`` says why, for the log and the picture).
    ``block_size`` (per channel only) gives each channel one scale per block of that
    many values (group-wise scales, :func:`acekit.quant.qmath.expand_blocks`): the
    scale then holds ``channels x blocks`` entries, channel-major.
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    granularity: Granularity = Granularity.PER_TENSOR
    axis: int | None = None
    scale: tuple[float, ...] | None = attrs.field(default=None, converter=_floats)
    zero_point: tuple[int, ...] | None = attrs.field(default=None, converter=_ints)
    skip: bool = False
    reason: str = ""
    block_size: int | None = None

    @classmethod
    def skipped(cls, reason: str = "") -> QuantSpec:
        """A spec that keeps the edge in floating point."""
        return cls(skip=True, reason=reason)

    @property
    def qmin(self) -> int:
        """Smallest integer of the quantized range (:func:`acekit.quant.qmath.integer_range`)."""
        return _integer_range(self.bits, self.signed, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        """Largest integer of the quantized range."""
        return _integer_range(self.bits, self.signed, self.symmetric)[1]

    @property
    def is_calibrated(self) -> bool:
        """Whether scale and zero-point are known."""
        return self.skip or self.scale is not None

    def problems(self, rank: int | None = None, channels: int | None = None) -> list[str]:
        """Inconsistencies of this spec, optionally against the tensor's rank and channels."""
        if self.skip:
            return []
        found: list[str] = []
        if not 1 < self.bits <= 16:
            found.append(f"bits must be in 2..16, got {self.bits}")
        per_channel = self.granularity is Granularity.PER_CHANNEL
        if per_channel and self.axis is None:
            found.append("per-channel quantization needs an axis")
        if not per_channel and self.axis is not None:
            found.append("per-tensor quantization takes no axis")
        if self.block_size is not None and (not per_channel or self.block_size < 1):
            found.append("a block size needs per-channel quantization and must be >= 1")
        if (
            per_channel
            and self.axis is not None
            and rank is not None
            and not (-rank <= self.axis < rank)
        ):
            found.append(f"axis {self.axis} is out of range for a rank-{rank} tensor")
        if self.scale is not None:
            if any(not (s > 0 and math.isfinite(s)) for s in self.scale):
                found.append("scales must be positive and finite")
            expected = channels if per_channel else 1
            if self.block_size is not None:
                if expected is not None and len(self.scale) % max(expected, 1):
                    found.append(f"{len(self.scale)} block scales for {expected} channels")
            elif expected is not None and len(self.scale) != expected:
                found.append(f"{len(self.scale)} scales given, {expected} expected")
            if self.zero_point is None or len(self.zero_point) != len(self.scale):
                found.append("zero_point must have one entry per scale")
            elif not 1 < self.bits <= 16:
                pass  # no integer range to check the zero points against
            elif any(not self.qmin <= z <= self.qmax for z in self.zero_point):
                found.append(f"zero_point outside [{self.qmin}, {self.qmax}]")
            elif self.symmetric and any(
                z != _symmetric_zero_point(self.bits, self.signed) for z in self.zero_point
            ):
                found.append("a symmetric spec has its zero_point at the middle of the range")
        elif self.zero_point is not None:
            found.append("zero_point given without scale")
        return found

    def __str__(self) -> str:
        if self.skip:
            return "skip" + (f"({self.reason})" if self.reason else "")
        kind = ("s" if self.signed else "u") + str(self.bits)
        parts = [kind, "sym" if self.symmetric else "affine"]
        if self.granularity is Granularity.PER_CHANNEL:
            parts.append(f"axis={self.axis}")
        if self.block_size is not None:
            parts.append(f"block={self.block_size}")
        if self.scale is not None:
            parts.append("calibrated")
        return "q(" + ",".join(parts) + ")"
