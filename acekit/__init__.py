"""acekit: parse, clean, quantize and deploy PyTorch models.

Importing acekit loads no plugin: plugins are discovered on first use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("acekit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
