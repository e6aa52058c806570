"""The checks every argument and setting goes through before anything is
written: finite durations in range, whole numbers that fit their column, and
names that fit theirs (no I/O, no imports from the package).

Each check takes the error class to raise, so a setting is refused with a
``ConfigurationError`` and a ``perform`` argument with an ``InvalidArgument``,
and each message names the parameter and what is allowed.
"""

from __future__ import annotations

import datetime
import math
import typing as t

#: The longest duration any setting, option or argument may have: 100 years,
#: so that a due time computed from it always fits a timestamp.
MAX_SECONDS = 100 * 365 * 86400.0
#: The range of a 32-bit ``integer`` column (PostgreSQL), e.g. ``priority``.
INT32 = (-(2**31), 2**31 - 1)
#: The range of a 64-bit ``bigint`` column, e.g. task ids.
INT64 = (-(2**63), 2**63 - 1)

ErrorClass = type[Exception]


def seconds(
    name: str,
    value: object,
    *,
    error: ErrorClass,
    positive: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """``value`` as a number of seconds: an int, a float or a
    :class:`~datetime.timedelta`, finite, from 0 (or above 0 with ``positive``)
    to ``maximum``."""
    if isinstance(value, datetime.timedelta):
        number = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(
            f"{name} must be a number of seconds (or a timedelta), got {value!r}."
        )
    else:
        number = float(value)
    low = "above 0" if positive else "from 0"
    if (
        not math.isfinite(number)
        or number < 0
        or (positive and number == 0)
        or number > maximum
    ):
        raise error(
            f"{name} must be a finite number of seconds {low} up to {maximum:g},"
            f" got {value!r}."
        )
    return number


def whole(
    name: str,
    value: object,
    *,
    error: ErrorClass,
    minimum: int = INT32[0],
    maximum: int = INT32[1],
) -> int:
    """``value`` as an int (not a bool) from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be a whole number, got {value!r}.")
    if not minimum <= value <= maximum:
        raise error(
            f"{name} must be a whole number from {minimum} to {maximum}, got {value!r}."
        )
    return int(value)


def flag(name: str, value: object, *, error: ErrorClass) -> bool:
    """``value``, which must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise error(f"{name} must be True or False, got {value!r}.")
    return value


def text(
    name: str,
    value: object,
    *,
    error: ErrorClass,
    max_length: int = 255,
) -> str:
    """``value`` as a non-empty string that fits a ``varchar(max_length)``
    column on every database: at most ``max_length`` characters, no NUL
    character and no lone surrogate (neither can be stored as UTF-8)."""
    if not isinstance(value, str) or not value:
        raise error(f"{name} must be a non-empty string, got {value!r}.")
    if len(value) > max_length:
        raise error(
            f"{name} must be at most {max_length} characters, got {len(value)}."
        )
    if "\x00" in value or not is_utf8(value):
        raise error(
            f"{name} must not contain the NUL character or a lone surrogate,"
            f" got {value!r}."
        )
    return value


def is_utf8(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def names(name: str, value: object, *, error: ErrorClass) -> tuple[str, ...]:
    """``value``, a string or a sequence of strings, as a tuple of names."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise error(f"{name} must be a list of names, got {value!r}.")
    return tuple(text(name, item, error=error) for item in t.cast("list[t.Any]", value))
