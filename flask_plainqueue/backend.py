"""What a database backend provides to the store: the interface that
:mod:`.sqlite` and :mod:`.postgresql` implement, each owning all of its
dialect's specifics (connection setup, how a write transaction begins, the
claim, NOTIFY or the change probe, and its errors)."""

from __future__ import annotations

import contextlib
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .claims import ClaimRequest
from .claims import Outcomes
from .clock import Clock
from .clock import utcnow
from .config import QueueConfig
from .statements import Statements

#: ``on_change(payload)``: something was committed that a worker may claim.
#: ``payload`` is the task's queue, ``""`` for any queue, or ``None`` when
#: changes may have been missed (after reconnecting).
ChangeCallback = Callable[[str | None], None]


class Watcher(t.Protocol):
    """Wakes a worker when the queue table changes, so idle claim loops need
    not poll: LISTEN/NOTIFY on PostgreSQL, a change probe on SQLite."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def reliable(self) -> bool:
        """Whether a committed task wakes the worker now (if not, it polls)."""


class WatcherThread:
    """A :class:`Watcher` whose work (:meth:`_run`) runs on a daemon thread of
    its own until :meth:`stop`.

    :param backend: the backend whose database it watches.
    :param on_change: called in that thread when tasks may be claimable; must
        be quick.
    :param name: names the thread and the log lines (e.g. the worker id).
    """

    #: The thread is named ``plainqueue-<kind>-<name>``.
    kind: t.ClassVar[str]

    def __init__(
        self, backend: Backend, on_change: ChangeCallback, *, name: str
    ) -> None:
        self.backend = backend
        self.on_change = on_change
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"plainqueue-{self.kind}-{self.name}", daemon=True
        )
        self._thread.start()

    def _join(self, timeout: float | None) -> threading.Thread | None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it
        (unless called from it); return the thread, if it was started."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return thread

    def _run(self) -> None:
        raise NotImplementedError


class Backend:
    """The dialect-specific half of the store, for one engine.

    :param engine: the engine of the queue table's bind.
    :param statements: the queue's dialect-neutral statements.
    :param config: the app's queue settings.
    """

    #: The SQLAlchemy dialect name this backend serves.
    dialect: t.ClassVar[str]
    #: Whether an open write transaction locks the whole database (SQLite): an
    #: atomic task then holds the lock while it runs, so no other worker can
    #: claim its row and a lease extension would only wait for the lock.
    write_locks_database: t.ClassVar[bool] = False

    def __init__(
        self, engine: Engine, statements: Statements, config: QueueConfig
    ) -> None:
        self.engine = engine
        self.statements = statements
        self.config = config

    def configure(self) -> None:
        """Set up the engine's connections (called once, by ``init_app``)."""

    def clock(self) -> Clock:
        """The clock due times, leases and ticks are computed on: the
        database's where hosts may differ, this host's for SQLite (one host)."""
        return utcnow

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def write(self, *, bookkeeping: bool = False) -> Iterator[Connection]:
        """A connection in a write transaction that commits on success.

        :param bookkeeping: the worker's own claim, settle, lease extension or
            hand-back (see :meth:`begin_bookkeeping`).
        """
        with self.engine.connect() as conn:
            self.begin_write(conn)
            if bookkeeping:
                self.begin_bookkeeping(conn)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def begin_write(self, conn: Connection) -> None:
        """Begin a write transaction on ``conn``."""

    def begin_bookkeeping(self, conn: Connection) -> None:
        """Set up a write transaction of the worker's own bookkeeping, which a
        lost commit can only make due or run again (at-least-once allows it);
        on PostgreSQL, its ``synchronous_commit``."""

    def begin_session_write(self, session: Session, *, discard: bool) -> None:
        """Make the session's transaction a write transaction now.

        :param discard: roll back what the session holds first (the worker,
            after a task that did not commit its own writes); otherwise its
            pending work joins the transaction (``perform``).
        """
        if discard and session.in_transaction():
            session.rollback()

    # -- enqueue ------------------------------------------------------------

    def insert_columns(self) -> tuple[sa.ColumnElement[t.Any], ...]:
        """Extra ``RETURNING`` columns of an insert (NOTIFY on PostgreSQL)."""
        return ()

    def insert_many(
        self, conn: Session | Connection, rows: Sequence[t.Mapping[str, t.Any]]
    ) -> list[int]:
        """Insert ``rows`` (two or more) through ``conn``, joining its
        transaction, and return their ids in order."""
        stmt = self.statements.insert(self.insert_columns())
        return list(conn.execute(stmt, list(rows)).scalars())

    def notify(self, conn: Connection) -> None:
        """Tell idle workers elsewhere that tasks became due (at commit)."""

    def enqueue(self, rows: Sequence[t.Mapping[str, t.Any]]) -> list[int] | None:
        """Insert ``rows`` in a transaction of their own, faster than through a
        session; ``None`` where the backend has no such path."""
        return None

    def upsert(self, table: sa.Table) -> t.Any:
        """The dialect's ``INSERT`` that has ``on_conflict_do_nothing`` and
        ``on_conflict_do_update``."""
        raise NotImplementedError

    # -- the worker ---------------------------------------------------------

    def claim(
        self, request: ClaimRequest, outcomes: Outcomes | None
    ) -> Sequence[t.Any]:
        """In one write transaction, write ``outcomes`` (finished attempts of
        ``request.owner``), then claim up to one batch of due tasks of one name;
        return the claimed rows (``id, name, data, attempts, failed_nr,
        priority``).

        The next task in claim order (priority, then due time, then id) decides
        the name; up to its batch size of due rows of that name are taken.
        """
        raise NotImplementedError

    def pinned(self) -> t.ContextManager[None]:
        """Keep what this thread's claims need between them (a claim loop)."""
        return contextlib.nullcontext()

    def watcher(self, on_change: ChangeCallback, name: str) -> Watcher | None:
        """A watcher that calls ``on_change`` when tasks may be claimable, or
        ``None`` (the worker polls)."""
        return None

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether ``exc`` says a table does not exist."""
        raise NotImplementedError

    # -- task changes (streams) ---------------------------------------------------

    #: Whether :meth:`change_watcher` reports every committed change of a task
    #: (its claim and its deletion included); if not, streams also read their
    #: task's row now and then.
    changes_complete: t.ClassVar[bool] = False

    def change_watcher(self, on_change: ChangeCallback, name: str) -> Watcher | None:
        """A watcher that calls ``on_change`` when stored tasks may have
        changed: with the changed tasks' ids (comma-separated), or ``""`` or
        ``None`` for any task. ``None``: streams poll."""
        return None

    def notify_changed(self, conn: Connection | Session, ids: Sequence[int]) -> None:
        """Tell the change watchers of other processes, at commit, that the
        tasks ``ids`` changed (progress, a kept result, a failure)."""

    # -- shared by the backends -------------------------------------------------

    def settle_on(
        self, conn: Connection, owner: str, outcomes: Outcomes, now: t.Any
    ) -> int:
        """Write ``outcomes`` on ``conn`` (inside a write transaction); return
        how many rows were still ``owner``'s under the attempt that finished,
        and so were written (exact except in psycopg's pipeline mode, where
        the driver reports no counts)."""
        written = 0
        for stmt, rows in self.statements.settle_params(owner, outcomes, now):
            written += conn.execute(stmt, rows).rowcount
        self.notify_settled(conn, outcomes)
        return written

    def notify_settled(self, conn: Connection, outcomes: Outcomes) -> None:
        """:meth:`notify_changed` for the kept and failed ones of ``outcomes``:
        a success that is not kept deletes its row, which no stream can show,
        and on the throughput path a notification per task would cost every
        commit (see :ref:`streaming`)."""
        if outcomes.kept or outcomes.failed:
            self.notify_changed(
                conn,
                [k.id for k in outcomes.kept] + [f.id for f in outcomes.failed],
            )

    def pool_capacity(self) -> int | None:
        """How many connections the engine's pool hands out at once, or
        ``None`` when it has no limit."""
        pool = self.engine.pool
        size = getattr(pool, "size", None)
        overflow = getattr(pool, "_max_overflow", None)
        if not callable(size) or not isinstance(overflow, int) or overflow < 0:
            return None
        return int(size()) + overflow
