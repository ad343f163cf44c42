"""Renders ``docs/hooks.md`` from the hook specifications' docstrings.

The reference is committed so that it reads on GitHub; a test fails when it no longer
matches the docstrings. Regenerate it with::

    python -m acekit.plugin.hookdoc > docs/hooks.md
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

from acekit.plugin import hookspecs

__all__ = ["hookspec_functions", "render_markdown"]

_HEADER = """\
# Hook reference

<!-- Generated from acekit/plugin/hookspecs.py by `python -m acekit.plugin.hookdoc`;
     edit the docstrings there, not this file. -->

acekit's plugins are [pluggy](https://pluggy.readthedocs.io/) plugins of the project
`acekit`. A plugin implements any of the hooks below with the `acekit.plugin.hookimpl`
marker and declares itself in the `acekit` entry-point group; see
[writing a plugin](writing-a-plugin.md). Hooks are called by keyword: an implementation
may accept only the arguments it needs.
"""

_GROUP_INTROS = {
    "Registration": (
        "Called once per process, when the plugin manager first loads the plugins, in the "
        "order listed, one plugin at a time. Each receives `registry`, a `Registrar` bound "
        "to the calling plugin; nothing is returned."
    ),
    "Choice": "Asked when a decision is wanted; the first non-`None` answer wins.",
    "Lifecycle": (
        "Called while a run is in progress, to observe it (progress bars, logs, "
        "experiment trackers). Return values are ignored; do not modify the arguments."
    ),
}

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_FIELD = re.compile(r":(param (\w+)|return):\s*(.*)")


def hookspec_functions() -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every hook specification of :mod:`acekit.plugin.hookspecs` as ``(name, function)``."""
    for name, obj in vars(hookspecs).items():
        if name.startswith(hookspecs.PROJECT_NAME + "_") and hasattr(
            obj, hookspecs.PROJECT_NAME + "_spec"
        ):
            yield name, obj


def _markdown(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    return _ROLE.sub(role, text).replace("``", "`")


def _render_hook(name: str, function: Callable[..., Any]) -> list[str]:
    args = ", ".join(inspect.signature(function).parameters)
    doc = inspect.cleandoc(function.__doc__ or "")
    lines = [f"### `{name}({args})`", ""]
    fields: list[str] = []
    for line in doc.splitlines():
        field = _FIELD.match(line)
        if field:
            label = f"`{field.group(2)}`" if field.group(2) else "returns"
            fields.append(f"- **{label}**: {field.group(3)}")
        elif fields and line.startswith("    "):
            fields[-1] += " " + line.strip()
        else:
            if fields:
                lines.extend([*fields, ""])
                fields = []
            if line.strip() or (lines and lines[-1] != ""):
                lines.append(line)
    lines.extend(fields)
    while lines and lines[-1] == "":
        lines.pop()
    return [_markdown(line) for line in lines]


def render_markdown() -> str:
    """The text of ``docs/hooks.md``."""
    functions = dict(hookspec_functions())
    out = [_HEADER]
    for group, names in hookspecs.HOOK_GROUPS.items():
        out.append(f"## {group} hooks\n")
        out.append(_GROUP_INTROS[group] + "\n")
        for name in names:
            out.append("\n".join(_render_hook(name, functions[name])) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
