"""The op schema table: which ops the IR knows, their inputs and typed attributes.

The kernel ships the core ops (see :mod:`acekit.ir.core_ops`); plugins add their own
through the ``acekit_register_ops`` hook. The verifier checks every node against it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

#: Attribute kinds the IR can hold and save losslessly.
ATTR_KINDS: Mapping[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "str": (str,),
    "ints": (tuple,),
    "floats": (tuple,),
    "dtype": (str,),
    "any": (object,),
}


def _check_kind(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ATTR_KINDS:
        raise ValueError(f"attribute kind must be one of {sorted(ATTR_KINDS)}, got {value!r}")


@attrs.frozen
class AttrSpec:
    """One typed attribute of an op."""

    kind: str = attrs.field(validator=_check_kind)
    required: bool = False
    optional_none: bool = True
    doc: str = ""

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a valid value for this attribute."""
        if value is None:
            return self.optional_none and not self.required
        if self.kind in ("int",) and isinstance(value, bool):
            return False
        if self.kind == "ints":
            return isinstance(value, tuple) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            )
        if self.kind == "floats":
            return isinstance(value, tuple) and all(isinstance(v, int | float) for v in value)
        return isinstance(value, ATTR_KINDS[self.kind])


@attrs.frozen
class OpSchema:
    """What the IR knows about an op.

    ``inputs`` names the positional inputs; ``variadic`` ops accept any number of inputs
    (``min_inputs`` at least), and ``optional_inputs`` is how many trailing inputs may be
    left out. ``outputs`` is the number of results, ``None`` when variable.
    """

    name: str
    inputs: tuple[str, ...] = ()
    attributes: Mapping[str, AttrSpec] = attrs.field(factory=dict)
    outputs: int | None = 1
    variadic: bool = False
    min_inputs: int = 0
    optional_inputs: int = 0
    doc: str = ""

    def input_count_problem(self, count: int) -> str | None:
        """A message when ``count`` inputs do not fit the schema, else ``None``."""
        if self.variadic:
            if count < self.min_inputs:
                return f"takes at least {self.min_inputs} inputs, got {count}"
            return None
        low = len(self.inputs) - self.optional_inputs
        if not low <= count <= len(self.inputs):
            expected = str(low) if low == len(self.inputs) else f"{low} to {len(self.inputs)}"
            return f"takes {expected} inputs ({', '.join(self.inputs)}), got {count}"
        return None

    def attribute_problems(self, attrs_: Mapping[str, Any]) -> list[str]:
        """Messages for unknown, missing or ill-typed attributes."""
        found = []
        for key, value in attrs_.items():
            spec = self.attributes.get(key)
            if spec is None:
                found.append(f"unknown attribute {key!r} (known: {', '.join(self.attributes)})")
            elif not spec.accepts(value):
                found.append(f"attribute {key!r} must be {spec.kind}, got {value!r}")
        for key, spec in self.attributes.items():
            if spec.required and key not in attrs_:
                found.append(f"missing required attribute {key!r}")
        return found


class UnknownOpError(KeyError):
    """Raised when an op is not in the schema table."""

    def __str__(self) -> str:
        return str(self.args[0])


class OpTable:
    """A mutable table of op schemas, keyed by op name.

    ``loader`` fills the table on first use (the core ops' table is derived from their
    definitions in :mod:`acekit.ops`, which import this module).
    """

    def __init__(
        self,
        schemas: Mapping[str, OpSchema] | None = None,
        *,
        loader: Callable[[], object] | None = None,
    ) -> None:
        self._schemas: dict[str, OpSchema] = dict(schemas or {})
        self._loader = loader

    def _ensure_loaded(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader()

    def register(self, schema: OpSchema, *, replace: bool = False) -> None:
        """Add ``schema``; an existing name is an error unless ``replace`` is set."""
        self._ensure_loaded()
        if schema.name in self._schemas and not replace:
            raise ValueError(f"op {schema.name!r} is already in the schema table")
        self._schemas[schema.name] = schema

    def unregister(self, name: str) -> None:
        """Remove the schema of ``name`` if present."""
        self._ensure_loaded()
        self._schemas.pop(name, None)

    def get(self, name: str) -> OpSchema | None:
        """The schema of ``name``, or ``None``."""
        self._ensure_loaded()
        return self._schemas.get(name)

    def __getitem__(self, name: str) -> OpSchema:
        self._ensure_loaded()
        try:
            return self._schemas[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._schemas, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownOpError(f"op {name!r} is not in the schema table{hint}") from None

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._schemas

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(sorted(self._schemas))

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._schemas)

    def copy(self) -> OpTable:
        """An independent copy of this table."""
        self._ensure_loaded()
        return OpTable(self._schemas)
