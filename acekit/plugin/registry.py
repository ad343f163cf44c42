"""The registry: everything the loaded plugins registered, and who registered what.

Plugins never touch :class:`Registry` directly. Each plugin's registration hooks receive
a :class:`Registrar` bound to that plugin, so every entry knows its owner: a name
registered by two plugins is reported with both plugins and their distributions, and a
plugin that fails halfway through registering can be removed without a trace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

import attrs

from acekit.ir.schema import OpSchema, OpTable
from acekit.ops.opdef import OpDef
from acekit.ops.registry import OpRegistry
from acekit.passes.base import Pass
from acekit.passes.spec import PipelineSpecError, parse_spec

__all__ = [
    "KINDS",
    "DisabledPlugin",
    "FailedPlugin",
    "PluginConflictError",
    "PluginError",
    "PluginInfo",
    "PluginRegistrationError",
    "Registrar",
    "Registry",
]

#: The kinds of things plugins register, in registration order.
KINDS: Final[tuple[str, ...]] = ("ops", "parsers", "passes", "quantizers", "targets", "presets")

#: Singular nouns for messages ("pass 'fold-bn' ...").
_NOUNS: Final[Mapping[str, str]] = {
    "ops": "op",
    "parsers": "parser",
    "passes": "pass",
    "quantizers": "quantizer",
    "targets": "target",
    "presets": "pipeline preset",
    "plugins": "plugin",
}

# Names end up in spec strings, settings files and command lines, so they are held to
# the spec grammar's word rule everywhere, not only for passes.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")

_T = TypeVar("_T")
_P = TypeVar("_P", bound=type[Pass])


@attrs.define(eq=False)
class PluginInfo:
    """A loaded plugin: where it comes from and what it registered.

    ``distribution`` and ``version`` are ``None`` for a plugin registered in-process
    with :meth:`acekit.plugin.PluginManager.register_plugin`. ``registered`` maps a kind
    (``"passes"``, ``"targets"``, ...; see :data:`KINDS`) to the names registered.
    """

    name: str
    distribution: str | None
    version: str | None
    module: str
    registered: dict[str, list[str]] = attrs.field(factory=dict)

    def describe(self) -> str:
        """``'name' (distribution dist 1.0)``: how messages name the plugin."""
        return f"{self.name!r} ({describe_source(self.distribution, self.version)})"


@attrs.frozen
class FailedPlugin:
    """A plugin that could not be loaded, and why."""

    name: str
    distribution: str | None
    version: str | None
    reason: str

    def describe(self) -> str:
        """``'name' (distribution dist 1.0)``: how messages name the plugin."""
        return f"{self.name!r} ({describe_source(self.distribution, self.version)})"


@attrs.frozen
class DisabledPlugin:
    """A plugin skipped because ``ACEKIT_DISABLE_PLUGINS`` names it or its distribution."""

    name: str
    distribution: str | None
    version: str | None


def describe_source(distribution: str | None, version: str | None) -> str:
    """``distribution dist 1.0``, or ``registered in-process`` when there is none."""
    if distribution is None:
        return "registered in-process"
    return f"distribution {distribution}" + (f" {version}" if version else "")


class PluginError(Exception):
    """Base class of the plugin system's errors."""


class PluginRegistrationError(PluginError, ValueError):
    """A plugin registered something invalid; the plugin is reported as failed."""


