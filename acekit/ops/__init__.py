"""Op definitions: each IR op's schema, kernel, type rule, parser mappings and lowering.

See :class:`OpDef`. The registry :data:`OPDEFS` holds the core ops and every loaded
plugin's ops; the IR's schema table, the runtime's kernel table and the parsers' lookups
are derived from it.
"""

from acekit.ops.infer import infer_types
from acekit.ops.opdef import KernelFn, OpDef, TypeRule, aten_key
from acekit.ops.registry import OPDEFS, OpRegistry
from acekit.ops.schemas import ANY, BOOL, DTYPE, FLOAT, INT, INTS, STR, binary, sized, unary

__all__ = [
    "ANY",
    "BOOL",
    "DTYPE",
    "FLOAT",
    "INT",
    "INTS",
    "OPDEFS",
    "STR",
    "KernelFn",
    "OpDef",
    "OpRegistry",
    "TypeRule",
    "aten_key",
    "binary",
    "infer_types",
    "sized",
    "unary",
]
