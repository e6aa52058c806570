"""The rules for ``perform``'s arguments: JSON data, due times, priorities and
unique keys, each checked before anything is written (no I/O).

Data is encoded here, once, as compact JSON text; the worker decodes it. A
value is accepted only if it survives the round trip: ``str`` keys only (JSON
would turn ``1`` into ``"1"`` and silently merge it with ``"1"``), finite
numbers, text that can be stored as UTF-8 (no lone surrogate), and at most
:data:`MAX_DEPTH` levels of nesting. A tuple arrives as a list, as with
Flask's ``jsonify``.
"""

from __future__ import annotations

import datetime
import json
import typing as t

from . import validate
from .claims import new_row
from .clock import UTC
from .exceptions import InvalidArgument
from .exceptions import TaskDataError

if t.TYPE_CHECKING:
    from .tasks import TaskDefinition

#: A key of ``session.info``: set while the session's transaction is an atomic
#: task's or a success callback's, which ``perform`` joins instead of
#: committing (the task is enqueued if, and when, that transaction commits).
JOIN_SESSION = "plainqueue_join"
#: How deeply ``data`` may nest lists and dicts.
MAX_DEPTH = 100
#: The earliest ``run_at`` accepted.
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=UTC)

_SCALARS = (str, int, float, bool, type(None))
_encode = json.JSONEncoder(
    allow_nan=False, ensure_ascii=False, separators=(",", ":")
).encode


def encode(name: str, data: object) -> str:
    """``data`` as JSON text.

    :raises TaskDataError: it is not a JSON value that survives the round trip;
        the message says why.
    """
    try:
        return to_json(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _data_error(name, str(exc) or type(exc).__name__) from exc


def to_json(value: object) -> str:
    """``value`` as the JSON text the queue stores (task data, a result, a
    progress value).

    :raises ValueError: it is not a JSON value that survives the round trip;
        the message says why (a :class:`TypeError` for a type JSON lacks).
    """
    _check(value, 0)
    text = _encode(value)
    if not text.isascii() and not validate.is_utf8(text):
        raise ValueError(
            "a string holds a lone surrogate (e.g. '\\ud800'), which cannot be"
            " stored as UTF-8"
        )
    return text


def _check(value: object, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(f"it nests lists and dicts more than {MAX_DEPTH} deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"dict keys must be strings, got {key!r}; JSON would turn it"
                    " into a string"
                )
            if not isinstance(item, _SCALARS):
                _check(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, _SCALARS):
                _check(item, depth + 1)


def _data_error(name: str, reason: str) -> TaskDataError:
    return TaskDataError(
        f"The data for task {name!r} is not JSON-serialisable: {reason}. Pass"
        " only dicts with string keys, lists, strings, numbers, booleans and"
        " None, e.g. an id instead of a model object."
    )


def build_row(
    definition: TaskDefinition[t.Any, t.Any],
    data: object,
    delay: float | datetime.timedelta | None,
    run_at: datetime.datetime | None,
    priority: int | None,
    unique_key: str | None,
    *,
    now: datetime.datetime,
) -> dict[str, t.Any]:
    """The row ``perform`` inserts, after every argument is checked.

    :raises TaskDataError: data that is not JSON-serialisable.
    :raises InvalidArgument: another argument of the wrong type or out of range;
        the message names it and what is allowed.
    """
    text = encode(definition.name, data)
    due = due_time(now, delay, run_at)
    if priority is None:
        priority = definition.options.priority
    else:
        priority = validate.whole("priority", priority, error=InvalidArgument)
    if unique_key is not None:
        validate.text("unique_key", unique_key, error=InvalidArgument)
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
    """When a task performed at ``now`` with ``delay`` or ``run_at`` is due (UTC).

    :raises InvalidArgument: both given, a bad delay, or a ``run_at`` that is
        naive or outside 1970 to 100 years from now.
    """
    if delay is not None and run_at is not None:
        raise InvalidArgument("Give delay or run_at, not both.")
    if run_at is not None:
        if not isinstance(run_at, datetime.datetime):
            raise InvalidArgument(f"run_at must be a datetime, got {run_at!r}.")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidArgument(
                f"run_at is a naive datetime ({run_at!r}); give it a timezone, e.g."
                " datetime.now(timezone.utc) + timedelta(minutes=5)."
            )
        latest = now + datetime.timedelta(seconds=validate.MAX_SECONDS)
        try:
            due = run_at.astimezone(UTC)
        except OverflowError:
            due = None
        if due is None or not EARLIEST <= due <= latest:
            raise InvalidArgument(
                f"run_at must be between {EARLIEST:%Y-%m-%d} and 100 years from"
                f" now, got {run_at!r}."
            )
        return due
    if delay is None:
        return now
    return now + datetime.timedelta(
        seconds=validate.seconds("delay", delay, error=InvalidArgument)
    )


class TaskId(int):
    """The id :meth:`PlainQueue.perform` returns: an ``int``, equal to
    ``queue.Task.id`` of the stored row, that also tells whether a row was
    inserted.

    .. versionadded:: 0.1
    """

    #: ``False`` when ``unique_key`` matched a waiting task, whose id this is.
    new: bool

    def __new__(cls, value: int, *, new: bool = True) -> TaskId:
        self = super().__new__(cls, value)
        self.new = new
        return self
