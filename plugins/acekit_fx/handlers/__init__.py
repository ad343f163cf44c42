"""Op handlers: how each torch function, Tensor method, nn.Module and ATen op maps to IR."""

from acekit_fx.handlers.registry import (
    ATEN,
    FUNCTIONS,
    METHODS,
    MODULES,
    Handler,
    aten,
    function,
    lookup,
    method,
    module,
)

__all__ = [
    "ATEN",
    "FUNCTIONS",
    "METHODS",
    "MODULES",
    "Handler",
    "aten",
    "function",
    "lookup",
    "method",
    "module",
]
