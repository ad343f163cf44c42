"""Free dimensions: which input sizes may change from call to call, and their symbols.

The policy (docs/quantization.md, "Batch size and sequence length"):

* dim 0 of every input of rank >= 1 is free (the batch);
* dim 1 of every integer input of rank 2 is free (the sequence of HF-style
  ``input_ids`` / ``attention_mask`` / ``token_type_ids``);
* any dim where the first calibration batch differs from the example input is free;
* ``dynamic_shapes=`` given by the user replaces the policy for the inputs it names
  (an empty entry makes an input fully static).

Equal sizes of the same kind share a symbol (``batch``, ``seq``), so the symbols say
which dims must agree. Parsers read the declared dims through :func:`declared_dims`
(torch.export needs them up front); everything else reads the symbolic tensor types.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

__all__ = [
    "DynamicShapesError",
    "FreeDim",
    "FreeDims",
    "declared_dims",
    "declaring",
    "infer_free_dims",
]


class DynamicShapesError(ValueError):
    """``dynamic_shapes=`` does not fit the model's inputs."""


@attrs.frozen
class FreeDim:
    """One free dimension of one model input."""

    #: Position of the input in ``forward``'s arguments.
    input: int
    #: The input's name (``forward``'s parameter).
    name: str
    dim: int
    #: The size symbol used in tensor types (``batch``, ``seq``, ``x_dim2``).
    symbol: str
    #: Why it is free: ``batch``, ``sequence``, ``calibration`` or ``user``.
    reason: str
    #: The size in the example input.
    example: int
    #: Another size to check the graph with (the calibration batch's when it differs).
    other: int

    def describe(self) -> str:
        """``input 'x' dim 0 (batch)``."""
        return f"input {self.name!r} dim {self.dim} ({self.reason})"


@attrs.frozen
class FreeDims:
    """The free dims of a model's inputs, in input order."""

    dims: tuple[FreeDim, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dims)

    def of(self, input: int) -> dict[int, FreeDim]:
        """The free dims of input ``input`` by dimension."""
        return {d.dim: d for d in self.dims if d.input == input}

    def without(self, dropped: Sequence[FreeDim]) -> FreeDims:
        """These dims less ``dropped`` (dims the model turned out to fix)."""
        return FreeDims(tuple(d for d in self.dims if d not in dropped))

    def describe(self) -> str:
        """``input 'x' dim 0 (batch), input 'ids' dim 1 (sequence)``, or ``none``."""
        return ", ".join(d.describe() for d in self.dims) or "none"

    def resized(self, inputs: Sequence[Any], dims: Sequence[FreeDim] | None = None) -> list[Any]:
        """``inputs`` with each of ``dims`` (default: all) at its ``other`` size.

        Elements are repeated (or cut) cyclically along the dim, so token ids stay valid
        ids and masks stay masks.
        """
        chosen = self.dims if dims is None else dims
        result = list(inputs)
        for d in chosen:
            tensor = result[d.input]
            index = torch.arange(d.other, device=tensor.device) % tensor.shape[d.dim]
            result[d.input] = tensor.index_select(d.dim, index)
        return result


_DECLARED: contextvars.ContextVar[FreeDims | None] = contextvars.ContextVar(
    "acekit_free_dims", default=None
)


def declared_dims() -> FreeDims | None:
    """The free dims declared for the parse under way (``None``: all static)."""
    return _DECLARED.get()


@contextlib.contextmanager
def declaring(dims: FreeDims | None) -> Iterator[None]:
    """Declare ``dims`` to the parsers run inside the block (scoped to this context)."""
    token = _DECLARED.set(dims)
    try:
        yield
    finally:
        _DECLARED.reset(token)


