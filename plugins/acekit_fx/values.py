"""What an FX node stands for while it is being converted.

An FX node is *bound* to one of: an IR :class:`~acekit.ir.Value` (a tensor, or a shape
value such as ``x.shape``), a python constant (``224``, ``torch.float32``), a
:class:`ConstTensor` (a tensor that depends on no input nor weight, turned into a
``constant`` node only if something reads it), a tuple/list of those (multi-output ops),
or :data:`POISON` (the node could not be converted; its readers are skipped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import torch

from acekit.ir import Value


@attrs.define(eq=False)
class ConstTensor:
    """A tensor computed from constants only, materialised on first use."""

    tensor: torch.Tensor
    name: str
    subgraph: str
    location: str | None = None
    value: Value | None = None


class _Poison:
    def __repr__(self) -> str:
        return "POISON"


#: Bound to nodes that could not be converted (an unsupported op or one of its readers).
POISON: Final = _Poison()


def walk(obj: Any) -> list[Any]:
    """The leaves of a nested tuple/list/dict/slice structure."""
    if isinstance(obj, tuple | list):
        return [leaf for item in obj for leaf in walk(item)]
    if isinstance(obj, dict):
        return [leaf for item in obj.values() for leaf in walk(item)]
    if isinstance(obj, slice):
        return walk((obj.start, obj.stop, obj.step))
    return [obj]


def any_leaf(obj: Any, predicate: Callable[[Any], bool]) -> bool:
    """Whether some leaf of ``obj`` satisfies ``predicate``."""
    return any(predicate(leaf) for leaf in walk(obj))


def is_dynamic(obj: Any) -> bool:
    """Whether a bound value (or any part of it) is computed by the graph."""
    return any_leaf(obj, lambda leaf: isinstance(leaf, Value))


def is_poisoned(obj: Any) -> bool:
    """Whether a bound value (or any part of it) comes from an unconverted node."""
    return any_leaf(obj, lambda leaf: leaf is POISON)


def is_constant(obj: Any) -> bool:
    """Whether a bound value is known at parse time (python values and constant tensors)."""
    return not any_leaf(obj, lambda leaf: isinstance(leaf, Value) or leaf is POISON)


def zip_concrete(bound: Any, concrete: Any, into: dict[int, Any]) -> None:
    """Record the concrete value of every IR value in ``bound`` (parallel structures)."""
    if isinstance(bound, Value):
        into[id(bound)] = concrete
    elif isinstance(bound, ConstTensor):
        into[id(bound)] = bound.tensor
    elif isinstance(bound, tuple | list) and isinstance(concrete, tuple | list):
        for b, c in zip(bound, concrete, strict=False):
            zip_concrete(b, c, into)
    elif isinstance(bound, dict) and isinstance(concrete, dict):
        for key, b in bound.items():
            if key in concrete:
                zip_concrete(b, concrete[key], into)
