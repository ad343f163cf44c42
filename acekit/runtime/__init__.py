"""Graph -> torch module: kernels per IR op and the module generator."""

from acekit.runtime.codegen import CodegenError, to_module
from acekit.runtime.registry import (
    Kernel,
    KernelError,
    KernelTable,
    get_kernel,
    has_kernel,
    kernel_ops,
)

__all__ = [
    "CodegenError",
    "Kernel",
    "KernelError",
    "KernelTable",
    "get_kernel",
    "has_kernel",
    "kernel_ops",
    "to_module",
]
