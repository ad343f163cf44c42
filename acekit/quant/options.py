"""Target options: the schema a target declares, and checking the user's values against it.

A target lists the options it reads (``deployment.target_options``) as
:class:`TargetOption` entries. :func:`check_options` checks a mapping against them:
unknown names (with "did you mean"), wrong types, values outside the allowed choices
or bounds, and fills in defaults. Settings call the target's ``validate_options`` when
they are built or loaded, so a bad value fails there, naming the key, instead of deep
inside an export.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import attrs

#: The value types settings files can hold.
Scalar = bool | int | float | str

_KIND_NAMES = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
}


class TargetOptionError(ValueError):
    """A target option is unknown or has a value the target does not accept.

    ``option`` names the offending option (``None`` for a problem of the whole set), so
    settings can report it as ``deployment.target_options.<option>``.
    """

    def __init__(self, message: str, *, target: str, option: str | None = None) -> None:
        self.message = message
        self.target = target
        self.option = option
        where = f"target option {option!r}" if option is not None else "target options"
        super().__init__(f"{where} of {target!r}: {message}")


def _check_kind(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in _KIND_NAMES:
        raise TypeError(f"kind must be one of bool, int, float, str or None; got {value!r}")


@attrs.frozen(kw_only=True)
class TargetOption:
    """One option a target reads.

    Attributes:
        name: The key in ``deployment.target_options``.
        help: What it does and what it accepts, in one line (``acekit plugins``, errors).
        default: The value used when the option is not given (``None``: not set).
        kind: The accepted type (``bool``, ``int``, ``float``, ``str``); ``None`` when
            ``choices`` alone say what is accepted (``"auto"``, ``True`` or ``False``).
        choices: The accepted values, when there is a fixed set.
        minimum: Smallest accepted number (inclusive), for ``int``/``float`` options.
        maximum: Largest accepted number (inclusive).
    """

    name: str
    help: str
    default: Scalar | None = None
    kind: type | None = attrs.field(default=str, validator=_check_kind)
    choices: tuple[Scalar, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: object, target: str) -> Scalar:
        """``value`` if this option accepts it; :class:`TargetOptionError` says why not."""
        if self.kind is not None and not _is_kind(value, self.kind):
            allowed = _KIND_NAMES[self.kind]
            raise TargetOptionError(
                f"must be {allowed}; got {value!r}. {self.help}", target=target, option=self.name
            )
        if self.choices and not any(_same(value, choice) for choice in self.choices):
            close = difflib.get_close_matches(
                str(value), [str(c) for c in self.choices if isinstance(c, str)], n=1
            )
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listing = ", ".join(repr(c) for c in self.choices)
            raise TargetOptionError(
                f"must be one of {listing}; got {value!r}{hint}", target=target, option=self.name
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = _bounds(low, high)
                raise TargetOptionError(
                    f"must be {bounds}; got {value!r}. {self.help}",
                    target=target,
                    option=self.name,
                )
        assert isinstance(value, bool | int | float | str)
        return value


def _is_kind(value: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def _same(value: object, choice: Scalar) -> bool:
    # True == 1 in Python; an option accepting True must not accept 1.
    return type(value) is type(choice) and value == choice


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def check_options(
    target: str,
    schema: Mapping[str, TargetOption] | tuple[TargetOption, ...],
    options: Mapping[str, Any],
) -> dict[str, Scalar]:
    """``options`` checked against ``schema``, with the defaults of options not given.

    Raises :class:`TargetOptionError` for the first unknown option (suggesting the
    closest known name) or unaccepted value, naming ``target`` and the option.
    """
    known = _as_mapping(schema)
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            listing = "; ".join(f"{o.name}: {o.help}" for o in known.values()) or "none"
            raise TargetOptionError(
                f"unknown option.{hint} Known options: {listing}", target=target, option=str(name)
            )
    checked: dict[str, Scalar] = {}
    for name, option in known.items():
        if name in options:
            checked[name] = option.check(options[name], target)
        elif option.default is not None:
            checked[name] = option.default
    return checked


def _as_mapping(
    schema: Mapping[str, TargetOption] | tuple[TargetOption, ...],
) -> Mapping[str, TargetOption]:
    if isinstance(schema, Mapping):
        return schema
    return {option.name: option for option in schema}


def describe_options(schema: Mapping[str, TargetOption] | tuple[TargetOption, ...]) -> list[str]:
    """One line per option, ``name = default: help``, for listings and docs."""
    return [
        f"{o.name}" + (f" = {o.default!r}" if o.default is not None else "") + f": {o.help}"
        for o in _as_mapping(schema).values()
    ]
