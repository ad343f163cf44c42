"""The kernel table: which Python callable runs each IR op in a generated module.

A kernel is called as ``fn(*inputs, **attrs)``: the node's input values in order, then
its attributes as keywords. A kernel registered with ``uses_training=True`` also receives
``training=`` (the generated module's ``self.training``) unless the node fixes it with an
explicit ``training`` attribute. Plugins add kernels for their own ops::

    @register_kernel("fake_quantize")
    def fake_quantize(input, scale, zero_point, *, quant_min, quant_max): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

KernelFn = Callable[..., Any]
F = TypeVar("F", bound=KernelFn)


class KernelError(KeyError):
    """No kernel is registered for an op, or a registration conflicts."""

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class Kernel:
    """One registered kernel: the op it runs and how the module calls it."""

    op: str
    fn: KernelFn
    uses_training: bool = False


_KERNELS: dict[str, Kernel] = {}


def register_kernel(
    op: str, *, uses_training: bool = False, replace: bool = False
) -> Callable[[F], F]:
    """Decorator registering ``fn`` as the kernel of ``op``.

    The function must be importable by its qualified name (a module-level function), so
    that generated modules can be pickled. ``replace=True`` overrides an existing kernel.
    """

    def decorate(fn: F) -> F:
        if op in _KERNELS and not replace:
            raise KernelError(f"op {op!r} already has a kernel ({_KERNELS[op].fn.__qualname__})")
        _KERNELS[op] = Kernel(op, fn, uses_training)
        return fn

    return decorate


def unregister_kernel(op: str) -> None:
    """Remove the kernel of ``op`` if there is one."""
    _KERNELS.pop(op, None)


def get_kernel(op: str) -> Kernel:
    """The kernel of ``op``; :class:`KernelError` when none is registered."""
    _ensure_builtin_kernels()
    try:
        return _KERNELS[op]
    except KeyError:
        raise KernelError(
            f"no kernel is registered for op {op!r}: a plugin that adds the op must also "
            "register its kernel with acekit.runtime.register_kernel"
        ) from None


def has_kernel(op: str) -> bool:
    """Whether ``op`` has a kernel."""
    _ensure_builtin_kernels()
    return op in _KERNELS


def kernel_ops() -> Iterator[str]:
    """The ops that have kernels, sorted."""
    _ensure_builtin_kernels()
    return iter(sorted(_KERNELS))


class KernelTable(Mapping[str, KernelFn]):
    """A live, read-only view ``op -> callable(*inputs, **attrs)`` of the kernel table.

    Passes that evaluate nodes at parse time (constant folding) read kernels through it;
    kernels that use the training flag need ``training=`` passed explicitly.
    """

    def __getitem__(self, op: str) -> KernelFn:
        _ensure_builtin_kernels()
        try:
            return _KERNELS[op].fn
        except KeyError:
            raise KeyError(op) from None

    def __iter__(self) -> Iterator[str]:
        return kernel_ops()

    def __len__(self) -> int:
        _ensure_builtin_kernels()
        return len(_KERNELS)


def _ensure_builtin_kernels() -> None:
    # The built-in kernels register themselves on import; importing lazily keeps
    # `register_kernel` usable from kernels.py without an import cycle.
    import acekit.runtime.kernels  # noqa: F401
