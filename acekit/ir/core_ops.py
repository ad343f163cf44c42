"""The op schema table the verifier uses, derived from the op definitions.

Every op is defined once, as an :class:`acekit.ops.OpDef` (schema, kernel, type rule,
parser mappings, ONNX lowering); the core ops' definitions are in :mod:`acekit.ops.core`,
plugins add theirs through the ``acekit_register_ops`` hook. This table holds their
schemas; it fills itself on first use, so importing the IR does not import the kernels.
"""

from __future__ import annotations

from acekit.ir.schema import OpTable


def core_op_table() -> OpTable:
    """A fresh table holding the kernel's ops."""
    from acekit.ops.core import core_definitions

    return OpTable({opdef.name: opdef.schema for opdef in core_definitions()})


def _load_definitions() -> object:
    from acekit.ops.registry import OPDEFS

    return OPDEFS.schemas


#: The table the verifier uses by default; plugins' ops join it when they load.
OPS = OpTable(loader=_load_definitions)
