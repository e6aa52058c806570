"""A stored task row as the public API reads it: its state, worked out by the
database at a given time, and the :class:`~.info.TaskInfo` it becomes.

A task's :class:`~.schema.TaskState` is derived from its row at ``now``:

- ``dead``: ``status`` is ``'dead'`` (out of retries);
- ``succeeded``: ``status`` is ``'succeeded'`` (kept with its result until
  ``run_at``);
- ``running``: claimed (``lease_owner`` set) and the lease has not expired
  (``run_at > now``);
- ``pending``: due (``run_at <= now``), including a row whose lease expired;
- ``scheduled``: waiting for a later ``run_at`` (a delay or a retry back-off).
"""

from __future__ import annotations

import datetime
import typing as t

import sqlalchemy as sa

from .clock import as_utc
from .info import displayable
from .info import TaskInfo
from .schema import STATUS_DEAD
from .schema import STATUS_SUCCEEDED
from .schema import TaskState

if t.TYPE_CHECKING:
    from .store import Store


def state_expr(store: Store, now: datetime.datetime) -> sa.ColumnElement[str]:
    c = store.table.c
    return sa.case(
        (c.status == STATUS_DEAD, TaskState.DEAD.value),
        (c.status == STATUS_SUCCEEDED, TaskState.SUCCEEDED.value),
        (
            sa.and_(c.lease_owner.is_not(None), c.run_at > now),
            TaskState.RUNNING.value,
        ),
        (c.run_at <= now, TaskState.PENDING.value),
        else_=TaskState.SCHEDULED.value,
    )


def not_running(store: Store, now: datetime.datetime) -> sa.ColumnElement[bool]:
    c = store.table.c
    return sa.or_(
        c.status.in_((STATUS_DEAD, STATUS_SUCCEEDED)),
        c.lease_owner.is_(None),
        c.run_at <= now,
    )


def columns(store: Store, now: datetime.datetime) -> list[sa.ColumnElement[t.Any]]:
    c = store.table.c
    return [
        c.id,
        c.name,
        c.queue,
        c.priority,
        state_expr(store, now).label("state"),
        c.data,
        # Read as stored, so one corrupt timestamp (a hand-written row on
        # SQLite) is shown as it is instead of failing the whole query.
        sa.type_coerce(c.created, sa.String).label("created"),
        sa.type_coerce(c.run_at, sa.String).label("run_at"),
        c.attempts,
        c.failed_nr,
        sa.type_coerce(c.failed_last, sa.String).label("failed_last"),
        c.failed_error,
        c.lease_owner,
        c.unique_key,
        c.result,
        c.progress,
        sa.type_coerce(c.finished, sa.String).label("finished"),
    ]


def info(row: sa.Row[t.Any]) -> TaskInfo:
    """A row as :class:`TaskInfo`, whatever a hand-written row holds: a value
    that cannot be read is kept, as text, in ``TaskInfo.invalid``."""
    m = row._mapping
    invalid: dict[str, str] = {}

    def when(key: str) -> datetime.datetime | None:
        value = m[key]
        if value is None or isinstance(value, datetime.datetime):
            return None if value is None else as_utc(value)
        try:
            return as_utc(datetime.datetime.fromisoformat(str(value)))
        except ValueError:
            invalid[key] = displayable(str(value))
            return None

    def whole(key: str) -> int:
        value = m[key]
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        invalid[key] = displayable(str(value))
        return 0

    created = when("created")
    run_at = when("run_at")
    return TaskInfo(
        id=int(m["id"]),
        name=displayable(m["name"]),
        queue=displayable(m["queue"]),
        priority=whole("priority"),
        state=TaskState(m["state"]),
        data=None if m["data"] is None else displayable(m["data"]),
        created=created or _UNREADABLE,
        run_at=run_at or _UNREADABLE,
        attempts=whole("attempts"),
        failed_nr=whole("failed_nr"),
        failed_last=when("failed_last"),
        error=None if m["failed_error"] is None else displayable(m["failed_error"]),
        lease_owner=None if m["lease_owner"] is None else displayable(m["lease_owner"]),
        unique_key=None if m["unique_key"] is None else displayable(m["unique_key"]),
        result_json=None if m["result"] is None else displayable(m["result"]),
        progress_json=None if m["progress"] is None else displayable(m["progress"]),
        finished=when("finished"),
        invalid=invalid,
    )


#: Stands in for a timestamp that cannot be read (see ``TaskInfo.invalid``).
_UNREADABLE = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
