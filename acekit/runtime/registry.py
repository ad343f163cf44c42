"""The kernel table: which Python callable runs each IR op in a generated module.

A kernel is called as ``fn(*inputs, **attrs)``: the node's input values in order, then
its attributes as keywords. A kernel whose op is defined with ``uses_training=True``
also receives ``training=`` (the generated module's ``self.training``) unless the node
fixes it with an explicit ``training`` attribute.

Kernels are part of their op's definition (:class:`acekit.ops.OpDef`); this module is
the code generator's view of them. A plugin adds an op with its kernel through
``registry.add_op(OpDef(schema, kernel=fn))`` in ``acekit_register_ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from acekit.ops.registry import OPDEFS

KernelFn = Callable[..., Any]


class KernelError(KeyError):
    """No kernel is defined for an op."""

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class Kernel:
    """One op's kernel: the op it runs and how the module calls it.

    ``export_fn`` is what ONNX exports trace instead of ``fn`` (the op's ``onnx``
    lowering; ``fn`` itself when it has none).
    """

    op: str
    fn: KernelFn
    uses_training: bool = False
    export_fn: KernelFn | None = None


def get_kernel(op: str) -> Kernel:
    """The kernel of ``op``; :class:`KernelError` when none is defined."""
    opdef = OPDEFS.get(op)
    if opdef is None or opdef.kernel is None:
        raise KernelError(
            f"no kernel is registered for op {op!r}: a plugin that adds the op must define "
            "it with its kernel, registry.add_op(OpDef(schema, kernel=fn)) "
            "(docs/writing-a-plugin.md)"
        )
    return Kernel(op, opdef.kernel, opdef.uses_training, opdef.export_kernel())


def has_kernel(op: str) -> bool:
    """Whether ``op`` has a kernel."""
    opdef = OPDEFS.get(op)
    return opdef is not None and opdef.kernel is not None


def kernel_ops() -> Iterator[str]:
    """The ops that have kernels, sorted."""
    return iter([op for op in OPDEFS if has_kernel(op)])


class KernelTable(Mapping[str, KernelFn]):
    """A live, read-only view ``op -> callable(*inputs, **attrs)`` of the kernels.

    Passes that evaluate nodes at parse time (constant folding) read kernels through it;
    kernels that use the training flag need ``training=`` passed explicitly.
    """

    def __getitem__(self, op: str) -> KernelFn:
        if not has_kernel(op):
            raise KeyError(op)
        return get_kernel(op).fn

    def __iter__(self) -> Iterator[str]:
        return kernel_ops()

    def __len__(self) -> int:
        return sum(1 for _ in kernel_ops())
