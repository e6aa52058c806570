"""All of the queue's SQL: insert, claim, complete, fail, release, inspect.

Nothing here touches ``current_app``: a :class:`Storage` is built from an engine
and the queue table, and the app's session is passed in where a statement must
join the caller's transaction. SQLite and PostgreSQL differ only in how a write
transaction starts (``BEGIN IMMEDIATE``) and in ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import re
import typing as t
from collections.abc import Iterator
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .exceptions import TaskDataError
from .models import STATUS_DEAD
from .models import STATUS_QUEUED
from .sqlite import HotPath

logger = logging.getLogger(__name__)

#: A JSON ``\u0000`` escape (not an escaped backslash followed by ``u0000``):
#: ``jsonb`` cannot store the NUL character.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def new_row(
    name: str,
    *,
    queue: str,
    priority: int,
    data: str,
    now: datetime.datetime,
    run_at: datetime.datetime,
    unique_key: str | None = None,
) -> dict[str, t.Any]:
    """The column values of a task about to be inserted."""
    return {
        "name": name,
        "queue": queue,
        "priority": priority,
        "data": data,
        "created": now,
        "run_at": run_at,
        "status": STATUS_QUEUED,
        "attempts": 0,
        "failed_nr": 0,
        "unique_key": unique_key,
    }


@dataclasses.dataclass(frozen=True)
class ClaimedTask:
    """A row a worker holds under a lease."""

    id: int
    name: str
    data: str | None
    attempts: int
    failed_nr: int
    priority: int


@dataclasses.dataclass(frozen=True)
class Failure:
    """The outcome of a failed attempt, to be written with :meth:`Storage.settle`."""

    id: int
    attempts: int
    error: str
    run_at: datetime.datetime
    dead: bool
    #: ``False`` for :class:`~flask_plainqueue.Retry`: rescheduled, not a failure.
    counts: bool = True


@dataclasses.dataclass
class Outcomes:
    """Finished attempts not yet written; written in the next write transaction."""

    completed: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    failed: list[Failure] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed)

    def clear(self) -> None:
        self.completed.clear()
        self.failed.clear()


class Storage:
    """The queue table's statements, bound to one engine.

    :param engine: the app's engine for the queue table's bind.
    :param table: the queue table (``queue.Task.__table__``).
    """

    def __init__(
        self,
        engine: Engine,
        table: sa.Table,
        *,
        notify: bool = True,
        periodic: sa.Table | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        #: The periodic tasks' last ticks (see ``models.build_periodic_table``).
        self.periodic = periodic
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        #: The LISTEN/NOTIFY channel of this table (PostgreSQL).
        self.channel = table.name[:63]
        #: Whether inserts send NOTIFY (PostgreSQL with ``PLAINQUEUE_NOTIFY``).
        self.notifies = notify and self.dialect == "postgresql"
        c = table.c
        # Evaluated inside the insert (in RETURNING), so the notification is part
        # of the inserting transaction: PostgreSQL delivers it only at commit,
        # never after a rollback, and folds repeats in one transaction into one.
        # The payload is the task's queue, so a worker can ignore other queues.
        self._notify_cols: tuple[sa.ColumnElement[t.Any], ...] = (
            (sa.func.pg_notify(sa.literal(self.channel, sa.Text), c.queue),)
            if self.notifies
            else ()
        )
        order = (c.priority.desc(), c.run_at, c.id)
        self._order = order
        due = sa.and_(c.status == STATUS_QUEUED, c.run_at <= sa.bindparam("now"))
        self._due = due
        self._statements: dict[t.Hashable, t.Any] = {}
        #: SQLite: the claim and plain enqueue on the driver's cursor.
        self.hot = HotPath(self) if self.is_sqlite else None
        self._claim_one = self._claim_statement(
            sa.select(c.id).where(
                c.id == sa.bindparam("p_id"), c.status == STATUS_QUEUED
            ),
            skip_locked=False,
        )
        owned = sa.and_(
            c.id == sa.bindparam("b_id"),
            c.lease_owner == sa.bindparam("owner"),
            c.attempts == sa.bindparam("b_attempts"),
        )
        self._delete_owned = sa.delete(table).where(owned)
        self._fail = (
            sa.update(table)
            .where(owned)
            .values(
                failed_nr=c.failed_nr + sa.bindparam("b_inc"),
                failed_last=sa.bindparam("b_now"),
                failed_error=sa.bindparam("b_error"),
                run_at=sa.bindparam("b_run_at"),
                status=sa.bindparam("b_status"),
                lease_owner=None,
            )
        )
        self._release = (
            sa.update(table)
            .where(
                c.lease_owner == sa.bindparam("owner"),
                c.id.in_(sa.bindparam("ids", expanding=True)),
            )
            .values(lease_owner=None, run_at=sa.bindparam("now"))
        )
        self._extend = (
            sa.update(table)
            .where(
                c.lease_owner == sa.bindparam("owner"),
                c.id.in_(sa.bindparam("ids", expanding=True)),
            )
            .values(run_at=sa.bindparam("until"))
        )

    def _claim_statement(
        self, ids: sa.Select[tuple[int]], *, skip_locked: bool = True
    ) -> sa.Update:
        c = self.table.c
        if self.dialect == "postgresql" and skip_locked:
            # Other workers skip the rows this one is locking instead of waiting.
            ids = ids.with_for_update(skip_locked=True)
        return (
            sa.update(self.table)
            .where(c.id.in_(ids.scalar_subquery()))
            .values(
                lease_owner=sa.bindparam("owner"),
                run_at=sa.bindparam("until"),
                attempts=c.attempts + 1,
            )
            .returning(c.id, c.name, c.data, c.attempts, c.failed_nr, c.priority)
        )

    def _queue_filter(self, queues: int | None) -> list[sa.ColumnElement[bool]]:
        if queues is None:
            return []
        params: list[sa.BindParameter[str]] = [
            sa.bindparam(f"q{i}") for i in range(queues)
        ]
        return [self.table.c.queue.in_(params)]

    def head_statement(
        self, names: int, queues: int | None
    ) -> sa.CompoundSelect[t.Any]:
        """For each of ``names`` task names (``n0``, ``n1``, ...), its first due
        task in claim order: one index seek per name. Scanning the claim order
        across all names instead would walk past every due row of names this
        worker does not know, which after a rolling deploy can be all of them."""
        key = ("head", names, queues)
        stmt = self._statements.get(key)
        if stmt is None:
            c = self.table.c
            parts = [
                sa.select(c.name, c.priority, c.run_at, c.id)
                .where(
                    self._due,
                    c.name == sa.bindparam(f"n{i}"),
                    *self._queue_filter(queues),
                )
                .order_by(*self._order)
                .limit(1)
                .subquery()
                .select()
                for i in range(names)
            ]
            stmt = self._statements[key] = sa.union_all(*parts)
        return t.cast("sa.CompoundSelect[t.Any]", stmt)

    def claim_statement(self, queues: int | None) -> sa.Update:
        """Take up to ``limit`` due tasks named ``p_name`` (of queues ``q0``...)."""
        key = ("claim", queues)
        stmt = self._statements.get(key)
        if stmt is None:
            c = self.table.c
            ids = (
                sa.select(c.id)
                .where(
                    self._due,
                    c.name == sa.bindparam("p_name"),
                    *self._queue_filter(queues),
                )
                .order_by(*self._order)
                .limit(sa.bindparam("limit"))
            )
            stmt = self._statements[key] = self._claim_statement(ids)
        return t.cast(sa.Update, stmt)

    @staticmethod
    def name_params(names: Sequence[str]) -> dict[str, str]:
        return {f"n{i}": name for i, name in enumerate(names)}

    @staticmethod
    def queue_params(queues: Sequence[str] | None) -> dict[str, str]:
        return {f"q{i}": queue for i, queue in enumerate(queues or ())}

    def _upsert(self, table: sa.Table) -> t.Any:
        """The dialect's ``INSERT`` that has ``on_conflict_do_nothing``."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction that commits on success.

        On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken up
        front, so a concurrent writer waits for the busy timeout instead of
        failing when a read transaction tries to upgrade.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def begin_session_write(self, session: Session, *, discard: bool = True) -> None:
        """Make the session's transaction a write transaction now (SQLite only;
        elsewhere nothing to do), so a concurrent writer makes it wait for the
        busy timeout instead of failing on the upgrade from reader to writer.

        :param discard: roll back what the session holds first (the worker, after
            a task that did not commit its own writes); otherwise its pending work
            joins the transaction (``perform``).
        """
        if not self.is_sqlite:
            return
        if discard and session.in_transaction():
            session.rollback()
        connection = session.connection()
        if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    # -- enqueue ------------------------------------------------------------

    def insert(self, session: Session, rows: Sequence[dict[str, t.Any]]) -> list[int]:
        """Insert ``rows`` through ``session`` (joining its transaction) and return
        their ids, in order, in one round trip."""
        if not rows:
            return []
        if self.dialect == "postgresql":
            for row in rows:
                _check_jsonb(row)
        c = self.table.c
        if len(rows) == 1:
            result = session.execute(
                sa.insert(self.table).returning(c.id, *self._notify_cols), rows[0]
            )
            return [result.scalar_one()]
        stmt = sa.insert(self.table).returning(
            c.id, *self._notify_cols, sort_by_parameter_order=True
        )
        return list(session.execute(stmt, list(rows)).scalars())

    def insert_unique(
        self, session: Session, row: dict[str, t.Any]
    ) -> tuple[int, bool]:
        """Insert ``row`` unless a queued task with its name and ``unique_key``
        exists; return the id of the new or the existing task, and whether it is
        new. The unique index decides, so two racing processes cannot both insert.
        """
        c = self.table.c
        where = sa.and_(c.unique_key.is_not(None), c.status == STATUS_QUEUED)
        if self.dialect == "postgresql":
            _check_jsonb(row)
        stmt = (
            self._upsert(self.table)
            .values(**row)
            .on_conflict_do_nothing(
                index_elements=[c.name, c.unique_key], index_where=where
            )
            .returning(c.id, *self._notify_cols)
        )
        for _ in range(10):
            new_id = session.execute(stmt).scalar()
            if new_id is not None:
                return new_id, True
            existing = session.execute(
                sa.select(c.id).where(
                    c.name == row["name"], c.unique_key == row["unique_key"], where
                )
            ).scalar()
            if existing is not None:
                return existing, False
            # The conflicting task finished between the two statements: try again.
        raise RuntimeError("could not insert or find a unique task")  # pragma: no cover

    # -- worker -------------------------------------------------------------

    def claim(
        self,
        *,
        owner: str,
        names: Sequence[str],
        batch_sizes: t.Mapping[str, int],
        now: datetime.datetime,
        until: datetime.datetime,
        queues: Sequence[str] | None = None,
        outcomes: Outcomes | None = None,
    ) -> list[ClaimedTask]:
        """Write ``outcomes``, then claim up to one batch of due tasks of one name.

        The next task in claim order (priority, then due time, then id) decides the
        name; up to ``batch_sizes[name]`` due rows of that name are then taken in
        one ``UPDATE ... RETURNING``. Both happen in the one write transaction that
        also settles the previous batch, so a busy worker commits once per batch.
        """
        if self.hot is not None:
            rows: Sequence[t.Any] = self.hot.claim(
                owner, names, batch_sizes, now, until, queues, outcomes
            )
        else:
            with self.write() as conn:
                if outcomes:
                    self._settle(conn, owner, outcomes, now)
                rows = self._claim_rows(
                    conn, owner, names, batch_sizes, now, until, queues
                )
        if outcomes:
            # Only once committed: a failed commit leaves them to be written again.
            outcomes.clear()
        claimed = [ClaimedTask(*t.cast("tuple[t.Any, ...]", row)) for row in rows]
        # RETURNING gives no order; run the batch in claim order.
        claimed.sort(key=lambda task: (-task.priority, task.id))
        return claimed

    def _claim_rows(
        self,
        conn: Connection,
        owner: str,
        names: Sequence[str],
        batch_sizes: t.Mapping[str, int],
        now: datetime.datetime,
        until: datetime.datetime,
        queues: Sequence[str] | None,
    ) -> Sequence[sa.Row[t.Any]]:
        if not names:
            return []
        params: dict[str, t.Any] = {"now": now, **self.queue_params(queues)}
        shape_q = None if queues is None else len(queues)
        if len(names) == 1:
            name = names[0]
        else:
            head = self.head_statement(len(names), shape_q)
            heads = conn.execute(head, {**params, **self.name_params(names)}).all()
            if not heads:
                return []
            # One row per name at most: the first in claim order wins.
            name = min(heads, key=lambda r: (-r[1], r[2], r[3]))[0]
        params.update(owner=owner, until=until, p_name=name, limit=batch_sizes[name])
        return conn.execute(self.claim_statement(shape_q), params).all()

    def claim_id(
        self, *, owner: str, task_id: int, until: datetime.datetime
    ) -> ClaimedTask | None:
        """Claim one queued task by id, due or not (eager mode)."""
        with self.write() as conn:
            row = conn.execute(
                self._claim_one, {"p_id": task_id, "owner": owner, "until": until}
            ).first()
        return None if row is None else ClaimedTask(*row)

    def settle(self, owner: str, outcomes: Outcomes, now: datetime.datetime) -> None:
        """Write finished attempts now (before idling or stopping)."""
        if not outcomes:
            return
        with self.write() as conn:
            self._settle(conn, owner, outcomes, now)
        outcomes.clear()

    def _settle(
        self, conn: Connection, owner: str, outcomes: Outcomes, now: datetime.datetime
    ) -> None:
        for stmt, rows in self.settle_params(owner, outcomes, now):
            conn.execute(stmt, rows)

    def settle_params(
        self, owner: str, outcomes: Outcomes, now: datetime.datetime
    ) -> list[tuple[t.Any, list[dict[str, t.Any]]]]:
        """The statements that write ``outcomes``, each with its parameter sets."""
        writes: list[tuple[t.Any, list[dict[str, t.Any]]]] = []
        if outcomes.completed:
            writes.append(
                (
                    self._delete_owned,
                    [
                        {"b_id": i, "b_attempts": a, "owner": owner}
                        for i, a in outcomes.completed
                    ],
                )
            )
        if outcomes.failed:
            writes.append(
                (
                    self._fail,
                    [
                        {
                            "b_id": f.id,
                            "b_attempts": f.attempts,
                            "owner": owner,
                            "b_inc": 1 if f.counts else 0,
                            "b_now": now,
                            "b_error": f.error,
                            "b_run_at": f.run_at,
                            "b_status": STATUS_DEAD if f.dead else STATUS_QUEUED,
                        }
                        for f in outcomes.failed
                    ],
                )
            )
        return writes

    def complete_in_session(
        self, session: Session, owner: str, task: ClaimedTask
    ) -> bool:
        """Delete a finished task through ``session``, so the deletion commits with
        the session's other writes (the success callback's). Returns whether this
        worker still held the task; if not, the caller must roll back."""
        result = session.execute(
            self._delete_owned,
            {"b_id": task.id, "b_attempts": task.attempts, "owner": owner},
        )
        return t.cast(int, result.rowcount) == 1  # type: ignore[attr-defined]

    def extend(self, owner: str, ids: Sequence[int], until: datetime.datetime) -> int:
        """Move the lease of running tasks to ``until``; returns how many held."""
        if not ids:
            return 0
        with self.write() as conn:
            result = conn.execute(
                self._extend, {"owner": owner, "ids": list(ids), "until": until}
            )
            return result.rowcount

    def release(self, owner: str, ids: Sequence[int], now: datetime.datetime) -> int:
        """Hand back tasks this worker will not finish: due at once, for anyone."""
        if not ids:
            return 0
        with self.write() as conn:
            result = conn.execute(
                self._release, {"owner": owner, "ids": list(ids), "now": now}
            )
            if self.notifies and result.rowcount:
                # Idle workers elsewhere take them at once (delivered at commit).
                conn.execute(sa.select(sa.func.pg_notify(self.channel, "")))
            return result.rowcount

    def unknown_names(
        self, known: Sequence[str], now: datetime.datetime, limit: int = 50
    ) -> list[str]:
        """Names of due tasks that no known definition will ever claim."""
        c = self.table.c
        stmt = (
            sa.select(c.name)
            .where(self._due, c.name.not_in(list(known)))
            .group_by(c.name)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(stmt, {"now": now}).scalars())

    # -- periodic tasks and retention -----------------------------------------

    def enqueue_tick(
        self, name: str, tick: datetime.datetime, row: dict[str, t.Any] | None
    ) -> bool:
        """Record ``tick`` as the last tick of periodic task ``name`` and, if this
        call is the one that moved it forward, insert ``row`` in the same
        transaction. Returns whether ``row`` was inserted.

        The first time a schedule is seen its tick is recorded and nothing is
        enqueued: a new periodic task waits for its next tick. ``row=None``
        records a tick without running it.
        """
        assert self.periodic is not None, "Storage was built without a periodic table"
        p = self.periodic.c
        with self.write() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for this statement.
            created = conn.execute(
                self._upsert(self.periodic)
                .values(name=name, last_tick=tick)
                .on_conflict_do_nothing(index_elements=[p.name])
                .returning(p.name)
            ).first()
            if created is not None:
                return False
            # Only one transaction can move last_tick forward to this tick; on
            # PostgreSQL a concurrent one waits for the row lock, then sees the
            # new value and matches nothing.
            moved = conn.execute(
                sa.update(self.periodic)
                .where(p.name == name, p.last_tick < tick)
                .values(last_tick=tick)
            ).rowcount
            if not moved or row is None:
                return False
            conn.execute(
                sa.insert(self.table).returning(self.table.c.id, *self._notify_cols),
                row,
            )
            return True

    def prune(
        self, before: datetime.datetime, *, batch: int = 1000, max_batches: int = 100
    ) -> int:
        """Delete dead tasks that last failed before ``before``, ``batch`` rows per
        transaction so a large prune never holds the write lock for long."""
        c = self.table.c
        doomed = (
            sa.select(c.id)
            .where(c.status == STATUS_DEAD, c.failed_last < before)
            .limit(batch)
            .scalar_subquery()
        )
        stmt = sa.delete(self.table).where(c.id.in_(doomed))
        total = 0
        for _ in range(max_batches):
            with self.write() as conn:
                deleted = conn.execute(stmt).rowcount
            total += deleted
            if deleted < batch:
                break
        return total


def _check_jsonb(row: t.Mapping[str, t.Any]) -> None:
    text = row.get("data")
    if isinstance(text, str) and "\\u0000" in text and _JSON_NUL.search(text):
        raise TaskDataError(
            f"The data for task {row.get('name')!r} contains the NUL character"
            " (\\u0000) in a string, which PostgreSQL's jsonb cannot store. Remove"
            " it, or encode the value (e.g. base64) before passing it."
        )
