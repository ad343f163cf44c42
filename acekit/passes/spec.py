"""Parsing pipeline spec strings: ``"remove-dropout,fold-bn{eps=1e-5},cleanup"``.

Grammar (white space around tokens is ignored)::

    spec    := item ("," item)*
    item    := NAME ["{" option ("," option)* "}"]
    option  := KEY "=" VALUE
    VALUE   := a bare word without , { } = or a quoted string
"""

from __future__ import annotations

import re

import attrs

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BARE_VALUE = re.compile(r"[^,{}=\s\"']+")
_QUOTED = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'")


class PipelineSpecError(ValueError):
    """A malformed spec string; the message points at the column."""

    def __init__(self, spec: str, column: int, message: str) -> None:
        self.spec = spec
        self.column = column
        pointer = " " * column + "^"
        super().__init__(
            f"{message} at column {column + 1} of the pipeline spec:\n  {spec}\n  {pointer}"
        )


@attrs.frozen
class SpecItem:
    """One parsed item: a pass or preset name with its options as written."""

    name: str
    options: tuple[tuple[str, str], ...]
    column: int

    def text(self) -> str:
        """The item back as (normalised) spec text."""
        if not self.options:
            return self.name
        return self.name + "{" + ",".join(f"{k}={v}" for k, v in self.options) + "}"


class _Scanner:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.spec) and self.spec[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.spec[self.pos] if self.pos < len(self.spec) else ""

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            found = repr(self.spec[self.pos]) if self.pos < len(self.spec) else "end of spec"
            raise PipelineSpecError(self.spec, self.pos, f"expected {what}, found {found}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        self.skip_space()
        found = pattern.match(self.spec, self.pos)
        if not found:
            got = repr(self.spec[self.pos]) if self.pos < len(self.spec) else "end of spec"
            raise PipelineSpecError(self.spec, self.pos, f"expected {what}, found {got}")
        self.pos = found.end()
        return found.group(0)


def parse_spec(spec: str) -> list[SpecItem]:
    """Split a spec string into items; raises :class:`PipelineSpecError` with the column."""
    scanner = _Scanner(spec)
    items: list[SpecItem] = []
    if not spec.strip():
        raise PipelineSpecError(spec, 0, "empty pipeline spec")
    while True:
        scanner.skip_space()
        column = scanner.pos
        name = scanner.match(_NAME, "a pass name")
        options: list[tuple[str, str]] = []
        if scanner.peek() == "{":
            scanner.pos += 1
            seen: set[str] = set()
            while True:
                key_column = scanner.pos
                key = scanner.match(_NAME, "an option name")
                if key in seen:
                    raise PipelineSpecError(spec, key_column, f"option {key!r} given twice")
                seen.add(key)
                scanner.expect("=", "'=' after the option name")
                if scanner.peek() in ("'", '"'):
                    value = scanner.match(_QUOTED, "a closing quote")
                else:
                    value = scanner.match(_BARE_VALUE, f"a value for {key!r}")
                options.append((key, value))
                if scanner.peek() == ",":
                    scanner.pos += 1
                    continue
                scanner.expect("}", "',' or '}' in the options")
                break
        items.append(SpecItem(name, tuple(options), column))
        nxt = scanner.peek()
        if nxt == "":
            return items
        scanner.expect(",", "',' between passes")


def parse_value(text: str) -> object:
    """A spec value as Python: quoted string, bool, None, int, float, else the bare word."""
    quoted = _QUOTED.fullmatch(text)
    if quoted:
        raw = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        return re.sub(r"\\(.)", r"\1", raw)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def format_value(value: object) -> str:
    """A Python option value as spec text (inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _BARE_VALUE.fullmatch(text) and parse_value(text) == text:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
