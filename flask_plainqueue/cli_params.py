"""What the ``flask queue`` commands share: their parameter types (durations,
task ids) and the rule that an expected error is one ``Error: ...`` line."""

from __future__ import annotations

import functools
import re
import typing as t
from collections.abc import Callable

import click
import sqlalchemy.exc

from .exceptions import PlainQueueError
from .info import parse_id
from .validate import MAX_SECONDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
F = t.TypeVar("F", bound=Callable[..., t.Any])


def errors_as_click(func: F) -> F:
    """Report an expected error as one ``Error: ...`` line and exit 1, never a
    traceback: a :class:`PlainQueueError`, or a database error (a missing queue
    table says how to create it)."""

    @functools.wraps(func)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return func(*args, **kwargs)
        except PlainQueueError as exc:
            raise click.ClickException(str(exc)) from exc
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            raise click.ClickException(describe_database_error(exc)) from exc

    return t.cast(F, wrapper)


def describe_database_error(exc: BaseException) -> str:
    """One line about a database error, naming the fix where there is one."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    lowered = first.lower()
    if "no such table" in lowered or (
        "relation" in lowered and "does not exist" in lowered
    ):
        return describe_missing_table(first)
    return f"the database refused: {first}"


def describe_missing_table(detail: str | None = None) -> str:
    """The error for a queue table that does not exist, with the fix."""
    found = f" ({detail})" if detail else ""
    return (
        f"the queue's table does not exist{found}. Create it with"
        " 'db.create_all()' or your migrations ('flask db upgrade')."
    )


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as ``30s``, ``15m``, ``2h``, ``7d`` (or plain seconds),
    up to 100 years."""

    name = "duration"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            match = _DURATION.match(str(value).lower())
            if match is None:
                self.fail(
                    f"{value!r} is not a duration; use a number with s, m, h, d or"
                    " w, e.g. 30s, 15m, 2h, 7d.",
                    param,
                    ctx,
                )
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if not 0 <= seconds <= MAX_SECONDS:
            self.fail(f"{value!r} is longer than 100 years.", param, ctx)
        return seconds


class TaskIdType(click.ParamType):  # type: ignore[type-arg]
    """A task id (a positive whole number)."""

    name = "id"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        parsed = parse_id(str(value))
        if parsed is None:
            self.fail(f"{value!r} is not a task id (a whole number).", param, ctx)
        return parsed


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``2h`` or ``7d``.

    :raises click.BadParameter: it is not one.
    """
    return Duration().convert(text, None, None)