class PluginConflictError(PluginError):
    """Two plugins registered the same name: a configuration error the user must fix.

    ``first`` registered ``name`` (as a ``first_kind``) before ``second`` tried to
    register it as a ``kind``; the kinds differ only for a pass and a pipeline preset,
    which share the names of spec strings. ``kind`` is ``"plugins"`` when two entry
    points have the same plugin name.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        first: PluginInfo,
        second: PluginInfo,
        first_kind: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.first = first
        self.second = second
        self.first_kind = first_kind or kind
        noun = _NOUNS.get(kind, kind)
        if kind == "plugins":
            clash = f"two plugins are called {name!r}: {first.describe()} and {second.describe()}"
        elif self.first_kind == kind:
            clash = (
                f"{noun} {name!r} is registered by two plugins: {first.describe()} and "
                f"{second.describe()}"
            )
        else:
            clash = (
                f"{noun} {name!r} of plugin {second.describe()} has the name of a "
                f"{_NOUNS.get(self.first_kind, self.first_kind)} of plugin {first.describe()} "
                "(passes and pipeline presets share one namespace)"
            )
        super().__init__(
            f"{clash}. Uninstall one of the distributions, or disable one plugin with "
            f"ACEKIT_DISABLE_PLUGINS={second.name}"
        )


def _check_name(kind: str, name: object) -> str:
    noun = _NOUNS[kind]
    if not isinstance(name, str) or not name:
        raise PluginRegistrationError(f"a {noun} needs a non-empty string 'name', got {name!r}")
    if not _NAME_RE.fullmatch(name):
        raise PluginRegistrationError(
            f"{noun} name {name!r} is not valid: use letters, digits, '_', '-' and '.', "
            "starting with a letter or '_'"
        )
    return name


def _check_text(kind: str, obj: object, attribute: str, *, required: bool) -> None:
    value = getattr(obj, attribute, None)
    noun = _NOUNS[kind]
    if not isinstance(value, str):
        raise PluginRegistrationError(
            f"{noun} {getattr(obj, 'name', obj)!r} needs a string {attribute!r}, got {value!r}"
        )
    if required and not value.strip():
        raise PluginRegistrationError(
            f"{noun} {getattr(obj, 'name', obj)!r} needs a non-empty {attribute!r}"
        )


def _check_method(kind: str, obj: object, method: str) -> None:
    if not callable(getattr(obj, method, None)):
        raise PluginRegistrationError(
            f"{_NOUNS[kind]} {getattr(obj, 'name', obj)!r} needs a {method}() method"
        )


class Registry:
    """Everything registered by the loaded plugins, as read-only views.

    ``passes`` and ``presets`` make it a :class:`acekit.passes.pipeline.PassLookup`,
    so ``Pipeline.from_spec`` resolves names through it. ``opdefs`` is the op registry
    plugin ops join (by default :data:`acekit.ops.OPDEFS`, from which the verifier's
    schema table and the kernel table are derived); ``ops`` is its schema table.
    """

    def __init__(self, opdefs: OpRegistry | None = None) -> None:
        if opdefs is None:
            # Looked up at construction, not import, so tests may swap the module's registry.
            from acekit.ops import registry

            opdefs = registry.OPDEFS
        self._opdefs = opdefs
        self._entries: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._owners: dict[tuple[str, str], PluginInfo] = {}
        self._summaries: dict[str, str] = {}

    # -- reading ---------------------------------------------------------------------------

    @property
    def ops(self) -> OpTable:
        """The op schema table, holding the kernel's ops and the plugins' ops."""
        return self._opdefs.schemas

    @property
    def opdefs(self) -> OpRegistry:
        """The op definitions (schema, kernel, parser mappings), core and plugins'."""
        return self._opdefs

    @property
    def parsers(self) -> Mapping[str, Any]:
        """Parser name -> parser object (see :class:`acekit.plugin.interfaces.Parser`)."""
        return MappingProxyType(self._entries["parsers"])

    @property
    def passes(self) -> Mapping[str, type[Pass]]:
        """Pass name -> :class:`acekit.passes.Pass` subclass."""
        return MappingProxyType(self._entries["passes"])

    @property
    def quantizers(self) -> Mapping[str, Any]:
        """Quantizer name -> quantizer object (:class:`acekit.plugin.interfaces.Quantizer`)."""
        return MappingProxyType(self._entries["quantizers"])

    @property
    def targets(self) -> Mapping[str, Any]:
        """Target name -> target object (:class:`acekit.plugin.interfaces.Target`)."""
        return MappingProxyType(self._entries["targets"])

    @property
    def presets(self) -> Mapping[str, str]:
        """Preset name -> pipeline spec string."""
        return MappingProxyType(self._entries["presets"])

    def owner(self, kind: str, name: str) -> PluginInfo:
        """The plugin that registered ``name`` as a ``kind`` (one of :data:`KINDS`)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
        try:
            return self._owners[(kind, name)]
        except KeyError:
            raise KeyError(f"no plugin registered a {_NOUNS[kind]} called {name!r}") from None

    def summary(self, kind: str, name: str) -> str:
        """The one-line summary of a registered entry (empty when it has none)."""
        if kind == "presets":
            return self._summaries.get(name, "")
        if kind == "ops":
            schema = self._opdefs.schemas.get(name)
            return schema.doc if schema is not None else ""
        entry = self._entries[kind].get(name)
        return str(getattr(entry, "summary", "") or "")

    def registrar(self, plugin: PluginInfo) -> Registrar:
        """The object handed to ``plugin``'s registration hooks."""
        return Registrar(self, plugin)

    # -- removing ----------------------------------------------------------------------------

    def remove_plugin(self, plugin: PluginInfo) -> None:
        """Remove everything ``plugin`` registered (op schemas included)."""
        for (kind, name), owner in list(self._owners.items()):
            if owner is not plugin:
                continue
            del self._owners[(kind, name)]
            if kind == "ops":
                self._opdefs.unregister(name)
            else:
                self._entries[kind].pop(name, None)
            if kind == "presets":
                self._summaries.pop(name, None)
        plugin.registered.clear()

    def clear(self) -> None:
        """Remove every entry, taking the plugins' ops out of the op table again."""
        for plugin in {id(p): p for p in self._owners.values()}.values():
            self.remove_plugin(plugin)

    # -- adding (through a Registrar) -----------------------------------------------------

    def _claim(self, kind: str, name: str, plugin: PluginInfo) -> None:
        """Check that ``plugin`` may register ``name``; raises on a clash."""
        clashes = [(kind, name)]
        # Presets and passes share the spec-string namespace.
        if kind == "presets":
            clashes.append(("passes", name))
        elif kind == "passes":
            clashes.append(("presets", name))
        for key in clashes:
            owner = self._owners.get(key)
            if owner is None:
                continue
            if owner is plugin:
                raise PluginRegistrationError(
                    f"plugin {plugin.describe()} registers {_NOUNS[key[0]]} {name!r} twice"
                    if key[0] == kind
                    else f"plugin {plugin.describe()} registers {name!r} both as a pass and "
                    "as a pipeline preset"
                )
            raise PluginConflictError(kind, name, owner, plugin, first_kind=key[0])
        if kind == "ops" and name in self._opdefs:
            raise PluginRegistrationError(
                f"op {name!r} is already in the kernel's op table; a plugin cannot replace it"
            )

    def _add(self, kind: str, name: str, entry: Any, plugin: PluginInfo) -> None:
        self._claim(kind, name, plugin)
        if kind == "ops":
            self._opdefs.register(entry)
        else:
            self._entries[kind][name] = entry
        self._owners[(kind, name)] = plugin
        plugin.registered.setdefault(kind, []).append(name)


