"""The SQLite backend: the connection pragmas, ``BEGIN IMMEDIATE`` write
transactions, the claim and the plain enqueue on the driver's own cursor. The
``PRAGMA data_version`` change probe is :mod:`.sqlite_watch`'s."""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import sqlite3
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from .backend import Backend
from .backend import ChangeCallback
from .claims import ClaimRequest
from .claims import Outcomes
from .sqlite_watch import ChangeProbe


def utc_text(value: datetime.datetime) -> str:
    """A timestamp as SQLAlchemy stores ``DateTime`` in SQLite
    (``YYYY-MM-DD HH:MM:SS.ffffff``, here always UTC), in one C call instead of
    SQLAlchemy's chain of processors."""
    global _last_text
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: give it a timezone (e.g. UTC)")
    # The rows of one perform_many share their times, and a claim passes its
    # "now" more than once: the last conversion is reused (an equal aware
    # datetime is the same instant, so the same UTC text).
    last = _last_text
    if last[0] == value:
        return last[1]
    utc = value
    if utc.tzinfo is not datetime.timezone.utc:
        utc = utc.astimezone(datetime.timezone.utc)
    text = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    # One tuple, assigned at once: threads see the old pair or the new one.
    _last_text = (value, text)
    return text


_last_text: tuple[datetime.datetime, str] = (
    datetime.datetime.min.replace(tzinfo=datetime.timezone.utc),
    "0001-01-01 00:00:00.000000",
)


@functools.lru_cache(maxsize=64)
def _names_json(names: tuple[str, ...]) -> str:
    return json.dumps(names)


@functools.lru_cache(maxsize=64)
def _limits_json(sizes: tuple[tuple[str, int], ...]) -> str:
    return json.dumps(dict(sizes))


