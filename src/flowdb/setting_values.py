"""Turning a setting's raw value (environment text or a keyword argument) into its type.

``flowdb.settings.Settings`` declares each field's type, default and bounds; this
module converts a value to that type and checks the bounds, the way pydantic's lax
mode did when the settings were a pydantic model ("2.5" is a float, "yes" a boolean),
and says what is wrong in the same words. Stdlib only: every command reads the
settings, and importing pydantic cost more than the rest of a command's start-up.
"""

from __future__ import annotations

import contextlib
import math
import types
import typing
from dataclasses import Field
from pathlib import Path
from typing import Any

from flowdb.errors import ConfigurationError

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class _Invalid(ValueError):
    """A value that does not fit its setting (the message says why, in one clause)."""


def convert(item: Field[Any], hint: Any, value: object, secrets: frozenset[str]) -> object:
    """``value`` converted to ``hint`` (setting ``item``'s type) and checked against its bounds.

    Raises ``ConfigurationError`` naming the variable (``FLOWDB_<NAME>``) and, unless
    the setting is a secret, the value: one line, as the CLI prints it.
    """
    try:
        before = item.metadata.get("before")
        if before is not None:
            try:
                value = before(value)
            except ValueError as error:
                raise _Invalid(f"Value error, {error}") from None
        converted = _to_type(hint, value)
        _check_bounds(item, converted)
        return converted
    except _Invalid as error:
        name = f"FLOWDB_{item.name.upper()}"
        secret = item.name in secrets
        shown = f"={value!r}" if isinstance(value, str) and len(value) <= 80 and not secret else ""
        raise ConfigurationError(
            f"{name}{shown} is invalid ({error}); fix or unset that environment variable."
        ) from None


def _to_type(hint: Any, value: object) -> object:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = (option for option in options if option is not type(None))
        return _to_type(inner, value)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        names = [repr(choice) for choice in choices]
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise _Invalid(f"Input should be {listed}")
    if hint is bool:
        return _to_bool(value)
    if hint is int:
        return _to_int(value)
    if hint is float:
        return _to_float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid("Input should be a valid string")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise _Invalid("Input should be a valid path")
        return Path(value)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Invalid(f"Input should be {getattr(hint, '__name__', hint)}")


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Invalid("Input should be a valid boolean, unable to interpret input")


def _to_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _Invalid("Input should be a valid integer, unable to parse string as an integer")


def _to_float(value: object) -> float:
    number = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None:
        raise _Invalid("Input should be a valid number, unable to parse string as a number")
    # Infinity passed every lower bound, then failed where a driver wants milliseconds.
    if not math.isfinite(number):
        raise _Invalid("Input should be a finite number")
    return number


def _check_bounds(item: Field[Any], value: object) -> None:
    if not isinstance(value, int | float):
        return
    ge, gt, le = (item.metadata.get(key) for key in ("ge", "gt", "le"))
    if ge is not None and not value >= ge:
        raise _Invalid(f"Input should be greater than or equal to {ge}")
    if gt is not None and not value > gt:
        raise _Invalid(f"Input should be greater than {gt}")
    if le is not None and not value <= le:
        raise _Invalid(f"Input should be less than or equal to {le}")
