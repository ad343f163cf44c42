"""The plugin manager: finds plugins through entry points, validates them, fills the registry.

Built-in plugins (``plugins/acekit_*``) and third-party ones are found the same way: in
the ``acekit`` entry-point group of the installed distributions. Nothing is loaded when
``acekit`` is imported; :func:`get_plugin_manager` loads everything on first use.

Loading a plugin goes through these steps, and a plugin failing any of them is recorded
as a :class:`~acekit.plugin.registry.FailedPlugin` (and logged) while the others load:

1. skip it if ``ACEKIT_DISABLE_PLUGINS`` names it or its distribution;
2. import it (``entry_point.load()``);
3. register it with pluggy, which checks each hook implementation's arguments;
4. ``check_pending()``: every ``acekit_*`` function must match a hook specification;
5. call its registration hooks, plugin by plugin, with a registrar bound to it.

Two plugins registering the same name raise
:class:`~acekit.plugin.registry.PluginConflictError`: which one the user wants cannot be
guessed, so that is a configuration error to fix rather than a plugin to skip.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pluggy

from acekit.logging import get_logger
from acekit.plugin import hookspecs
from acekit.plugin.registry import (
    DisabledPlugin,
    FailedPlugin,
    PluginConflictError,
    PluginInfo,
    PluginRegistrationError,
    Registry,
    describe_source,
)

if TYPE_CHECKING:
    from acekit.ir.graph import Graph
    from acekit.passes.base import Pass, PassResult

__all__ = [
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "REGISTRATION_HOOKS",
    "PluginManager",
    "get_plugin_manager",
    "get_registry",
    "list_entry_points",
    "reset_plugins",
]

log = get_logger(__name__)

#: The entry-point group plugins are declared in (``[project.entry-points.acekit]``).
ENTRY_POINT_GROUP: Final = "acekit"

#: Comma-separated entry-point names or distribution names of plugins not to load.
DISABLE_ENV: Final = "ACEKIT_DISABLE_PLUGINS"

#: The registration hooks in the order they are called, with the kind each one fills.
REGISTRATION_HOOKS: Final[tuple[tuple[str, str], ...]] = (
    ("ops", "acekit_register_ops"),
    ("parsers", "acekit_register_parsers"),
    ("passes", "acekit_register_passes"),
    ("quantizers", "acekit_register_quantizers"),
    ("targets", "acekit_register_targets"),
    ("presets", "acekit_register_pipeline_presets"),
)

_HOOK_PREFIX: Final = hookspecs.PROJECT_NAME + "_"


def list_entry_points() -> list[EntryPoint]:
    """The entry points of the ``acekit`` group, ordered by name.

    The order fixes the order plugins register in, so runs are reproducible whatever
    order the distributions were installed in.
    """
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _canonical(name: str) -> str:
    # PEP 503 normalisation: "Acekit_Example.Plugin" and "acekit-example-plugin" match.
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def disabled_names(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The normalised names listed in ``ACEKIT_DISABLE_PLUGINS``."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return frozenset(_canonical(part) for part in raw.split(",") if part.strip())


class _AcekitPluggy(pluggy.PluginManager):
    """pluggy's manager, also treating unmarked ``acekit_*`` functions as hook implementations.

    Without this, a plugin author who forgets ``@hookimpl`` (or misspells the hook of an
    unmarked function) would see the function silently never called; this way
    ``check_pending()`` reports an unknown name, and a correct name just works, as in
    pytest.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is not None or not name.startswith(_HOOK_PREFIX):
            return opts
        if not inspect.isroutine(inspect.getattr_static(plugin, name, None)):
            return None
        return pluggy.HookimplOpts(
            wrapper=False,
            hookwrapper=False,
            optionalhook=False,
            tryfirst=False,
            trylast=False,
            specname=None,
        )