@functools.lru_cache(maxsize=64)
def _served(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(names)


def names_json(names: Sequence[str]) -> str:
    """Task names as the JSON array the head statement reads with ``json_each``."""
    return _names_json(tuple(names))


class Compiled:
    """A Core statement compiled once for SQLite, with its parameters converted by
    the columns' own types (a timestamp as :func:`utc_text`), to run on the
    driver's cursor without SQLAlchemy's per-execution work.

    Compiled with named parameters (``:now``), so a value a statement uses in
    several places is converted and sent once.
    """

    def __init__(self, stmt: sa.Executable, dialect: Dialect) -> None:
        named = _named_dialect(type(dialect))
        compiled = stmt.compile(dialect=named)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self._defaults = dict(compiled.params)
        plan: list[tuple[str, Callable[[t.Any], t.Any] | None]] = []
        for bind, key in compiled.bind_names.items():
            if any(key == known for known, _ in plan):
                continue
            if isinstance(bind.type, sa.DateTime):
                processor: Callable[[t.Any], t.Any] | None = utc_text
            else:
                processor = bind.type.dialect_impl(named).bind_processor(named)
            plan.append((key, processor))
        self._plan = plan

    def args(self, values: Mapping[str, t.Any]) -> dict[str, t.Any]:
        out = {}
        for key, processor in self._plan:
            value = values[key] if key in values else self._defaults[key]
            out[key] = value if processor is None or value is None else processor(value)
        return out


_NAMED: dict[type[Dialect], Dialect] = {}


def _named_dialect(kind: type[Dialect]) -> Dialect:
    dialect = _NAMED.get(kind)
    if dialect is None:
        dialect = _NAMED[kind] = kind(paramstyle="named")  # type: ignore[call-arg]
    return dialect


class SQLiteBackend(Backend):
    """SQLite: WAL, ``synchronous`` and a busy timeout on every connection; the
    write lock taken up front (``BEGIN IMMEDIATE``) in the queue's own
    transactions; the worker's claim and the plain enqueue on the driver's
    cursor, a third of SQLAlchemy's Python work per statement."""

    dialect = "sqlite"
    write_locks_database = True

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[t.Hashable, Compiled] = {}
        self._local = threading.local()

    def configure(self) -> None:
        """Set WAL, ``synchronous`` and a busy timeout on every new connection.

        Only the pragmas are set: how the app's own sessions begin transactions
        is left alone, and the queue takes the write lock up front only in its
        own write transactions.
        """
        timeout_ms = int(self.config.sqlite_busy_timeout * 1000)
        synchronous = self.config.sqlite_synchronous

        def on_connect(dbapi_connection: t.Any, connection_record: object) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
            finally:
                cursor.close()

        event.listen(self.engine, "connect", on_connect)
        # Connections opened before the listener existed would miss the pragmas.
        self.engine.dispose(close=False)

    # -- transactions -------------------------------------------------------

    def begin_write(self, conn: Connection) -> None:
        # The write lock up front: a concurrent writer waits for the busy
        # timeout instead of failing when a read transaction tries to upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def begin_session_write(self, session: Session, *, discard: bool) -> None:
        super().begin_session_write(session, discard=discard)
        connection = session.connection()
        if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[t.Any]:
        """A driver cursor in a ``BEGIN IMMEDIATE`` transaction, committed on
        success, on this thread's pinned connection or a pooled one.

        The driver's errors are raised as SQLAlchemy's (``database is locked``
        as :class:`sqlalchemy.exc.OperationalError`), the same type whichever
        path a statement took. One generator, not two nested: this runs on
        every claim and every plain enqueue.
        """
        pinned = getattr(self._local, "raw", None)
        raw = pinned or self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(
                None, None, exc, sqlite3.Error, dialect=self.engine.dialect
            ) from exc
        finally:
            if pinned is None:
                raw.close()

    def _compiled(
        self, key: t.Hashable, build: Callable[[], sa.Executable]
    ) -> Compiled:
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = Compiled(build(), self.engine.dialect)
        return compiled

    def compiled_statements(self) -> list[str]:
        """The SQL this backend ran on the driver's cursor (for plan checks)."""
        return [c.sql for c in self._cache.values()]

    # -- enqueue ------------------------------------------------------------

    def enqueue(self, rows: Sequence[Mapping[str, t.Any]]) -> list[int]:
        table = self.statements.table
        insert = self._compiled(
            ("insert", tuple(rows[0])),
            lambda: sa.insert(table).values({k: sa.bindparam(k) for k in rows[0]}),
        )
        with self._cursor() as cursor:
            if len(rows) == 1:
                cursor.execute(insert.sql, insert.args(rows[0]))
            else:
                cursor.executemany(insert.sql, [insert.args(r) for r in rows])
            # Under the write lock AUTOINCREMENT hands out consecutive ids.
            last: int = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - len(rows) + 1, last + 1))

    def upsert(self, table: sa.Table) -> t.Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    # -- the worker ---------------------------------------------------------

    def claim(
        self, request: ClaimRequest, outcomes: Outcomes | None
    ) -> list[tuple[t.Any, ...]]:
        s = self.statements
        with self._cursor() as cursor:
            if outcomes:
                for stmt, param_sets in s.settle_params(
                    request.owner, outcomes, request.now
                ):
                    compiled = self._compiled(stmt, lambda: stmt)  # noqa: B023
                    cursor.executemany(
                        compiled.sql, [compiled.args(p) for p in param_sets]
                    )
            if request.sweep:
                reclaim = self._compiled("reclaim", s.reclaim)
                cursor.execute(reclaim.sql, reclaim.args({"now": request.now}))

            queues = None if request.queues is None else len(request.queues)
            name = request.names[0] if len(request.names) == 1 else None
            if name is None:
                # Usually the first due task of all is one this worker serves:
                # then it claims that name's batch with the one-name statement,
                # cheaper than asking for the first task of every name. No
                # other writer can come between the two (the write lock).
                first = self._compiled("first_due", s.first_due)
                row = cursor.execute(
                    first.sql, first.args({"now": request.now})
                ).fetchone()
                if (
                    row is not None
                    and row[0] in _served(tuple(request.names))
                    and (request.queues is None or row[1] in request.queues)
                ):
                    name = str(row[0])
            claim = self._compiled(
                ("claim", queues, name is not None),
                lambda: self.claim_statement(queues, single=name is not None),
            )
            rows: list[tuple[t.Any, ...]] = cursor.execute(
                claim.sql, claim.args(self.claim_values(request, name))
            ).fetchall()
            return rows

    def claim_values(
        self, request: ClaimRequest, name: str | None = None
    ) -> dict[str, t.Any]:
        """The parameters of :meth:`claim_statement` for ``request``: for
        the one-name statement when ``name`` is given (or the request has only
        one), else for the statement that works out the name itself."""
        if name is None and len(request.names) == 1:
            name = request.names[0]
        if name is not None:
            return {
                "now": request.now,
                "owner": request.owner,
                "until": request.until,
                "p_name": name,
                "limit": request.batch_sizes[name],
                **self.statements.queue_params(request.queues),
            }
        return {
            "now": request.now,
            "owner": request.owner,
            "until": request.until,
            "names": names_json(request.names),
            "limits": _limits_json(
                tuple((name, request.batch_sizes[name]) for name in request.names)
            ),
            **self.statements.queue_params(request.queues),
        }

    def claim_statement(self, queues: int | None, *, single: bool = False) -> sa.Update:
        """Claim up to one batch of the next task name's due tasks, in one
        statement: :meth:`head` decides the name, a JSON object of batch sizes
        (``:limits``) its batch size; for a worker of one task name
        (``single``) that name (``:p_name``) and its batch size (``:limit``).
        SQLite runs one writer at a time, so ``id IN (subquery)`` takes
        exactly those rows."""
        s = self.statements
        if single:
            picked = s.pick(sa.bindparam("p_name"), sa.bindparam("limit"), queues)
            return s.claim_where(s.table.c.id.in_(picked.scalar_subquery()))
        # Materialized: the name is worked out once, not once per use.
        next_name = self.head(queues).cte("next_name").prefix_with("MATERIALIZED")
        name = sa.select(next_name.c.name).scalar_subquery()
        limits = sa.func.json_each(sa.bindparam("limits", type_=sa.Text)).table_valued(
            "key", "value", name="limits"
        )
        limit = sa.select(limits.c.value).where(limits.c.key == name).scalar_subquery()
        picked = s.pick(name, limit, queues)
        return s.claim_where(s.table.c.id.in_(picked.scalar_subquery()))

    def head(self, queues: int | None) -> sa.Select[t.Any]:
        """Which task name is next: the first due task of each name this
        worker knows (one index seek each, in a correlated subquery). The names
        are sent as one JSON array (``json_each``), so the statement's text is
        the same whatever they are. :meth:`claim` has already found that the
        first due task of all is not one it serves, so that is not asked again."""
        s = self.statements
        each = sa.func.json_each(sa.bindparam("names", type_=sa.Text)).table_valued(
            "value", name="names"
        )
        first = s.first_of(each.c.value, queues).with_only_columns(s.table.c.id)
        head = s.table.alias("head")
        first_known = (
            sa.select(head.c.name)
            .select_from(each)
            .join(head, head.c.id == first.scalar_subquery())
            .order_by(head.c.claim_rank, head.c.run_at, head.c.id)
            .limit(1)
            .scalar_subquery()
        )
        return sa.select(first_known.label("name"))

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep one connection of its own, outside the pool, for this thread's
        claims while in the block, instead of checking one out per claim."""
        raw = self.engine.raw_connection()
        raw.detach()
        self._local.raw = raw
        try:
            yield
        finally:
            self._local.raw = None
            raw.close()

    def watcher(self, on_change: ChangeCallback, name: str) -> ChangeProbe:
        return ChangeProbe(self, on_change, name=name)

    #: The probe sees every commit to the file, whichever connection made it.
    changes_complete = True

    def change_watcher(self, on_change: ChangeCallback, name: str) -> ChangeProbe:
        return ChangeProbe(self, on_change, name=name)

    def is_missing_table(self, exc: BaseException) -> bool:
        # The cursor paths raise the driver's own errors, unwrapped.
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        return isinstance(orig, sqlite3.OperationalError) and "no such table" in str(
            orig
        )
