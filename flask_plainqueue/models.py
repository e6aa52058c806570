"""The queue table: its column types, its mapped model and the task states."""

from __future__ import annotations

import datetime
import enum
import typing as t

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

UTC = datetime.timezone.utc

#: Stored ``status`` of a row that waits, is scheduled, or runs under a lease.
STATUS_QUEUED = "queued"
#: Stored ``status`` of a row that ran out of retries; kept for inspection.
STATUS_DEAD = "dead"


class TaskState(str, enum.Enum):
    """What a stored task is doing now, as the CLI and dashboard show it."""

    #: Due now and waiting for a worker.
    PENDING = "pending"
    #: Waiting for its ``run_at`` (a delay or a retry back-off).
    SCHEDULED = "scheduled"
    #: Claimed by a worker whose lease has not expired.
    RUNNING = "running"
    #: Out of retries; kept until pruned or retried by hand.
    DEAD = "dead"


class UTCDateTime(sa.TypeDecorator[datetime.datetime]):
    """A timezone-aware UTC timestamp on every dialect.

    SQLite has no timezone-aware type, so values are stored as UTC text and come
    back with ``tzinfo=UTC``; naive datetimes are refused instead of guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give it a timezone (e.g. UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite compares the stored text, so every value must share one offset.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        # PostgreSQL answers in the session's TimeZone; every dialect gives UTC.
        return value.astimezone(UTC)


class JSONText(sa.TypeDecorator[str]):
    """JSON held as text in Python: ``jsonb`` on PostgreSQL, ``TEXT`` elsewhere.

    The queue serialises data itself in ``perform`` (that is the check that it is
    JSON) and decodes it itself in the worker (so one undecodable row fails alone
    instead of breaking a whole batch), so this type passes text through.
    """

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[t.Any]:
        if dialect.name == "postgresql":
            # Imported here: the PostgreSQL dialect costs SQLite users memory.
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.Text())

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> t.Any:
        if dialect.name == "postgresql":
            import json

            def process(value: t.Any) -> str | None:
                # psycopg hands back decoded jsonb (a JSON string arrives as a
                # Python str), so encode every value again to keep the text contract.
                return None if value is None else json.dumps(value)

            return process
        return None


class TaskModel(t.Protocol):
    """The attributes of ``queue.Task``, for type checkers.

    Columns are declared as class variables so that type checkers apply
    ``Mapped``'s descriptor: ``queue.Task.name`` is a column expression and
    ``task.name`` a ``str``, as on any declarative model.
    """

    __table__: t.ClassVar[sa.Table]

    # The mapped class takes its columns as keyword arguments, as every
    # declarative model does.
    def __init__(self, **kwargs: t.Any) -> None: ...

    id: t.ClassVar[Mapped[int]]
    name: t.ClassVar[Mapped[str]]
    queue: t.ClassVar[Mapped[str]]
    priority: t.ClassVar[Mapped[int]]
    data: t.ClassVar[Mapped[str | None]]
    created: t.ClassVar[Mapped[datetime.datetime]]
    run_at: t.ClassVar[Mapped[datetime.datetime]]
    status: t.ClassVar[Mapped[str]]
    attempts: t.ClassVar[Mapped[int]]
    lease_owner: t.ClassVar[Mapped[str | None]]
    failed_last: t.ClassVar[Mapped[datetime.datetime | None]]
    failed_nr: t.ClassVar[Mapped[int]]
    failed_error: t.ClassVar[Mapped[str | None]]
    unique_key: t.ClassVar[Mapped[str | None]]


def build_periodic_table(db: SQLAlchemy, table: str) -> sa.Table:
    """The last tick each periodic task was enqueued for, on ``db.metadata``.

    Whichever worker moves ``last_tick`` forward (a conditional ``UPDATE`` that
    only one transaction can win) enqueues that tick's task, so a tick runs once
    however many workers see it.
    """
    return sa.Table(
        f"{table}_periodic",
        db.metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("last_tick", UTCDateTime, nullable=False),
    )


def build_task_model(db: SQLAlchemy, table: str) -> type[TaskModel]:
    """Map the queue table on ``db.metadata`` so ``db.create_all()`` and
    migrations see it.

    Besides plainweb's columns (``id``, ``name``, ``data``, ``created``,
    ``failed_last``, ``failed_nr``, ``failed_error``) a row has ``run_at``, the
    earliest time it may run, which while a worker holds it is also its lease
    expiry: a claim moves ``run_at`` to the end of the lease, so a worker that
    dies simply lets the row become due again.
    """
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    unique = sa.text(f"unique_key IS NOT NULL AND status = '{STATUS_QUEUED}'")
    attrs: dict[str, t.Any] = {
        "__tablename__": table,
        "__table_args__": (
            # The claim's "which task is next" scan, in claim order.
            sa.Index(f"ix_{table}_next", "status", sa.desc("priority"), "run_at", "id"),
            # The batch claim for one task name.
            sa.Index(
                f"ix_{table}_name_next", "name", "status", sa.desc("priority"), "run_at"
            ),
            sa.Index(
                f"ux_{table}_unique_key",
                "name",
                "unique_key",
                unique=True,
                sqlite_where=unique,
                postgresql_where=unique,
            ),
            # Never reuse the id of a finished task: ids are handed to users.
            {"sqlite_autoincrement": True},
        ),
        "id": mapped_column(big_id, primary_key=True, autoincrement=True),
        "name": mapped_column(sa.String(255), nullable=False),
        "queue": mapped_column(sa.String(100), nullable=False, default="default"),
        "priority": mapped_column(sa.Integer, nullable=False, default=0),
        "data": mapped_column(JSONText, nullable=True),
        "created": mapped_column(UTCDateTime, nullable=False),
        "run_at": mapped_column(UTCDateTime, nullable=False),
        "status": mapped_column(sa.String(16), nullable=False, default=STATUS_QUEUED),
        "attempts": mapped_column(sa.Integer, nullable=False, default=0),
        "lease_owner": mapped_column(sa.String(64), nullable=True),
        "failed_last": mapped_column(UTCDateTime, nullable=True),
        "failed_nr": mapped_column(sa.Integer, nullable=False, default=0),
        "failed_error": mapped_column(sa.Text, nullable=True),
        "unique_key": mapped_column(sa.String(255), nullable=True),
        "__repr__": lambda self: f"<Task {self.id} {self.name!r} {self.status}>",
    }
    model = type("PlainQueueTask", (db.Model,), attrs)
    return t.cast("type[TaskModel]", model)
