"""Finding the deployment target a run names, with an error that lists the installed ones."""

from __future__ import annotations

from typing import Any

from acekit.plugin.interfaces import Target
from acekit.quant.rules import QuantRules


class TargetError(ValueError):
    """The named target is not installed, or its plugin failed."""


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
    failed = [f.describe() for f in manager.failed]
    why = f"; plugins that failed to load: {'; '.join(failed)}" if failed else ""
    raise TargetError(
        f"no deployment target called {name!r} is installed; installed targets: "
        f"{', '.join(installed_targets()) or 'none'}{why}"
    )


def target_rules(target: Target | Any, options: dict[str, Any]) -> QuantRules:
    """Ask ``target`` for its quantization rules; a failure names the target's plugin."""
    rules_of = getattr(target, "quantization_rules", None)
    if rules_of is None:
        raise TargetError(f"target {target.name!r} declares no quantization rules")
    try:
        rules = rules_of(options)
    except Exception as error:
        raise TargetError(f"target {target.name!r} failed to give its rules: {error}") from error
    if not isinstance(rules, QuantRules):
        raise TargetError(
            f"target {target.name!r} returned {type(rules).__name__} as rules, not QuantRules"
        )
    return rules