class Registrar:
    """What one plugin's registration hooks receive: ``add_*`` methods that record it.

    Every ``add_*`` validates what it is given and raises
    :class:`PluginRegistrationError` when it is unusable, or
    :class:`PluginConflictError` when another plugin already registered the name.
    The registered object is returned, so ``add_pass`` also works as a class decorator.
    """

    def __init__(self, registry: Registry, plugin: PluginInfo) -> None:
        self._registry = registry
        self._plugin = plugin

    @property
    def plugin(self) -> PluginInfo:
        """The plugin this registrar records for."""
        return self._plugin

    @property
    def registry(self) -> Registry:
        """The whole registry, to read what other plugins registered before."""
        return self._registry

    def add_op(self, op: OpDef | OpSchema) -> OpDef:
        """Add an op: its whole definition (:class:`acekit.ops.OpDef`: schema, kernel,
        parser mappings, ONNX lowering). A bare :class:`acekit.ir.OpSchema` defines an
        op without a kernel, which only passes and targets of the plugin handle."""
        if isinstance(op, OpSchema):
            op = OpDef(op)
        if not isinstance(op, OpDef):
            raise PluginRegistrationError(f"add_op() takes an OpDef (or an OpSchema), got {op!r}")
        self._registry._add("ops", _check_name("ops", op.name), op, self._plugin)
        return op

    def add_parser(self, parser: _T) -> _T:
        """Add a parser (``name``, ``summary``, ``parse(model, example_inputs)``)."""
        name = _check_name("parsers", getattr(parser, "name", None))
        _check_text("parsers", parser, "summary", required=False)
        _check_method("parsers", parser, "parse")
        self._registry._add("parsers", name, parser, self._plugin)
        return parser

    def add_pass(self, pass_cls: _P) -> _P:
        """Add a pass class: a subclass of :class:`acekit.passes.Pass` with a ``name``."""
        if not (isinstance(pass_cls, type) and issubclass(pass_cls, Pass)):
            raise PluginRegistrationError(
                f"add_pass() takes a subclass of acekit.passes.Pass, got {pass_cls!r}"
            )
        name = _check_name("passes", pass_cls.name)
        _check_text("passes", pass_cls, "summary", required=False)
        self._registry._add("passes", name, pass_cls, self._plugin)
        return pass_cls

    def add_quantizer(self, quantizer: _T) -> _T:
        """Add a quantization algorithm (``name``, ``summary``)."""
        name = _check_name("quantizers", getattr(quantizer, "name", None))
        _check_text("quantizers", quantizer, "summary", required=False)
        self._registry._add("quantizers", name, quantizer, self._plugin)
        return quantizer

    def add_target(self, target: _T) -> _T:
        """Add a deployment target (``name``, ``title``, ``summary``, ``export(...)``)."""
        name = _check_name("targets", getattr(target, "name", None))
        _check_text("targets", target, "title", required=True)
        _check_text("targets", target, "summary", required=False)
        _check_method("targets", target, "export")
        self._registry._add("targets", name, target, self._plugin)
        return target

    def add_preset(self, name: str, spec: str, summary: str = "") -> None:
        """Add a named pipeline, usable in spec strings like a pass."""
        _check_name("presets", name)
        if not isinstance(spec, str):
            raise PluginRegistrationError(f"pipeline preset {name!r} needs a spec string")
        try:
            items = parse_spec(spec)
        except PipelineSpecError as error:
            raise PluginRegistrationError(f"pipeline preset {name!r}: {error}") from None
        if any(item.name == name for item in items):
            raise PluginRegistrationError(f"pipeline preset {name!r} names itself in {spec!r}")
        if not isinstance(summary, str):
            raise PluginRegistrationError(f"pipeline preset {name!r}: summary must be a string")
        self._registry._add("presets", name, spec, self._plugin)
        self._registry._summaries[name] = summary