def infer_free_dims(
    example_inputs: Sequence[Any],
    input_names: Sequence[str],
    *,
    first_batch: Sequence[Any] | None = None,
    dynamic_shapes: Any = None,
) -> FreeDims:
    """The free dims of the inputs, by the module's policy and ``dynamic_shapes``.

    ``dynamic_shapes`` follows ``torch.export``: a tuple (one entry per input) or a
    dict by input name, each entry a dict ``{dim: name}`` or a list with a name (or
    ``None``) per dim; a name is a string or a ``torch.export.Dim``.
    """
    user = _user_entries(dynamic_shapes, input_names)
    found: list[tuple[int, int, str, str | None]] = []  # (input, dim, reason, user symbol)
    for i, example in enumerate(example_inputs):
        if not isinstance(example, torch.Tensor) or example.dim() == 0:
            continue
        if i in user:
            found += [
                (i, d, "user", name)
                for d, name in sorted(_user_dims(user[i], example, input_names[i]).items())
            ]
            continue
        dims: dict[int, str] = {0: "batch"}
        if example.dim() == 2 and not example.is_floating_point() and example.dtype != torch.bool:
            dims[1] = "sequence"
        if first_batch is not None and i < len(first_batch):
            other = first_batch[i]
            if isinstance(other, torch.Tensor) and other.dim() == example.dim():
                for d in range(example.dim()):
                    if other.shape[d] != example.shape[d]:
                        dims.setdefault(d, "calibration")
        found += [(i, d, reason, None) for d, reason in sorted(dims.items())]
    return FreeDims(_with_symbols(found, example_inputs, input_names, first_batch))


def _with_symbols(
    found: list[tuple[int, int, str, str | None]],
    examples: Sequence[Any],
    names: Sequence[str],
    first_batch: Sequence[Any] | None,
) -> tuple[FreeDim, ...]:
    first_size: dict[str, int] = {}  # the kind's symbol goes to its first size
    dims = []
    for i, d, reason, symbol in found:
        size = int(examples[i].shape[d])
        if symbol is None:
            kind = {"batch": "batch", "sequence": "seq"}.get(reason)
            if kind is not None and first_size.setdefault(kind, size) == size:
                symbol = kind
            else:
                symbol = f"{names[i]}_dim{d}"
        dims.append(FreeDim(i, names[i], d, symbol, reason, size, _other(i, d, size, first_batch)))
    return tuple(dims)


def _other(i: int, d: int, size: int, first_batch: Sequence[Any] | None) -> int:
    """A second size to run the graph at: the calibration batch's, else one off."""
    if first_batch is not None and i < len(first_batch):
        other = first_batch[i]
        if isinstance(other, torch.Tensor) and other.dim() > d and int(other.shape[d]) != size:
            return int(other.shape[d])
    # Smaller where possible: a sequence may already be at the model's maximum length.
    return size - 1 if size > 2 else size + 1


def _user_entries(dynamic_shapes: Any, names: Sequence[str]) -> dict[int, Any]:
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, Mapping):
        unknown = [key for key in dynamic_shapes if key not in names]
        if unknown:
            raise DynamicShapesError(
                f"dynamic_shapes names {', '.join(map(repr, unknown))}, which the model does "
                f"not take; its inputs are {', '.join(map(repr, names))}"
            )
        return {names.index(key): entry for key, entry in dynamic_shapes.items()}
    if isinstance(dynamic_shapes, tuple | list):
        if len(dynamic_shapes) > len(names):
            raise DynamicShapesError(
                f"dynamic_shapes has {len(dynamic_shapes)} entries; the model takes "
                f"{len(names)} input(s) ({', '.join(names)})"
            )
        return dict(enumerate(dynamic_shapes))
    raise DynamicShapesError(
        "dynamic_shapes must be a tuple (one entry per input) or a dict by input name, "
        f"got {type(dynamic_shapes).__name__}"
    )


def _user_dims(entry: Any, example: torch.Tensor, name: str) -> dict[int, str | None]:
    """``{dim: symbol}`` from one input's entry (``None`` symbol: make one up)."""
    if entry is None:
        return {}
    if isinstance(entry, Mapping):
        items = list(entry.items())
    elif isinstance(entry, tuple | list):
        items = list(enumerate(entry))
    else:
        raise DynamicShapesError(
            f"dynamic_shapes for input {name!r} must be a dict {{dim: name}} or a list of "
            f"names per dim, got {type(entry).__name__}"
        )
    dims: dict[int, str | None] = {}
    for dim, label in items:
        if label is None:
            continue
        if not isinstance(dim, int) or not -example.dim() <= dim < example.dim():
            raise DynamicShapesError(
                f"dynamic_shapes for input {name!r} names dim {dim!r}; the example input "
                f"has {example.dim()} dims"
            )
        symbol = label if isinstance(label, str) else getattr(label, "__name__", None)
        dims[dim % example.dim()] = symbol if isinstance(symbol, str) else None
    return dims
