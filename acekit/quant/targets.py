"""Finding the deployment target a run names and asking it what the kernel needs.

Every call the kernel makes on a target goes through here: its rules, its options and
its runner. A target that lacks one of them, or fails in it, is reported by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from acekit.plugin.interfaces import Target
from acekit.quant.options import Scalar, TargetOptionError, check_options
from acekit.quant.rules import QuantRules


class TargetError(ValueError):
    """The named target is not installed, is disabled, or its plugin failed."""


def installed_targets() -> list[str]:
    """The names of the targets registered by the loaded plugins."""
    from acekit.plugin import get_registry

    return sorted(get_registry().targets)


def resolve_target(name: str) -> Any:
    """The target registered as ``name``; :class:`TargetError` lists the installed ones."""
    from acekit.plugin import get_plugin_manager

    manager = get_plugin_manager()
    targets = manager.registry.targets
    if name in targets:
        return targets[name]
    disabled = disabled_hint(name)
    if disabled:
        raise TargetError(f"deployment target {name!r} {disabled}")
    failed = [f.describe() for f in manager.failed]
    why = f"; plugins that failed to load: {'; '.join(failed)}" if failed else ""
    raise TargetError(
        f"no deployment target called {name!r} is installed; installed targets: "
        f"{', '.join(installed_targets()) or 'none'}{why}"
    )


def disabled_hint(name: str) -> str:
    """Why target ``name`` may be missing because of ``ACEKIT_DISABLE_PLUGINS``, or ``""``.

    A disabled plugin is never imported, so which targets it would register is unknown:
    a plugin or distribution named like the target is reported as the target's; other
    disabled plugins are mentioned as possible providers.
    """
    from acekit.plugin.manager import DISABLE_ENV, get_plugin_manager

    disabled = get_plugin_manager().disabled
    if not disabled:
        return ""
    setting = os.environ.get(DISABLE_ENV, "")
    key = _canonical(name)
    own = [d for d in disabled if key in (_canonical(d.name), _canonical(d.distribution or ""))]
    if own:
        plugin = own[0]
        return (
            f"is disabled: its plugin {plugin.name!r} is listed in {DISABLE_ENV}={setting}; "
            f"remove {plugin.name!r} from {DISABLE_ENV} to use it"
        )
    names = ", ".join(repr(d.name) for d in disabled)
    return (
        f"is not installed, or comes from a plugin disabled by {DISABLE_ENV}={setting} "
        f"({names}); remove it from {DISABLE_ENV} if so"
    )


def _canonical(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def target_rules(target: Target | Any, options: Mapping[str, Any]) -> QuantRules:
    """Ask ``target`` for its quantization rules; a failure names the target's plugin."""
    rules_of = getattr(target, "quantization_rules", None)
    if not callable(rules_of):
        raise TargetError(
            f"target {target.name!r} declares no quantization rules (a target needs "
            "quantization_rules(options); see docs/writing-a-plugin.md)"
        )
    try:
        rules = rules_of(dict(options))
    except TargetOptionError:
        raise
    except Exception as error:
        raise TargetError(f"target {target.name!r} failed to give its rules: {error}") from error
    if not isinstance(rules, QuantRules):
        raise TargetError(
            f"target {target.name!r} returned {type(rules).__name__} as rules, not QuantRules"
        )
    return rules


def validate_target_options(target: Target | Any, options: Mapping[str, Any]) -> dict[str, Scalar]:
    """``options`` as ``target`` accepts them; :class:`TargetOptionError` if it does not.

    Uses the target's ``validate_options`` when it has one, else its ``options``
    schema; a target declaring neither accepts any options (it reads none).
    """
    validate = getattr(target, "validate_options", None)
    if callable(validate):
        return dict(validate(options))
    schema = getattr(target, "options", None)
    if schema is None:
        return dict(options)
    return check_options(str(target.name), schema, options)


def target_runner(target: Target | Any) -> Callable[[str | os.PathLike[str]], Any] | None:
    """``target.load`` (path -> callable running the deployed file), or ``None``."""
    load = getattr(target, "load", None)
    return load if callable(load) else None