class PluginManager:
    """A typed facade over ``pluggy.PluginManager("acekit")`` and the :class:`Registry`.

    Call sites use the typed methods (:meth:`pass_start`, :meth:`choose_parser`, ...)
    so their arguments are checked; :attr:`hook` is pluggy's relay for the rest.
    A fresh manager has no plugins: :meth:`load_entry_points` loads the installed ones,
    :meth:`register_plugin` adds one from Python code.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self._pm = _AcekitPluggy(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._registry = registry if registry is not None else Registry()
        self._plugins: dict[str, PluginInfo] = {}
        self._failed: list[FailedPlugin] = []
        self._disabled: list[DisabledPlugin] = []

    # -- reading ---------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """What the loaded plugins registered."""
        return self._registry

    @property
    def hook(self) -> pluggy.HookRelay:
        """pluggy's hook relay (``manager.hook.acekit_pass_start(pass_obj=..., graph=...)``)."""
        return self._pm.hook

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy manager, for what the facade does not cover."""
        return self._pm

    @property
    def plugins(self) -> tuple[PluginInfo, ...]:
        """The plugins loaded successfully, in load order."""
        return tuple(self._plugins.values())

    @property
    def failed(self) -> tuple[FailedPlugin, ...]:
        """The plugins that failed to import, validate or register, with the reason."""
        return tuple(self._failed)

    @property
    def disabled(self) -> tuple[DisabledPlugin, ...]:
        """The plugins skipped because of ``ACEKIT_DISABLE_PLUGINS``."""
        return tuple(self._disabled)

    def plugin(self, name: str) -> PluginInfo:
        """The loaded plugin called ``name``."""
        try:
            return self._plugins[name]
        except KeyError:
            raise KeyError(f"no plugin called {name!r} is loaded") from None

    # -- loading ---------------------------------------------------------------------------

    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> None:
        """Load the plugins of the ``acekit`` entry-point group (or ``eps`` when given).

        A plugin that fails is recorded in :attr:`failed`; a conflict between two
        plugins raises :class:`PluginConflictError` and leaves the manager empty.
        """
        blocked = disabled_names()
        loaded: list[str] = []
        for ep in list_entry_points() if eps is None else eps:
            dist = getattr(ep, "dist", None)
            distribution = dist.name if dist is not None else None
            version = dist.version if dist is not None else None
            if _canonical(ep.name) in blocked or (
                distribution is not None and _canonical(distribution) in blocked
            ):
                self._disabled.append(DisabledPlugin(ep.name, distribution, version))
                log.info(
                    f"Plugin '{ep.name}' is disabled by {DISABLE_ENV}",
                    plugin=ep.name,
                    distribution=distribution,
                )
                continue
            try:
                plugin = ep.load()
            except Exception as error:
                self._fail(ep.name, distribution, version, f"import failed: {_error_text(error)}")
                continue
            info = PluginInfo(ep.name, distribution, version, ep.value)
            try:
                self._add(plugin, info)
            except PluginConflictError:
                self.close()
                raise
            except Exception as error:
                self._fail(ep.name, distribution, version, str(error))
                continue
            loaded.append(ep.name)
        try:
            self._register(loaded, strict=False)
        except PluginConflictError:
            self.close()
            raise

    def register_plugin(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Register ``plugin`` (a module, class or object with hook implementations).

        For plugins living in the user's own code or in tests. Unlike entry-point
        plugins, a failure here raises, since the caller is there to see it; the
        manager is left as it was.
        """
        module = getattr(plugin, "__name__", None) or type(plugin).__module__
        info = PluginInfo(name, distribution, version, str(module))
        self._add(plugin, info)
        try:
            self._register([name], strict=True)
        except BaseException:
            self.unregister_plugin(name)
            raise
        return info

    def unregister_plugin(self, name: str) -> None:
        """Remove the plugin ``name``, its hook implementations and all it registered."""
        info = self._plugins.pop(name, None)
        if info is not None:
            self._registry.remove_plugin(info)
        if self._pm.has_plugin(name):
            self._pm.unregister(name=name)

    def close(self) -> None:
        """Unregister every plugin, taking their ops out of the op table again."""
        for name in list(self._plugins):
            self.unregister_plugin(name)
        self._registry.clear()

    def _add(self, plugin: object, info: PluginInfo) -> None:
        """Register with pluggy and validate; raises, leaving nothing behind, on failure."""
        existing = self._plugins.get(info.name)
        if existing is not None:
            raise PluginConflictError("plugins", info.name, existing, info)
        if self._pm.is_registered(plugin):
            other = self._pm.get_name(plugin)
            raise PluginRegistrationError(
                f"{info.module!r} is already loaded as plugin {other!r}; "
                "one module can be one plugin only"
            )
        try:
            self._pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as error:
            # pluggy's message spans lines; the failure listing wants one.
            text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise PluginRegistrationError(f"invalid hook implementation: {text}") from None
        if not self._pm.get_hookcallers(plugin):
            self._pm.unregister(plugin)
            # Typically an entry point naming the wrong module, or a namespace package
            # whose __init__.py is missing: loading "successfully" would hide it.
            raise PluginRegistrationError(
                f"{info.module!r} defines no acekit hook implementations "
                "(is the entry point naming the right module?)"
            )
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError:
            unknown = self._unknown_hooks(plugin)
            self._pm.unregister(plugin)
            raise PluginRegistrationError(_unknown_hooks_text(unknown)) from None
        self._plugins[info.name] = info

    def _unknown_hooks(self, plugin: object) -> list[str]:
        callers = self._pm.get_hookcallers(plugin) or []
        return sorted(
            caller.name
            for caller in callers
            if not caller.has_spec()
            and any(
                impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()
            )
        )

    def _register(self, names: Sequence[str], *, strict: bool) -> None:
        """Call the registration hooks of the plugins ``names``, stage by stage.

        The implementations are called one by one, not through ``pm.hook``, so that
        each plugin gets its own registrar and a failure is pinned on its plugin.
        """
        wanted = set(names)
        for _, hook_name in REGISTRATION_HOOKS:
            caller = getattr(self._pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                info = self._plugins.get(impl.plugin_name)
                if impl.plugin_name not in wanted or info is None:
                    continue
                registrar = self._registry.registrar(info)
                try:
                    if impl.wrapper or impl.hookwrapper:
                        raise PluginRegistrationError(
                            f"{hook_name} cannot be a wrapper: registration hooks are "
                            "called once per plugin"
                        )
                    args = {"registry": registrar}
                    impl.function(*(args[arg] for arg in impl.argnames))
                except PluginConflictError:
                    raise
                except Exception as error:
                    if strict:
                        raise
                    self.unregister_plugin(info.name)
                    self._fail(
                        info.name,
                        info.distribution,
                        info.version,
                        f"{hook_name} failed: {_error_text(error)}",
                    )

    def _fail(self, name: str, distribution: str | None, version: str | None, reason: str) -> None:
        self._failed.append(FailedPlugin(name, distribution, version, reason))
        log.warning(
            f"Plugin '{name}' ({describe_source(distribution, version)}) failed to load: {reason}",
            plugin=name,
            distribution=distribution,
            version=version,
        )

    # -- typed hook calls ------------------------------------------------------------------

    def choose_parser(self, model: Any, example_inputs: tuple[Any, ...]) -> str | None:
        """Ask ``acekit_choose_parser``; the first plugin naming a parser wins."""
        choice = self._pm.hook.acekit_choose_parser(model=model, example_inputs=example_inputs)
        if choice is not None and not isinstance(choice, str):
            raise TypeError(f"acekit_choose_parser must return a parser name, got {choice!r}")
        return choice

    def pass_start(self, pass_obj: Pass, graph: Graph) -> None:
        """Fire ``acekit_pass_start``."""
        self._pm.hook.acekit_pass_start(pass_obj=pass_obj, graph=graph)

    def pass_end(self, pass_obj: Pass, graph: Graph, result: PassResult) -> None:
        """Fire ``acekit_pass_end``."""
        self._pm.hook.acekit_pass_end(pass_obj=pass_obj, graph=graph, result=result)

    def calibration_step(self, step: int, total: int | None, graph: Graph) -> None:
        """Fire ``acekit_calibration_step``."""
        self._pm.hook.acekit_calibration_step(step=step, total=total, graph=graph)

    def export_done(self, path: Path, target: Any, graph: Graph) -> None:
        """Fire ``acekit_export_done``."""
        self._pm.hook.acekit_export_done(path=path, target=target, graph=graph)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _unknown_hooks_text(unknown: Sequence[str]) -> str:
    known = [name for name in dir(hookspecs) if name.startswith(_HOOK_PREFIX)]
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"unknown hook {', '.join(parts)}: acekit has no such hook specification "
        "(see docs/hooks.md)"
    )


# -- the process-wide manager --------------------------------------------------------------

_lock = threading.RLock()
_manager: PluginManager | None = None
_loading = False


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loading the installed plugins on first use."""
    global _manager, _loading
    with _lock:
        if _manager is not None:
            return _manager
        if _loading:
            raise RuntimeError(
                "get_plugin_manager() was called while plugins are being loaded; a "
                "registration hook must use the registry it receives"
            )
        _loading = True
        try:
            manager = PluginManager()
            manager.load_entry_points()
        finally:
            _loading = False
        _manager = manager
        return manager


def get_registry() -> Registry:
    """What the installed plugins registered (loads them on first use)."""
    return get_plugin_manager().registry


def plugin_versions() -> dict[str, str]:
    """``{plugin name: version}`` of every loaded plugin, for the run log's header."""
    return {
        info.name: info.version or "in-process"
        for info in sorted(get_plugin_manager().plugins, key=lambda p: p.name)
    }


def reset_plugins() -> None:
    """Forget the process-wide manager; the next use loads the plugins again (for tests)."""
    global _manager
    with _lock:
        if _manager is not None:
            _manager.close()
        _manager = None
