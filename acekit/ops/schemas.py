"""Building blocks for op schemas: the attribute kinds and the common input layouts.

Core ops and plugin ops use the same helpers::

    OpDef(unary("hard_swish_clamp", max_val=FLOAT), kernel=hard_swish_clamp)
"""

from __future__ import annotations

from acekit.ir.schema import AttrSpec, OpSchema

__all__ = [
    "ANY",
    "BOOL",
    "DTYPE",
    "FLOAT",
    "INT",
    "INTS",
    "STR",
    "AttrSpec",
    "OpSchema",
    "binary",
    "sized",
    "unary",
]

INT = AttrSpec("int")
FLOAT = AttrSpec("float")
BOOL = AttrSpec("bool")
STR = AttrSpec("str")
INTS = AttrSpec("ints")
DTYPE = AttrSpec("dtype", doc="short dtype name, e.g. 'f32' (acekit.ir.dtype_name)")
ANY = AttrSpec("any")


def unary(name: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    """The schema of an op with one input (``input``) and keyword attributes."""
    return OpSchema(name, ("input",), attributes, doc=doc)


def binary(name: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    """The schema of an op with two inputs (``input``, ``other``)."""
    return OpSchema(name, ("input", "other"), attributes, doc=doc)


def sized(name: str, param: str, doc: str = "", **attributes: AttrSpec) -> OpSchema:
    """An op with an int-list parameter: an attribute, or a trailing ``pack`` input."""
    return OpSchema(name, ("input", param), {param: INTS, **attributes}, optional_inputs=1, doc=doc)
