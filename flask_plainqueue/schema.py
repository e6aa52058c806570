"""The queue's tables on the app's ``db.metadata``: the mapped task model, the
periodic ticks, the running workers, the pauses, the per-minute counts of
finished attempts, and the task states.

Columns use plain SQLAlchemy types, so ``db.create_all()`` and Alembic's
autogenerate (Flask-Migrate) render them without importing this package:
timestamps are ``DateTime(timezone=True)`` (naive UTC text on SQLite, which
keeps no offset; rows loaded through the model are made aware, and
:func:`~flask_plainqueue.clock.as_utc` does it for Core results) and data is JSON held as ``Text``, encoded by ``perform`` and
decoded by the worker.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import typing as t

import sqlalchemy as sa
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from .clock import as_utc

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: Stored ``status`` of a row that waits, is scheduled, or runs under a lease.
STATUS_QUEUED = "queued"
#: Stored ``status`` of a row that ran out of retries; kept for inspection.
STATUS_DEAD = "dead"
#: Stored ``status`` of a row that succeeded and is kept (``keep_succeeded``)
#: with its result; its ``run_at`` is when it expires and may be pruned.
STATUS_SUCCEEDED = "succeeded"


class TaskState(str, enum.Enum):
    """What a stored task is doing now, as the CLI and dashboard show it."""

    #: Due now and waiting for a worker.
    PENDING = "pending"
    #: Waiting for its ``run_at`` (a delay or a retry back-off).
    SCHEDULED = "scheduled"
    #: Claimed by a worker whose lease has not expired.
    RUNNING = "running"
    #: Finished without error and kept (``keep_succeeded``) with its result
    #: until pruned.
    SUCCEEDED = "succeeded"
    #: Out of retries; kept until pruned or retried by hand.
    DEAD = "dead"


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
    #: ``-priority``, computed by the database: the claim index's order.
    claim_rank: t.ClassVar[Mapped[int]]
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
    #: The JSON text of a kept task's return value.
    result: t.ClassVar[Mapped[str | None]]
    #: The JSON text of the last value the task reported as its progress.
    progress: t.ClassVar[Mapped[str | None]]
    #: When a kept task succeeded.
    finished: t.ClassVar[Mapped[datetime.datetime | None]]


@dataclasses.dataclass(frozen=True)
class Tables:
    """The queue's tables, as every layer above this one receives them."""

    #: The mapped model of the task table (``queue.Task``).
    model: type[TaskModel]
    #: The last tick each periodic task was enqueued for.
    periodic: sa.Table
    #: One row per running worker, kept fresh by its heartbeat.
    workers: sa.Table
    #: The paused queues and task names.
    pauses: sa.Table
    #: Finished attempts per task name and minute (see :mod:`.history`).
    stats: sa.Table

    @property
    def tasks(self) -> sa.Table:
        """The task table."""
        return self.model.__table__


_TIMESTAMPS = ("created", "run_at", "failed_last", "finished")


def _aware_on_load(target: t.Any, context: t.Any) -> None:
    _make_aware(target, _TIMESTAMPS)


def _aware_on_refresh(
    target: t.Any, context: t.Any, attrs: t.Iterable[str] | None
) -> None:
    _make_aware(target, _TIMESTAMPS if attrs is None else attrs)


def _make_aware(target: t.Any, keys: t.Iterable[str]) -> None:
    for key in keys:
        value = target.__dict__.get(key)
        if isinstance(value, datetime.datetime) and value.tzinfo is None:
            set_committed_value(target, key, as_utc(value))


