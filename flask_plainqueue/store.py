"""The queue's storage: insert, claim, settle, extend, release and prune, each
written once, on the backend of the app's database.

Nothing here touches ``current_app``: a :class:`Store` is built from an engine
and the queue's tables, and the app's session is passed in where a statement
must join the caller's transaction. Together with :mod:`.admin` and
:mod:`.transfer` it is the only code that writes to the queue's tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .backend import Backend
from .backend import ChangeCallback
from .backend import Watcher
from .claims import claimed
from .claims import ClaimedTask
from .claims import ClaimRequest
from .claims import Kept
from .claims import Outcomes
from .clock import Clock
from .config import QueueConfig
from .schema import Tables
from .statements import Statements

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .tasks import TaskRegistry

_T = t.TypeVar("_T")

#: Rows deleted per transaction when pruning or purging.
DELETE_BATCH = 1000


def backend_for(engine: Engine, statements: Statements, config: QueueConfig) -> Backend:
    """The backend of ``engine``'s dialect (imported only when used: the
    PostgreSQL dialect costs SQLite users memory)."""
    name = engine.dialect.name
    if name == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(engine, statements, config)
    if name == "postgresql":
        from .postgresql import PostgreSQLBackend

        return PostgreSQLBackend(engine, statements, config)
    raise NotImplementedError(
        f"flask-plainqueue supports SQLite and PostgreSQL, not {name!r}."
    )


class Store:
    """The queue's tables on one engine.

    :param engine: the app's engine for the queue table's bind.
    :param tables: the queue's tables.
    :param config: the app's queue settings.
    """

    def __init__(self, engine: Engine, tables: Tables, config: QueueConfig) -> None:
        self.engine = engine
        self.tables = tables
        self.table = tables.tasks
        self.statements = Statements(tables)
        self.backend = backend_for(engine, self.statements, config)
        #: The time due times, leases and ticks are computed on (see
        #: :meth:`.Backend.clock`); :meth:`use_clock` replaces it.
        self.clock: Clock = self.backend.clock()

    @contextlib.contextmanager
    def use_clock(self, clock: Clock) -> Iterator[None]:
        """Compute every time of the queue on ``clock`` in the block (the
        testing plugin's controllable clock), then go back to the real one.

        Every statement takes its time as a parameter, never from the
        database's ``now()``, so this governs delays, retries, leases and
        periodic ticks on every backend. Workers made in the block keep
        ``clock``; workers made before it keep theirs.
        """
        real, self.clock = self.clock, clock
        try:
            yield
        finally:
            self.clock = real

    # -- transactions -------------------------------------------------------

    def write(self, *, bookkeeping: bool = False) -> t.ContextManager[Connection]:
        """A connection in a write transaction that commits on success
        (:meth:`.Backend.write`)."""
        return self.backend.write(bookkeeping=bookkeeping)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading."""
        with self.engine.connect() as conn:
            yield conn

    def begin_session_write(self, session: Session, *, discard: bool = True) -> None:
        """Make the session's transaction a write transaction now (see
        :meth:`.Backend.begin_session_write`)."""
        self.backend.begin_session_write(session, discard=discard)

    def notify(self, conn: Connection) -> None:
        """Wake idle workers elsewhere when ``conn``'s transaction commits."""
        self.backend.notify(conn)

    def notify_changed(self, conn: Connection | Session, ids: Sequence[int]) -> None:
        """Wake the streams of tasks ``ids`` when ``conn``'s transaction commits
        (see :meth:`.Backend.notify_changed`)."""
        self.backend.notify_changed(conn, ids)

    # -- enqueue ------------------------------------------------------------

    def insert(
        self, session: Session | Connection, rows: Sequence[dict[str, t.Any]]
    ) -> list[int]:
        """Insert ``rows`` through ``session`` (joining its transaction) and return
        their ids, in order, in one round trip."""
        if not rows:
            return []
        if len(rows) > 1:
            return self.backend.insert_many(session, rows)
        stmt = self.statements.insert(self.backend.insert_columns())
        return [session.execute(stmt, rows[0]).scalar_one()]

    def perform(
        self, session: Session, rows: Sequence[dict[str, t.Any]], *, commit: bool
    ) -> list[int]:
        """Insert ``rows`` as ``perform`` does: through ``session``, committing it
        with ``commit`` (the caller's pending work with the rows), else joining
        its transaction; return their ids."""
        idle = not session.in_transaction() and not (
            session.new or session.dirty or session.deleted
        )
        if commit and idle:
            # Nothing of the caller's to commit with: a write transaction of its
            # own on the backend's fast path, where it has one.
            ids = self.backend.enqueue(rows)
            if ids is not None:
                return ids
        return self._in_session(session, commit, lambda: self.insert(session, rows))

    def perform_unique(
        self, session: Session, row: dict[str, t.Any], *, commit: bool
    ) -> tuple[int, bool]:
        """:meth:`insert_unique` as ``perform`` does it (see :meth:`perform`)."""
        return self._in_session(
            session, commit, lambda: self.insert_unique(session, row)
        )

    def _in_session(
        self, session: Session, commit: bool, insert: Callable[[], _T]
    ) -> _T:
        if not commit:
            return insert()
        try:
            # SQLite: the write lock first, so a concurrent writer makes this
            # wait for the busy timeout instead of failing on the upgrade.
            self.begin_session_write(session, discard=False)
            result = insert()
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return result

    def insert_unique(
        self, session: Session | Connection, row: dict[str, t.Any]
    ) -> tuple[int, bool]:
        """Insert ``row`` unless a queued task with its name and ``unique_key``
        exists; return the id of the new or the existing task, and whether it is
        new. The unique index decides, so two racing processes cannot both insert.
        """
        s = self.statements
        c = self.table.c
        stmt = (
            self.backend.upsert(self.table)
            .values(**row)
            .on_conflict_do_nothing(
                index_elements=[c.name, c.unique_key], index_where=s.unique_where
            )
            .returning(c.id, *self.backend.insert_columns())
        )
        for _ in range(10):
            new_id = session.execute(stmt).scalar()
            if new_id is not None:
                return int(new_id), True
            existing = session.execute(s.unique_existing(row)).scalar()
            if existing is not None:
                return int(existing), False
            # The conflicting task finished between the two statements: try again.
        raise RuntimeError("could not insert or find a unique task")  # pragma: no cover

    # -- the worker ---------------------------------------------------------

    def claim(
        self, request: ClaimRequest, outcomes: Outcomes | None = None
    ) -> list[ClaimedTask]:
        """Write ``outcomes``, then claim up to one batch of due tasks of one name,
        in one write transaction, so a busy worker commits once per batch."""
        rows = self.backend.claim(request, outcomes)
        if outcomes:
            # Only once committed: a failed commit leaves them to be written again.
            outcomes.clear()
        return claimed(rows)

    def claim_id(
        self, *, owner: str, task_id: int, until: datetime.datetime
    ) -> ClaimedTask | None:
        """Claim one queued task by id, due or not (eager mode)."""
        with self.write() as conn:
            row = conn.execute(
                self.statements.claim_id,
                {"p_id": task_id, "owner": owner, "until": until},
            ).first()
        return None if row is None else claimed([row])[0]

    def settle(self, owner: str, outcomes: Outcomes, now: datetime.datetime) -> int:
        """Write finished attempts now (before idling or stopping); return how
        many rows were still ``owner``'s under the attempt that finished (the
        others' outcomes are dropped: fenced by owner and attempt)."""
        if not outcomes:
            return 0
        with self.write(bookkeeping=True) as conn:
            written = self.backend.settle_on(conn, owner, outcomes, now)
        outcomes.clear()
        return written

    def complete_in_session(
        self,
        session: Session,
        owner: str,
        task: ClaimedTask,
        kept: Kept | None = None,
    ) -> bool:
        """Delete a finished task (or keep it, with ``kept``) through ``session``,
        so this commits with the session's other writes (the success
        callback's). Returns whether this worker still held the task; if not,
        the caller must roll back."""
        stmt: sa.Executable
        if kept is None:
            stmt = self.statements.delete_owned
            params = {"b_id": task.id, "b_attempts": task.attempts, "owner": owner}
        else:
            stmt = self.statements.keep_owned
            params = self.statements.kept_params(owner, kept)
        result = session.execute(stmt, params)
        held = t.cast(int, result.rowcount) == 1  # type: ignore[attr-defined]
        if held and kept is not None:
            self.notify_changed(session, [task.id])
        return held

    def write_progress(self, owner: str, task: ClaimedTask, progress: str) -> bool:
        """Write a running task's progress (JSON text) in a short transaction of
        its own; returns whether this worker still held the task."""
        with self.write() as conn:
            result = conn.execute(
                self.statements.progress_owned,
                {
                    "b_id": task.id,
                    "b_attempts": task.attempts,
                    "owner": owner,
                    "b_progress": progress,
                },
            )
            if result.rowcount != 1:
                return False
            self.notify_changed(conn, [task.id])
            return True

    def extend(self, owner: str, ids: Sequence[int], until: datetime.datetime) -> int:
        """Move the lease of running tasks to ``until``; returns how many held."""
        if not ids:
            return 0
        with self.write(bookkeeping=True) as conn:
            result = conn.execute(
                self.statements.extend,
                {"owner": owner, "ids": list(ids), "until": until},
            )
            return result.rowcount

    def release(self, owner: str, ids: Sequence[int], now: datetime.datetime) -> int:
        """Hand back tasks this worker will not finish: due at once, for anyone."""
        if not ids:
            return 0
        with self.write(bookkeeping=True) as conn:
            result = conn.execute(
                self.statements.release, {"owner": owner, "ids": list(ids), "now": now}
            )
            if result.rowcount:
                self.notify(conn)
            return result.rowcount

    def pinned(self) -> t.ContextManager[None]:
        """Keep what this thread's claims need between them (a claim loop)."""
        return self.backend.pinned()

    def watcher(self, on_change: ChangeCallback, name: str) -> Watcher | None:
        """What wakes an idle worker on new tasks (see :meth:`.Backend.watcher`)."""
        return self.backend.watcher(on_change, name)

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the queue's table does not exist (yet)."""
        return self.backend.is_missing_table(exc)

    def pool_capacity(self) -> int | None:
        """How many connections the engine's pool hands out at once."""
        return self.backend.pool_capacity()

    def unknown_names(
        self, known: Sequence[str], now: datetime.datetime, limit: int = 50
    ) -> list[str]:
        """Names of due tasks that no known definition will ever claim."""
        with self.read() as conn:
            return list(
                conn.execute(
                    self.statements.unknown_names(known, limit), {"now": now}
                ).scalars()
            )

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
        periodic = self.tables.periodic
        with self.write() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for this statement.
            created = conn.execute(
                self.backend.upsert(periodic)
                .values(name=name, last_tick=tick)
                .on_conflict_do_nothing(index_elements=[periodic.c.name])
                .returning(periodic.c.name)
            ).first()
            if created is not None:
                return False
            moved = conn.execute(self.statements.move_tick(name, tick)).rowcount
            if not moved or row is None:
                return False
            conn.execute(self.statements.insert(self.backend.insert_columns()), [row])
            return True

    def delete_dead(
        self,
        *,
        before: datetime.datetime | None = None,
        name: str | None = None,
        batch: int = DELETE_BATCH,
        max_batches: int | None = None,
    ) -> int:
        """Delete dead tasks (of task ``name``) whose last failure is before
        ``before`` (all dead tasks if ``None``), ``batch`` rows per transaction so
        a large delete never holds the write lock for long; return how many."""
        return self._delete_batches(
            self.statements.dead(before=before, name=name), batch, max_batches
        )

    def delete_expired(
        self,
        now: datetime.datetime,
        *,
        batch: int = DELETE_BATCH,
        max_batches: int | None = None,
    ) -> int:
        """Delete succeeded tasks whose keep period ended by ``now``, ``batch``
        rows per transaction; return how many."""
        return self._delete_batches(self.statements.expired(now), batch, max_batches)

    def _delete_batches(
        self, where: sa.ColumnElement[bool], batch: int, max_batches: int | None
    ) -> int:
        stmt = self.statements.delete_batch(where, batch)
        total = 0
        rounds = 0
        while max_batches is None or rounds < max_batches:
            rounds += 1
            with self.write() as conn:
                deleted = conn.execute(stmt).rowcount
            total += deleted
            if deleted < batch:
                break
        return total


@dataclasses.dataclass(frozen=True)
class AppParts:
    """What the queue keeps for one app, which its workers share."""

    #: The app's Flask-SQLAlchemy instance.
    db: SQLAlchemy
    #: The app's queue storage.
    store: Store
    #: The queue's task definitions.
    registry: TaskRegistry
    #: The app's validated queue settings.
    config: QueueConfig
