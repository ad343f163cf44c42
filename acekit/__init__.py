"""acekit: parse, clean, quantize and deploy PyTorch models.

Importing acekit loads no plugin: plugins are discovered on first use.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("acekit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

__all__ = ["Pipeline", "QuantizedModule", "Settings", "__version__", "compile", "load", "parse"]

# The public API lives in acekit.api, which imports torch: it is loaded on first use so
# that `import acekit` stays cheap (the CLI's --help, settings files).
_LAZY = {
    "parse": "acekit.api",
    "compile": "acekit.quant.compile",
    "load": "acekit.runtime.quantized",
    "QuantizedModule": "acekit.runtime.quantized",
    "Pipeline": "acekit.passes",
    "Settings": "acekit.settings",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'acekit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
