"""The PostgreSQL backend: claims with ``FOR UPDATE SKIP LOCKED`` in one
statement, NOTIFY sent inside the inserting transaction, and the LISTEN
connection that wakes idle workers.

NOTIFY is evaluated inside the insert (in ``RETURNING``), so PostgreSQL
delivers it only at commit (with ``perform(..., commit=False)``, when the
caller commits), never after a rollback, and folds repeats in one transaction
into one. The payload is the task's queue, so a worker can ignore other queues.

Polling stays the safety net: delayed tasks, retries and expired leases send no
notification. The LISTEN connection itself is :mod:`.pg_listen`'s.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
import typing as t
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import Grouping

from .backend import Backend
from .backend import ChangeCallback
from .claims import ClaimRequest
from .claims import Outcomes
from .clock import as_utc
from .clock import Clock
from .clock import utcnow
from .pg_listen import Listener

logger = logging.getLogger(__name__)

#: The SQLSTATE of "undefined_table".
UNDEFINED_TABLE = "42P01"
#: How often the database's clock is read again (seconds); in between it is
#: carried forward with this host's monotonic clock.
CLOCK_RESYNC = 300.0
#: After a failed read, how long the host's own clock stands in.
CLOCK_RETRY = 5.0
#: When this host's wall clock has moved this many seconds more (or less)
#: than its monotonic clock since the last read, the database's clock is read
#: again: the monotonic clock stood still while the host was suspended
#: (Linux's and macOS's do not count a suspend), or the wall clock was set.
CLOCK_JUMP = 1.0

#: A reading of the database's clock: the server's time, the monotonic time
#: it was read at, when the next read is due, and this host's wall clock
#: minus its monotonic clock then.
_Base = tuple[datetime.datetime, float, float, float]


class DatabaseClock:
    """The database server's time, so that every host computes due times,
    leases and periodic ticks on one clock, however wrong its own is.

    Read with one query every :data:`CLOCK_RESYNC` seconds and carried forward
    with ``time.monotonic()`` in between (immune to this host's clock being
    set), and read again after the host slept (see :data:`CLOCK_JUMP`);
    while the server cannot be reached, the last reading goes on, or this
    host's clock before the first.
    """

    def __init__(self, engine: t.Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._base: _Base | None = None

    def __call__(self) -> datetime.datetime:
        mono = time.monotonic()
        base = self._base
        if (
            base is None
            or mono >= base[2]
            or abs(time.time() - mono - base[3]) > CLOCK_JUMP
        ):
            base = self._sync(base)
        if base is None:
            return utcnow()
        return base[0] + datetime.timedelta(seconds=mono - base[1])

    def _sync(self, old: _Base | None) -> _Base | None:
        with self._lock:
            if self._base is not old:  # another thread read it meanwhile
                return self._base
            try:
                with self._engine.connect() as conn:
                    before = time.monotonic()
                    server = conn.execute(sa.select(sa.func.now())).scalar_one()
                    after = time.monotonic()
            except Exception as exc:
                logger.debug("could not read the database's clock: %s", exc)
                if old is not None:
                    # Tried again after CLOCK_RETRY, not on every call.
                    mono = time.monotonic()
                    self._base = (
                        old[0],
                        old[1],
                        mono + CLOCK_RETRY,
                        time.time() - mono,
                    )
                return self._base
            # The server read its clock somewhere in the round trip.
            middle = (before + after) / 2
            self._base = (
                as_utc(server),
                middle,
                middle + CLOCK_RESYNC,
                time.time() - time.monotonic(),
            )
            return self._base


class PostgreSQLBackend(Backend):
    """PostgreSQL (psycopg 3): row locks instead of a database-wide write lock,
    so claims skip the rows other workers are taking."""

    dialect = "postgresql"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        table = self.statements.table.name
        #: The SQL of this table's LISTEN/NOTIFY channel (see :func:`channel_sql`).
        self.channel = channel_sql(table)
        #: The SQL of the channel on which changes of stored tasks (progress,
        #: kept results, failures) are announced, with their ids, for streams.
        self.changes_channel = channel_sql(table, "_changes")
        #: Whether inserts send NOTIFY (``PLAINQUEUE_NOTIFY``), and progress
        #: and settles on :attr:`changes_channel`.
        self.notifies = self.config.notify
        c = self.statements.table.c
        self._notify_columns: tuple[sa.ColumnElement[t.Any], ...] = (
            (sa.func.pg_notify(sa.literal_column(self.channel, sa.Text), c.queue),)
            if self.notifies
            else ()
        )
        self._statements: dict[t.Hashable, sa.Executable] = {}
        self._clock = DatabaseClock(self.engine)
        commit = self.config.postgresql_synchronous_commit
        # One of a fixed list of words (QueueConfig checks it): safe to inline.
        self._bookkeeping_sql = (
            None if commit is None else f"SET LOCAL synchronous_commit = {commit}"
        )

    def insert_columns(self) -> tuple[sa.ColumnElement[t.Any], ...]:
        return self._notify_columns

    def clock(self) -> Clock:
        return self._clock

    def begin_bookkeeping(self, conn: Connection) -> None:
        if self._bookkeeping_sql is not None:
            conn.exec_driver_sql(self._bookkeeping_sql)

    def notify(self, conn: Connection) -> None:
        if self.notifies:
            # Delivered at commit; the empty payload wakes workers of any queue.
            channel = sa.literal_column(self.channel, sa.Text)
            conn.execute(sa.select(sa.func.pg_notify(channel, "")))

    def enqueue(self, rows: Sequence[t.Mapping[str, t.Any]]) -> list[int] | None:
        # One INSERT is atomic by itself, of one row or (see insert_many) of
        # many: in autocommit it costs one round trip instead of three (BEGIN,
        # INSERT, COMMIT), and no session work.
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if len(rows) > 1:
                return self.insert_many(conn, rows)
            stmt = self.statements.insert(self._notify_columns)
            return [conn.execute(stmt, rows[0]).scalar_one()]

    def insert_many(
        self, conn: Session | Connection, rows: Sequence[t.Mapping[str, t.Any]]
    ) -> list[int]:
        keys = tuple(rows[0])
        if any(tuple(row) != keys for row in rows):
            return super().insert_many(conn, rows)
        # One statement whose text is the same for any number of rows: one
        # array per column, unnested. Its multi-row VALUES alternative has a
        # placeholder per value, which psycopg parses again on every call
        # (half of perform_many's time for 20,000 rows).
        result = conn.execute(
            self._insert_unnested(keys),
            {f"p_{key}": [row[key] for row in rows] for key in keys},
        )
        # The rows are inserted in the arrays' order (ORDER BY the ordinality),
        # so their ids, from one sequence, ascend in that order too.
        return sorted(result.scalars())

    def _insert_unnested(self, keys: tuple[str, ...]) -> sa.Insert:
        stmt = self._statements.get(("insert_unnested", keys))
        if stmt is None:
            table = self.statements.table
            arrays = [
                sa.bindparam(f"p_{key}", type_=ARRAY(table.c[key].type)) for key in keys
            ]
            unnested = (
                sa.func.unnest(*arrays)
                .table_valued(*keys, with_ordinality="ord")
                .render_derived(name="r")
            )
            select = sa.select(*(unnested.c[key] for key in keys)).order_by(
                unnested.c.ord
            )
            stmt = self._statements[("insert_unnested", keys)] = (
                sa.insert(table)
                .from_select(list(keys), select)
                .returning(table.c.id, *self._notify_columns)
            )
        return t.cast(sa.Insert, stmt)

    def upsert(self, table: sa.Table) -> t.Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def settle_on(
        self, conn: Connection, owner: str, outcomes: Outcomes, now: t.Any
    ) -> int:
        # Several completed tasks go in one set-based DELETE (two arrays,
        # unnested), not one statement each: a batch of 100 was 100 executions.
        many = len(outcomes.completed) > 1
        written = 0
        if many:
            ids, attempts = zip(*outcomes.completed, strict=True)
            written += conn.execute(
                self._delete_completed(),
                {"owner": owner, "ids": list(ids), "attempts": list(attempts)},
            ).rowcount
        for stmt, rows in self.statements.settle_params(
            owner, outcomes, now, completed=not many
        ):
            written += conn.execute(stmt, rows).rowcount
        self.notify_settled(conn, outcomes)
        return written

    def _delete_completed(self) -> sa.Executable:
        stmt = self._statements.get("delete_completed")
        if stmt is None:
            table = self.statements.table
            c = table.c
            done = (
                sa.func.unnest(
                    sa.bindparam("ids", type_=ARRAY(sa.BigInteger)),
                    sa.bindparam("attempts", type_=ARRAY(sa.Integer)),
                )
                .table_valued("id", "attempts")
                .render_derived(name="done")
            )
            # Fenced as each per-task delete was: by owner and attempt.
            stmt = self._statements["delete_completed"] = sa.delete(table).where(
                c.id == done.c.id,
                c.attempts == done.c.attempts,
                c.lease_owner == sa.bindparam("owner"),
            )
        return stmt

    def claim(
        self, request: ClaimRequest, outcomes: Outcomes | None
    ) -> Sequence[t.Any]:
        queues = None if request.queues is None else len(request.queues)
        params = {
            "now": request.now,
            "owner": request.owner,
            "until": request.until,
            **self.statements.queue_params(request.queues),
        }
        with self.write() as conn:
            # BEGIN and what comes before the claim go to the server in one
            # round trip (psycopg's pipeline mode): none of their results is
            # needed, and a claim after an idle wait pays each round trip's
            # wake-up. An error is raised when the pipeline ends, as before.
            with _pipeline(conn):
                # The claim's statements are prepared (psycopg prepares a
                # statement run five times); a generic plan spares planning
                # them on every claim, and their plans do not depend on the
                # values.
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
                self.begin_bookkeeping(conn)
                if outcomes:
                    self.settle_on(conn, request.owner, outcomes, request.now)
                if request.sweep:
                    conn.execute(self._reclaim(), {"now": request.now})
            names = list(request.names)
            while names:
                rows = conn.execute(
                    self._claim(queues),
                    {
                        **params,
                        "names": names,
                        "limits": [request.batch_sizes[name] for name in names],
                    },
                ).all()
                if rows:
                    return rows
                name = conn.execute(
                    self._head(queues), {**params, "names": names}
                ).scalar()
                if name is None:
                    return []
                # Another worker is claiming every due task of that name right
                # now (SKIP LOCKED passed them over): ask again without it,
                # rather than going idle while tasks of other names are due.
                names.remove(name)
            return []

    def _reclaim(self) -> sa.Executable:
        stmt = self._statements.get("reclaim")
        if stmt is None:
            stmt = self._statements["reclaim"] = self.statements.reclaim(
                skip_locked=True
            )
        return stmt

    def _head(self, queues: int | None) -> sa.Select[t.Any]:
        """The name of the first due task of those named ``:names``: one
        index seek per name, in a lateral join over the names."""
        key = ("head", queues)
        stmt = self._statements.get(key)
        if stmt is None:
            listed = (
                sa.func.unnest(_names())
                .table_valued("name")
                .render_derived(name="names")
            )
            first = self.statements.first_of(listed.c.name, queues).lateral("head")
            stmt = self._statements[key] = (
                sa.select(listed.c.name)
                .select_from(listed)
                .join(first, sa.true())
                .order_by(first.c.claim_rank, first.c.run_at, first.c.id)
                .limit(1)
            )
        return t.cast("sa.Select[t.Any]", stmt)

    def _claim(self, queues: int | None) -> sa.Update:
        """Claim up to one batch of the next task name's due tasks in one
        statement: the first due task of all decides the name when this
        worker serves it (one seek), else :meth:`_head` does; ``:limits``
        holds the batch size of each of ``:names``."""
        key = ("claim", queues)
        stmt = self._statements.get(key)
        if stmt is None:
            s = self.statements
            names = _names()
            first_overall = s.first_overall(lambda n: n == sa.any_(names), queues)
            first_known = self._head(queues).scalar_subquery()
            # COALESCE evaluates the second only when the first is NULL.
            next_name = sa.select(
                sa.func.coalesce(first_overall, first_known).label("name")
            ).cte("next_name")
            name = sa.select(next_name.c.name).scalar_subquery()
            # Parenthesised, as PostgreSQL needs before a subscript.
            limits = sa.type_coerce(
                Grouping(sa.bindparam("limits", type_=ARRAY(sa.Integer))),
                ARRAY(sa.Integer),
            )
            # A CTE, not "id IN (subquery)": PostgreSQL may evaluate such a
            # subquery more than once and so take more than the batch size.
            # Other workers skip the rows this one is locking, not wait.
            picked = (
                s.pick(name, limits[sa.func.array_position(names, name)], queues)
                .with_for_update(skip_locked=True)
                .cte("picked")
            )
            # "= ANY(ARRAY(...))", not a join: a plan made without knowing the
            # batch size (a generic plan) would hash-join a scan of the table.
            ids = sa.func.array(sa.select(picked.c.id).scalar_subquery())
            stmt = self._statements[key] = s.claim_where(s.table.c.id == sa.any_(ids))
        return t.cast(sa.Update, stmt)

    def watcher(self, on_change: ChangeCallback, name: str) -> Listener | None:
        return Listener(self, on_change, name=name) if self.notifies else None

    def change_watcher(self, on_change: ChangeCallback, name: str) -> Listener | None:
        if not self.notifies:
            return None
        return Listener(self, on_change, name=name, channel=self.changes_channel)

    def notify_changed(self, conn: Connection | Session, ids: Sequence[int]) -> None:
        if not self.notifies or not ids:
            return
        # A payload holds at most 8000 bytes: a few hundred ids each.
        channel = sa.literal_column(self.changes_channel, sa.Text)
        for start in range(0, len(ids), _IDS_PER_NOTIFY):
            payload = ",".join(str(i) for i in ids[start : start + _IDS_PER_NOTIFY])
            conn.execute(sa.select(sa.func.pg_notify(channel, payload)))

    def is_missing_table(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        return getattr(orig, "sqlstate", None) == UNDEFINED_TABLE


def channel_sql(table: str, suffix: str = "") -> str:
    """The SQL of the NOTIFY channel of ``table``: ``schema.table`` and
    ``suffix``, worked out by the server where the table resolves on the
    connection's ``search_path`` (its first schema while the table does not
    exist yet). Tables of one name in two schemas of a database (a schema per
    tenant, staging beside production) then wake only their own workers. A
    name past PostgreSQL's 63 bytes becomes an md5 of it.

    SQL, not a name: the enqueue sends it inside its INSERT, and the listener
    asks for it when it connects, so neither needs a round trip of its own.
    """
    name = "'" + table.replace("'", "''") + "'"
    schema = (
        "(SELECT c.relnamespace::regnamespace::text FROM pg_catalog.pg_class c"
        f" WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident({name})))"
    )
    full = f"(coalesce({schema}, current_schema(), '') || '.' || {name})"
    limit = 63 - len(suffix)
    return (
        f"(CASE WHEN pg_catalog.octet_length({full}) <= {limit} THEN {full}"
        f" ELSE pg_catalog.md5({full}) END || '{suffix}')"
    )


#: Task ids per change notification (each at most 20 characters and a comma).
_IDS_PER_NOTIFY = 300


def _pipeline(conn: Connection) -> t.ContextManager[t.Any]:
    """psycopg 3's pipeline mode on ``conn``'s driver connection, where libpq
    has it (14 and later); with another driver one round trip per statement."""
    driver: t.Any = conn.connection.driver_connection
    if not _PIPELINES or not hasattr(driver, "pipeline"):
        return contextlib.nullcontext()
    return t.cast("t.ContextManager[t.Any]", driver.pipeline())


def _pipelines() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    return bool(psycopg.Pipeline.is_supported())


#: ``True`` where psycopg 3 and its libpq support pipeline mode.
_PIPELINES = _pipelines()


def _names() -> sa.BindParameter[t.Any]:
    # Sent as one array: the same statement text whatever the names, so the
    # statement is prepared and planned once per connection.
    return sa.bindparam("names", type_=ARRAY(sa.Text))
