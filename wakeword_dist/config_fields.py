"""The machinery behind `config.py`'s declarations: a field with its help text and checks
(``_help``), the number ranges those checks use (``Range``), and what loading does to each
value (``_coerce`` to the field's type, ``_check_metadata`` for choices, range, non-empty).

Messages are one line naming the key (``ConfigError``). The sections themselves, and loading
and saving them, are in `config.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the key."""


@dataclass(frozen=True)
class Range:
    """The values a number may take, ``low`` to ``high`` (None = unbounded); an open end leaves
    its bound out. Printed as in the error messages: ``[0, 1]``, ``(0, inf)``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        above = self.low is None or value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        low = "(-inf" if self.low is None else ("(" if self.low_open else "[") + str(self.low)
        high = "inf)" if self.high is None else str(self.high) + (")" if self.high_open else "]")
        return f"{low}, {high}"


POSITIVE = Range(0, low_open=True)  # (0, inf): rates, lengths, temperatures, learning rates
NON_NEGATIVE = Range(0)             # [0, inf): counts and weights that may be 0
AT_LEAST_ONE = Range(1)             # [1, inf): counts that may not
FRACTION = Range(0, 1)              # [0, 1]: probabilities and shares


def _help(text: str, default: Any = dataclasses.MISSING, *, choices: tuple = (), range: Range | None = None,
          non_empty: bool = False, **kw):
    """A field with its help text and what loading checks besides its type, kept in the field's
    metadata: ``choices`` (the value, or each item of a list, is one of them), ``range`` (a
    number lies in it), ``non_empty`` (a list has an item)."""
    metadata = {"help": text}
    if choices:
        metadata["choices"] = tuple(choices)
    if range is not None:
        metadata["range"] = range
    if non_empty:
        metadata["non_empty"] = True
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


def _check_metadata(key: str, value, metadata) -> None:
    """The checks a field's metadata asks for (see `_help`), on a value of the field's type."""
    if value is None:
        return
    if metadata.get("non_empty") and not value:
        raise ConfigError(f"config key '{key}': expected a non-empty list, got {value!r}")
    choices = metadata.get("choices")
    if choices:
        for item in value if isinstance(value, list) else [value]:
            if item not in choices:
                raise ConfigError(f"config key '{key}': {item!r} is not one of {', '.join(choices)}")
    bounds = metadata.get("range")
    if bounds is not None and value not in bounds:
        raise ConfigError(f"config key '{key}': {value!r} is out of range {bounds}")


def _type_name(annotation) -> str:
    """``int``, ``list[str]``, ``float | None``: as the annotation reads."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _coerce(key: str, value, annotation):
    """``value`` checked against the field's type ``annotation`` (resolved: ``int``,
    ``list[int]``, ``str | None``, ...) and returned, converted where that is lossless: ints and
    numeric strings to float (YAML 1.1 reads "1e-3", no dot, as a string), and so for each item
    of a ``list[float]``. A union takes the first member the value fits."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for member in args:
            if member is not type(None):
                try:
                    return _coerce(key, value, member)
                except ConfigError:
                    pass
    elif origin is list or annotation is list:
        if isinstance(value, list):
            item_type = args[0] if args else Any
            items = []
            for i, item in enumerate(value):
                try:
                    items.append(_coerce(key, item, item_type))
                except ConfigError:
                    raise ConfigError(f"config key '{key}': expected {_type_name(annotation)}, item {i} is "
                                      f"{type(item).__name__} {item!r}") from None
            return items
    else:
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if annotation is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if not (annotation is int and isinstance(value, bool)) and isinstance(value, annotation):
            return value
    raise ConfigError(
        f"config key '{key}': expected {_type_name(annotation)}, got {type(value).__name__} {value!r}")


@functools.cache
def _field_types(cls) -> dict:
    """The section's field types, resolved from their (``from __future__``) string annotations."""
    return typing.get_type_hints(cls)


__all__ = ["ConfigError", "Range", "POSITIVE", "NON_NEGATIVE", "AT_LEAST_ONE", "FRACTION"]
