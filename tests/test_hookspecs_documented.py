"""The plugin surface cannot drift from its docs or go untested (after datasette's test).

Every hook specification must be documented in docs/hooks.md (which must match the
docstrings it is generated from), say whether it is ``firstresult`` in agreement with
its marker, belong to a stage, and be named in a test file other than this one.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from acekit.plugin import hookspecs
from acekit.plugin.hookdoc import hookspec_functions, render_markdown

ROOT = Path(__file__).parents[1]
HOOKS_DOC = ROOT / "docs" / "hooks.md"
HOOKS = dict(hookspec_functions())


def test_there_are_hookspecs() -> None:
    assert len(HOOKS) >= 11
    assert all(name.startswith("acekit_") for name in HOOKS)


def test_every_hookspec_belongs_to_one_stage() -> None:
    grouped = [name for names in hookspecs.HOOK_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hookspec_is_documented(name: str) -> None:
    assert re.search(rf"^### `{name}\(", HOOKS_DOC.read_text(encoding="utf-8"), re.M), (
        f"{name} is missing from docs/hooks.md"
    )


def test_hooks_doc_matches_the_docstrings() -> None:
    assert HOOKS_DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/hooks.md is stale: run `python -m acekit.plugin.hookdoc > docs/hooks.md`"
    )


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hookspec_docstring_says_when_what_and_firstresult(name: str) -> None:
    function = HOOKS[name]
    doc = inspect.getdoc(function) or ""
    assert "Called " in doc, f"{name}: say when it is called"
    for argument in inspect.signature(function).parameters:
        assert f":param {argument}:" in doc, f"{name}: document argument {argument!r}"
    firstresult = vars(function)["acekit_spec"]["firstresult"]
    assert ("Not ``firstresult``" not in doc) == firstresult, f"{name}: firstresult wrong"
    assert "``firstresult``" in doc


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hookspec_has_a_test(name: str) -> None:
    this = Path(__file__).resolve()
    sources = [
        path.read_text(encoding="utf-8")
        for path in Path(__file__).parent.rglob("test_*.py")
        if path.resolve() != this
    ]
    assert any(name in source for source in sources), f"no test mentions {name}"