def build_tables(db: SQLAlchemy, table: str) -> Tables:
    """Map the queue's tables on ``db.metadata`` so ``db.create_all()`` and
    migrations see them.

    Besides plainweb's columns (``id``, ``name``, ``data``, ``created``,
    ``failed_last``, ``failed_nr``, ``failed_error``) a task has ``run_at``, the
    earliest time it may run, which while a worker holds it is also its lease
    expiry: a claim moves ``run_at`` to the end of the lease, so a worker that
    dies simply lets the row become due again. A succeeded task kept with
    its result (``status = 'succeeded'``) has its expiry in ``run_at``; every
    index begins with ``status``, so kept rows are never in a claim's way.

    Whichever worker moves a periodic task's ``last_tick`` forward (a
    conditional ``UPDATE`` that only one transaction can win) enqueues that
    tick's task, so a tick runs once however many workers see it.
    """
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    when = sa.DateTime(timezone=True)
    unique = sa.text(f"unique_key IS NOT NULL AND status = '{STATUS_QUEUED}'")
    # Each index holds the rows of one status only, so kept and dead rows
    # never weigh on a claim: keeping a task moves its row out of the claim
    # indexes (an index delete, as deleting it would be) instead of into
    # another part of them. The statements name the status as a literal, so
    # both planners can prove a partial index applies.
    # Waiting rows only: a claim sets ``lease_owner``, which takes the row out
    # of both claim indexes (two index deletes) instead of moving it to their
    # ends (two deletes and two inserts), and a lease extension touches only
    # the small lease index. Fewer pages per commit on SQLite, fewer index
    # tuples per claimed row on PostgreSQL.
    waiting = sa.text(f"status = '{STATUS_QUEUED}' AND lease_owner IS NULL")
    # The due index also says "id > 0" (true of every row), which only the
    # "first due task of all" statement states: a planner can then never
    # take it for a statement of one name (walking every due task and
    # sorting them), whatever its statistics say. Without statistics (a
    # table just filled, before autovacuum's ANALYZE) PostgreSQL's cost
    # estimates tie, and a generic plan made then is kept until an ANALYZE
    # replans it.
    waiting_all = sa.text(
        f"status = '{STATUS_QUEUED}' AND lease_owner IS NULL AND id > 0"
    )
    leased = sa.text(f"status = '{STATUS_QUEUED}' AND lease_owner IS NOT NULL")
    dead = sa.text(f"status = '{STATUS_DEAD}'")
    succeeded = sa.text(f"status = '{STATUS_SUCCEEDED}'")
    attrs: dict[str, t.Any] = {
        "__tablename__": table,
        "__table_args__": (
            # The claim's one index: per task name, its queued rows in claim
            # order, so "the next task of this name" is one seek whatever the
            # backlog. Plain columns only (``claim_rank`` instead of a
            # descending ``priority``), which Alembic can compare on SQLite too.
            sa.Index(
                f"ix_{table}_claim",
                "status",
                "name",
                "claim_rank",
                "run_at",
                "id",
                sqlite_where=waiting,
                postgresql_where=waiting,
            ),
            sa.Index(
                f"ix_{table}_due",
                "status",
                "claim_rank",
                "run_at",
                "id",
                sqlite_where=waiting_all,
                postgresql_where=waiting_all,
            ),
            # Leases by expiry: a claim transaction now and then hands the
            # expired ones back (see ``Statements.reclaim``), one seek.
            sa.Index(
                f"ix_{table}_lease",
                "status",
                "run_at",
                sqlite_where=leased,
                postgresql_where=leased,
            ),
            sa.Index(
                f"ix_{table}_dead",
                "status",
                "name",
                sqlite_where=dead,
                postgresql_where=dead,
            ),
            sa.Index(
                f"ix_{table}_expiry",
                "status",
                "run_at",
                sqlite_where=succeeded,
                postgresql_where=succeeded,
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
        # Claim order is highest priority first: the database keeps the
        # negated priority, so the claim index is ascending in every column.
        "claim_rank": mapped_column(
            sa.Integer, sa.Computed("0 - priority", persisted=True)
        ),
        "data": mapped_column(sa.Text, nullable=True),
        "created": mapped_column(when, nullable=False),
        "run_at": mapped_column(when, nullable=False),
        "status": mapped_column(sa.String(16), nullable=False, default=STATUS_QUEUED),
        "attempts": mapped_column(sa.Integer, nullable=False, default=0),
        "lease_owner": mapped_column(sa.String(64), nullable=True),
        "failed_last": mapped_column(when, nullable=True),
        "failed_nr": mapped_column(sa.Integer, nullable=False, default=0),
        "failed_error": mapped_column(sa.Text, nullable=True),
        "unique_key": mapped_column(sa.String(255), nullable=True),
        # Kept only when the task's keep_succeeded is above 0; progress is
        # written while it runs (see flask_plainqueue.progress).
        "result": mapped_column(sa.Text, nullable=True),
        "progress": mapped_column(sa.Text, nullable=True),
        "finished": mapped_column(when, nullable=True),
        "__repr__": lambda self: f"<Task {self.id} {self.name!r} {self.status}>",
    }
    model = t.cast("type[TaskModel]", type("PlainQueueTask", (db.Model,), attrs))
    # SQLite keeps no offset: make loaded timestamps aware, so a row reads the
    # same on both databases.
    sa.event.listen(model, "load", _aware_on_load)
    sa.event.listen(model, "refresh", _aware_on_refresh)
    periodic = sa.Table(
        f"{table}_periodic",
        db.metadata,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("last_tick", when, nullable=False),
    )
    workers = sa.Table(
        f"{table}_workers",
        db.metadata,
        # The worker's id, which its claims record as ``lease_owner``.
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        # JSON lists: the queues it serves (NULL: every queue) and the task
        # names it can run, so ``why`` can tell a task nobody knows.
        sa.Column("queues", sa.Text, nullable=True),
        sa.Column("tasks", sa.Text, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started", when, nullable=False),
        sa.Column("heartbeat", when, nullable=False),
    )
    pauses = sa.Table(
        f"{table}_paused",
        db.metadata,
        # ``queue`` or ``task``: what ``name`` names.
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("paused_at", when, nullable=False),
    )
    stats = sa.Table(
        f"{table}_stats",
        db.metadata,
        # The minute's start (UTC) and the task name; every worker adds its
        # counts to the same row.
        sa.Column("minute", when, primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        # Failed attempts, the last one of a dead task included; dead: those
        # that left their task dead.
        sa.Column("succeeded", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("dead", sa.Integer, nullable=False),
        sa.Column("run_seconds", sa.Float, nullable=False),
    )
    return Tables(
        model=model, periodic=periodic, workers=workers, pauses=pauses, stats=stats
    )
