"""Calibration data: whatever the user hands over, as checked tuples of model inputs.

``calibration_inputs`` may be a tensor (one batch), a tuple of tensors (one batch of a
model with several inputs), a dict (one batch by input name), or any iterable of those,
a ``DataLoader`` included. ``select`` picks the model inputs out of a batch (for a
loader of ``(image, label)`` pairs the default takes the leading items). Every batch is
checked against the example inputs (count, rank, the dims that are not free, dtype
kind, finite values) before the model sees it, so bad data is reported by batch and
input name. Which dims are free (the batch, a token sequence, ...) says
:mod:`acekit.dims`.

A one-shot source (a generator, an iterator) can be read only once, yet the up-front
check reads its first batch and a pipeline may read the data twice (``calibrate`` then
``auto-skip``). Its batches are therefore kept as they are read, up to ``keep`` (the
most any later reader asks for), and replayed: every reader sees the batches from the
first one, as with a list. A read that would need batches already dropped is refused
with a message, never served half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from acekit.dims import FreeDims
from acekit.logging import get_logger

log = get_logger(__name__)

Batch = tuple[Tensor, ...]
Select = Callable[[Any], Any]

#: Floating dtypes converted to the example input's floating dtype (with a log line).
_CONVERTIBLE = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})


class CalibrationDataError(ValueError):
    """The calibration data cannot feed the model: empty, malformed, NaN/Inf, wrong shape."""


class CalibrationData:
    """Batches of model inputs from ``source``, checked against ``example_inputs``.

    ``input_names`` name the model's inputs (for dict batches and messages). Iterating
    yields at most ``limit`` batches (all when ``None``); :attr:`seen` counts them.
    ``keep`` is how many leading batches of a one-shot source (generator, iterator) are
    kept for readers after the first one (at least the one :meth:`first` peeks at).
    """

    def __init__(
        self,
        source: Any,
        example_inputs: Sequence[Tensor],
        input_names: Sequence[str],
        *,
        select: Select | None = None,
        keep: int = 0,
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
        self.one_shot = isinstance(source, Iterator)
        self._keep = max(keep, 1)
        self._kept: list[Batch] = []
        self._pulled = 0  # raw items taken from a one-shot source
        self._exhausted = False
        self._notes: list[str] = []
        self._noted: set[object] = set()
        #: The dims that may differ from the example's; ``None``: dim 0 of every input.
        self.free_dims: FreeDims | None = None
        #: Why a dim is fixed (the model fixes it there), for messages.
        self.fixed_reasons: dict[tuple[int, int], str] = {}
        #: ``False`` while the first batch is read to find the free dims: only ranks count.
        self.check_sizes = True

    def batches(self, limit: int | None = None) -> Iterator[Batch]:
        """Checked batches from the first one, at most ``limit``; raises on a bad one."""
        self.seen = 0
        for batch in self._checked(limit):
            self.seen += 1
            self._flush_notes()
            yield batch
        if self.seen == 0:
            raise CalibrationDataError("calibration_inputs is empty: it gave no batch")

    def count(self, limit: int | None = None) -> int | None:
        """How many batches :meth:`batches` will give, when the source knows its length."""
        if self.one_shot:
            if not self._exhausted:
                return limit
            return self._pulled if limit is None else min(self._pulled, limit)
        try:
            size = len(self._raw())  # type: ignore[arg-type]
        except TypeError:
            return limit
        return size if limit is None else min(size, limit)

    def first(self) -> Batch:
        """The first batch, checked: call before any work to fail early on bad data.

        A one-shot source keeps the batch, so that the next read starts with it.
        """
        for batch in self._checked(1):
            return batch
        raise CalibrationDataError("calibration_inputs is empty: it gave no batch")

    # ------------------------------------------------------------------ reading

    def _checked(self, limit: int | None) -> Iterator[Batch]:
        if self.one_shot:
            yield from self._replayed(limit)
            return
        for index, raw in enumerate(self._raw()):
            if limit is not None and index >= limit:
                break
            yield self._batch(raw, index)

    def _replayed(self, limit: int | None) -> Iterator[Batch]:
        """A one-shot source read from its first batch: kept ones, then fresh ones."""
        index = 0
        while limit is None or index < limit:
            if index < len(self._kept):
                yield self._kept[index]
            elif self._exhausted:
                return
            elif self._pulled > index:
                raise CalibrationDataError(
                    f"calibration_inputs is a one-shot {type(self.source).__name__} that was "
                    f"already read past batch {index} and only its first {len(self._kept)} "
                    f"batch(es) were kept: this read needs {limit or 'all'} batches from the "
                    "start. Pass a list of batches or a DataLoader, which can be read again"
                )
            else:
                try:
                    raw = next(self.source)
                except StopIteration:
                    self._exhausted = True
                    return
                self._pulled += 1
                batch = self._batch(raw, index)
                if len(self._kept) < self._keep:
                    self._kept.append(batch)
                yield batch
            index += 1

    def _batch(self, raw: Any, index: int) -> Batch:
        batch = self._inputs(self.select(raw) if self.select is not None else raw, index)
        batch = self._converted(batch, index)
        self.check(batch, index)
        return batch

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

    def _converted(self, batch: Batch, index: int) -> Batch:
        """Floating inputs in the example input's floating dtype (float64 data is common)."""
        converted = []
        for name, value, example in zip(self.input_names, batch, self.example_inputs, strict=False):
            if (
                isinstance(value, Tensor)
                and value.dtype != example.dtype
                and value.dtype in _CONVERTIBLE
                and example.dtype in _CONVERTIBLE
            ):
                self._note(
                    (name, value.dtype),
                    f"Calibration data: input {name!r} is {value.dtype} (first in batch "
                    f"{index}), the example input {example.dtype}: converting it to "
                    f"{example.dtype}",
                )
                value = value.to(example.dtype)
            converted.append(value)
        return tuple(converted)

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
            if value.is_floating_point() and value.dtype != example.dtype:
                raise CalibrationDataError(
                    f"{where} has dtype {value.dtype}, the example input {example.dtype}; "
                    f"convert the data with .to({example.dtype})"
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

    # ------------------------------------------------------------------ notes

    def _note(self, key: object, message: str) -> None:
        # Conversions first happen in the up-front check, before the run log is open:
        # the note waits for the next read inside the run, and is logged once per key.
        if key not in self._noted:
            self._noted.add(key)
            self._notes.append(message)

    def _flush_notes(self) -> None:
        while self._notes:
            log.info(self._notes.pop(0))
