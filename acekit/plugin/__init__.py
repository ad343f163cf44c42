"""acekit's plugin system: hook specifications, the plugin manager and the registry.

Plugins are found through the ``acekit`` entry-point group and loaded on first use
(:func:`get_plugin_manager`), never when ``acekit`` is imported. See
``docs/writing-a-plugin.md`` and ``docs/hooks.md``.
"""

from acekit.plugin.hookspecs import PROJECT_NAME, hookimpl, hookspec
from acekit.plugin.interfaces import Parser, Quantizer, Target
from acekit.plugin.manager import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    PluginManager,
    get_plugin_manager,
    get_registry,
    plugin_versions,
    reset_plugins,
)
from acekit.plugin.registry import (
    KINDS,
    DisabledPlugin,
    FailedPlugin,
    PluginConflictError,
    PluginError,
    PluginInfo,
    PluginRegistrationError,
    Registrar,
    Registry,
)

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PROJECT_NAME",
    "DisabledPlugin",
    "FailedPlugin",
    "Parser",
    "PluginConflictError",
    "PluginError",
    "PluginInfo",
    "PluginManager",
    "PluginRegistrationError",
    "Quantizer",
    "Registrar",
    "Registry",
    "Target",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "plugin_versions",
    "reset_plugins",
]
