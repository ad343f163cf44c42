"""Calibration data: whatever the user hands over, as checked tuples of model inputs.

``calibration_inputs`` may be a tensor (one batch), a tuple of tensors (one batch of a
model with several inputs), a dict (one batch by input name), or any iterable of those,
a ``DataLoader`` included. ``select`` picks the model inputs out of a batch (for a
loader of ``(image, label)`` pairs the default takes the leading items). Every batch is
checked against the example inputs (count, rank, the dims that are not free, dtype
kind, finite values) before the model sees it, so bad data is reported by batch and
input name. Which dims are free (the batch, a token sequence, ...) says
:mod:`acekit.dims`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from acekit.dims import FreeDims

Batch = tuple[Tensor, ...]
Select = Callable[[Any], Any]


class CalibrationDataError(ValueError):
    """The calibration data cannot feed the model: empty, malformed, NaN/Inf, wrong shape."""


class CalibrationData:
    """Batches of model inputs from ``source``, checked against ``example_inputs``.

    ``input_names`` name the model's inputs (for dict batches and messages). Iterating
    yields at most ``limit`` batches (all when ``None``); :attr:`seen` counts them.
    """

    def __init__(
        self,
        source: Any,
        example_inputs: Sequence[Tensor],
        input_names: Sequence[str],
        *,
        select: Select | None = None,
    ) -> None:
        if source is None:
            raise CalibrationDataError(
                "calibration_inputs is required: pass a tensor, a tuple or dict of tensors, "
                "a list of batches or a DataLoader"
            )
        self.source = source
        self.example_inputs = tuple(example_inputs)
        self.input_names = tuple(input_names)
        self.select = select
        self.seen = 0
        #: The dims that may differ from the example's; ``None``: dim 0 of every input.
        self.free_dims: FreeDims | None = None
        #: Why a dim is fixed (the model fixes it there), for messages.
        self.fixed_reasons: dict[tuple[int, int], str] = {}
        #: ``False`` while the first batch is read to find the free dims: only ranks count.
        self.check_sizes = True

    def batches(self, limit: int | None = None) -> Iterator[Batch]:
        """Checked batches, at most ``limit``; raises on the first bad one."""
        self.seen = 0
        for index, raw in enumerate(self._raw()):
            if limit is not None and index >= limit:
                break
            batch = self._inputs(self.select(raw) if self.select is not None else raw, index)
            self.check(batch, index)
            self.seen += 1
            yield batch
        if self.seen == 0:
            raise CalibrationDataError("calibration_inputs is empty: it gave no batch")

    def count(self, limit: int | None = None) -> int | None:
        """How many batches :meth:`batches` will give, when the source knows its length."""
        raw = self._raw()
        try:
            size = len(raw)  # type: ignore[arg-type]
        except TypeError:
            return limit
        return size if limit is None else min(size, limit)

    def first(self) -> Batch:
        """The first batch, checked: call before any work to fail early on bad data."""
        for batch in self.batches(limit=1):
            return batch
        raise CalibrationDataError("calibration_inputs is empty: it gave no batch")

    def _raw(self) -> Iterable[Any]:
        source = self.source
        if isinstance(source, Tensor | Mapping | tuple):
            return [source]
        if isinstance(source, Iterable):
            return source
        raise CalibrationDataError(
            f"calibration_inputs must be a tensor, a tuple or dict of tensors, or an "
            f"iterable of batches (a list, a DataLoader); got {type(source).__name__}"
        )

    def _inputs(self, item: Any, index: int) -> Batch:
        count = len(self.example_inputs)
        if isinstance(item, Tensor):
            return (item,)
        if isinstance(item, Mapping):
            missing = [name for name in self.input_names if name not in item]
            if missing:
                raise CalibrationDataError(
                    f"calibration batch {index} is a dict without the model input(s) "
                    f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, item))})"
                )
            return tuple(item[name] for name in self.input_names)
        if isinstance(item, list | tuple):
            if len(item) < count:
                raise CalibrationDataError(
                    f"calibration batch {index} has {len(item)} item(s), the model takes "
                    f"{count} input(s) ({', '.join(self.input_names)})"
                )
            # (inputs..., label) pairs from a DataLoader: the leading items are the inputs.
            return tuple(item[:count])
        raise CalibrationDataError(
            f"calibration batch {index} is a {type(item).__name__}; expected a tensor, a "
            "tuple or a dict of tensors (pass select= to pick the inputs out of a batch)"
        )

    def check(self, batch: Batch, index: int) -> None:
        """Raise :class:`CalibrationDataError` when ``batch`` does not fit the model."""
        items = zip(self.input_names, batch, self.example_inputs, strict=False)
        for position, (name, value, example) in enumerate(items):
            where = f"calibration batch {index}, input {name!r}"
            if not isinstance(value, Tensor):
                raise CalibrationDataError(f"{where} is a {type(value).__name__}, not a tensor")
            self._check_shape(where, position, value, example)
            if value.is_floating_point() != example.is_floating_point():
                raise CalibrationDataError(
                    f"{where} has dtype {value.dtype}, the example input {example.dtype}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = "NaN" if bool(torch.isnan(value).any()) else "Inf"
                raise CalibrationDataError(
                    f"{where} contains {bad} values: calibration needs finite data"
                )

    def _check_shape(self, where: str, position: int, value: Tensor, example: Tensor) -> None:
        free: set[int]
        if not self.check_sizes:
            free = set(range(example.dim()))
        elif not example.dim():
            free = set()
        elif self.free_dims is None:
            free = {0}
        else:
            free = set(self.free_dims.of(position))
        differs = value.dim() != example.dim() or any(
            value.shape[d] != example.shape[d] for d in range(example.dim()) if d not in free
        )
        if not differs:
            return
        fixed = [
            reason
            for (i, d), reason in self.fixed_reasons.items()
            if i == position and value.dim() == example.dim() and value.shape[d] != example.shape[d]
        ]
        dims = ", ".join(str(d) for d in sorted(free)) or "none"
        why = (
            f"; {fixed[0]}"
            if fixed
            else f"; only its free dims may differ ({dims}): pass dynamic_shapes= to "
            "acekit.compile to free more"
        )
        raise CalibrationDataError(
            f"{where} has shape {tuple(value.shape)}; the example input has "
            f"{tuple(example.shape)}{why}"
        )
