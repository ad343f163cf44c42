"""The op registry: every op's definition by name, and the lookups derived from them.

The schema table the verifier reads (:data:`acekit.ir.OPS`), the kernel table the code
generator reads (:func:`acekit.runtime.get_kernel`) and the parsers' tables of torch
callables, Tensor methods and ATen ops are all views of this one registry, so an op is
defined in one place. Core ops load on first use; plugins add theirs through
``registry.add_op(OpDef(...))`` in ``acekit_register_ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from acekit.ir.schema import OpTable, UnknownOpError
from acekit.ops.opdef import OpDef, aten_key


class OpRegistry:
    """Op definitions by name, kept in step with the schema table ``schemas``."""

    def __init__(
        self, schemas: OpTable, loader: Callable[[], Iterable[OpDef]] | None = None
    ) -> None:
        self._schemas = schemas
        self._defs: dict[str, OpDef] = {}
        self._loader = loader
        self._index: _Index | None = None

    @property
    def schemas(self) -> OpTable:
        """The schema table derived from the definitions (what the verifier checks)."""
        self._ensure_loaded()
        return self._schemas

    def register(self, opdef: OpDef, *, replace: bool = False) -> None:
        """Add ``opdef``; an existing name is an error unless ``replace`` is set."""
        self._ensure_loaded()
        if not isinstance(opdef, OpDef):
            raise TypeError(f"expected an OpDef, got {opdef!r}")
        if not replace and (opdef.name in self._defs or opdef.name in self._schemas):
            raise ValueError(f"op {opdef.name!r} is already defined")
        self._defs[opdef.name] = opdef
        self._schemas.register(opdef.schema, replace=True)
        self._index = None

    def unregister(self, name: str) -> None:
        """Remove the op ``name`` (its schema too) if present."""
        self._ensure_loaded()
        if self._defs.pop(name, None) is not None:
            self._schemas.unregister(name)
            self._index = None

    def get(self, name: str) -> OpDef | None:
        """The definition of ``name``, or ``None``."""
        self._ensure_loaded()
        found = self._defs.get(name)
        if found is None:
            # A schema added to the table directly (an op without a kernel) still counts.
            schema = self._schemas.get(name)
            return None if schema is None else OpDef(schema)
        return found

    def __getitem__(self, name: str) -> OpDef:
        found = self.get(name)
        if found is None:
            self._schemas[name]  # raises UnknownOpError with close matches
            raise UnknownOpError(f"op {name!r} is not defined")
        return found

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name in self._schemas

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(self._schemas)

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._schemas)

    # -- what parsers look up ---------------------------------------------------------------

    def for_function(self, target: Any) -> OpDef | None:
        """The op a torch callable (``torch.add``, ``operator.mul``, ``F.relu``) means."""
        try:
            return self._lookups().functions.get(target)
        except TypeError:  # an unhashable target
            return None

    def for_method(self, name: str) -> OpDef | None:
        """The op a Tensor method name (``"add"``, ``"__add__"``) means."""
        return self._lookups().methods.get(name)

    def for_aten(self, namespace: str, name: str, overload: str = "") -> OpDef | None:
        """The op an ATen-style op means: ``("aten", "add", "Tensor")``; the overload's own
        entry wins over the whole packet's."""
        aten = self._lookups().aten
        if overload:
            found = aten.get(f"{namespace}::{name}.{overload}")
            if found is not None:
                return found
        return aten.get(f"{namespace}::{name}")

    # -- internals --------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        loader, self._loader = self._loader, None
        if loader is None:
            return
        for opdef in loader():
            self._defs[opdef.name] = opdef
            self._schemas.register(opdef.schema, replace=True)

    def _lookups(self) -> _Index:
        self._ensure_loaded()
        if self._index is None:
            self._index = _Index.of(self._defs.values())
        return self._index


class _Index:
    """Torch callable / method / ATen name -> op, built from the definitions."""

    def __init__(self) -> None:
        self.functions: dict[Any, OpDef] = {}
        self.methods: dict[str, OpDef] = {}
        self.aten: dict[str, OpDef] = {}

    @classmethod
    def of(cls, defs: Iterable[OpDef]) -> _Index:
        index = cls()
        for opdef in defs:
            for target in opdef.functions:
                index.functions[target] = opdef
            for method in opdef.methods:
                index.methods[method] = opdef
            for name in opdef.aten:
                index.aten[aten_key(name)] = opdef
        return index


def _core() -> list[OpDef]:
    from acekit.ops.core import core_definitions

    return core_definitions()


def _core_table() -> OpTable:
    from acekit.ir import core_ops

    return core_ops.OPS


#: The process's op registry: the core ops and every loaded plugin's ops.
OPDEFS = OpRegistry(_core_table(), loader=_core)
