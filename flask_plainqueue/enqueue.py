"""The rules for ``perform``'s arguments: JSON data, due times, priorities and
unique keys, checked before anything is written (no I/O)."""

from __future__ import annotations

import datetime
import json
import typing as t

from .exceptions import TaskDataError
from .storage import new_row

if t.TYPE_CHECKING:
    from .tasks import JSONValue
    from .tasks import TaskDefinition

UTC = datetime.timezone.utc


def build_row(
    definition: TaskDefinition[t.Any, t.Any],
    data: JSONValue,
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
    priority: int | None,
    unique_key: str | None,
) -> dict[str, t.Any]:
    """The row ``perform`` inserts, after every argument is checked: the data
    encoded as JSON, the due time, the priority and the unique key.

    :raises TypeError: data that is not JSON-serialisable (a
        :class:`~flask_plainqueue.TaskDataError`), or an argument of the wrong type.
    :raises ValueError: a negative delay, a naive ``run_at``, or both given.
    """
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TaskDataError(
            f"The data for task {definition.name!r} is not JSON-serialisable:"
            f" {exc}. Pass only dicts, lists, strings, numbers, booleans and"
            " None, e.g. an id instead of a model object."
        ) from exc
    now = datetime.datetime.now(UTC)
    due = due_time(now, delay, run_at)
    if priority is None:
        priority = definition.options.priority
    elif isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be a whole number, got {priority!r}.")
    if unique_key is not None and not isinstance(unique_key, str):
        raise TypeError(f"unique_key must be a string, got {unique_key!r}.")
    return new_row(
        definition.name,
        queue=definition.options.queue,
        priority=priority,
        data=text,
        now=now,
        run_at=due,
        unique_key=unique_key,
    )


def due_time(
    now: datetime.datetime,
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
) -> datetime.datetime:
    """When a task performed at ``now`` with ``delay`` or ``run_at`` is due (UTC)."""
    if delay is not None and run_at is not None:
        raise ValueError("Give delay or run_at, not both.")
    if run_at is not None:
        if not isinstance(run_at, datetime.datetime):
            raise TypeError(f"run_at must be a datetime, got {run_at!r}.")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ValueError(
                f"run_at is a naive datetime ({run_at!r}); give it a timezone, e.g."
                " datetime.now(timezone.utc) + timedelta(minutes=5)."
            )
        return run_at.astimezone(UTC)
    if delay is None:
        return now
    if isinstance(delay, datetime.timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"delay must be seconds or a timedelta, got {delay!r}.")
    else:
        seconds = float(delay)
    if seconds < 0:
        raise ValueError(f"delay must not be negative, got {delay!r}.")
    return now + datetime.timedelta(seconds=seconds)
