"""SQLite specifics: the connection pragmas, the ``PRAGMA data_version`` change
probe, and the hottest statements run on the driver's own cursor."""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import Engine

from .models import UTCDateTime

if t.TYPE_CHECKING:
    from .storage import Outcomes
    from .storage import Storage

logger = logging.getLogger(__name__)


def configure_sqlite_engine(
    engine: Engine, *, synchronous: str, busy_timeout: float
) -> None:
    """Set WAL, ``synchronous`` and a busy timeout on every new SQLite connection
    of ``engine``.

    Only the pragmas are set: how the app's own sessions begin transactions is
    left alone, and the queue takes the write lock up front
    (``BEGIN IMMEDIATE``) only in its own write transactions.
    """
    timeout_ms = int(busy_timeout * 1000)

    def on_connect(dbapi_connection: t.Any, connection_record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    if not event.contains(engine, "connect", on_connect):
        event.listen(engine, "connect", on_connect)
    # Connections opened before the listener existed would miss the pragmas.
    engine.dispose(close=False)


def utc_text(value: datetime.datetime) -> str:
    """A timestamp as SQLAlchemy stores ``DateTime`` in SQLite
    (``YYYY-MM-DD HH:MM:SS.ffffff``, here always UTC), in one C call instead of
    SQLAlchemy's chain of processors."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: give it a timezone (e.g. UTC)")
    if value.tzinfo is not datetime.timezone.utc:
        value = value.astimezone(datetime.timezone.utc)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


class Compiled:
    """A Core statement compiled once for SQLite, with its parameters converted by
    the columns' own types (so a timestamp is stored exactly as SQLAlchemy stores
    it), to run on the driver's cursor without SQLAlchemy's per-execution work."""

    def __init__(self, stmt: sa.Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self._defaults = dict(compiled.params)
        plan: list[tuple[str, Callable[[t.Any], t.Any] | None]] = []
        for key in compiled.positiontup or ():
            bind = compiled.binds[key]
            if isinstance(bind.type, UTCDateTime):
                processor: Callable[[t.Any], t.Any] | None = utc_text
            else:
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            plan.append((key, processor))
        self._plan = plan

    def args(self, values: Mapping[str, t.Any]) -> tuple[t.Any, ...]:
        out = []
        for key, processor in self._plan:
            value = values[key] if key in values else self._defaults[key]
            out.append(
                value if processor is None or value is None else processor(value)
            )
        return tuple(out)


class HotPath:
    """The worker's claim transaction and the plain enqueue on the SQLite driver's
    cursor: the same SQL as :class:`~flask_plainqueue.storage.Storage` builds, a
    third of the Python work per statement."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._dialect = storage.engine.dialect
        self._cache: dict[t.Hashable, Compiled] = {}
        self._local = threading.local()

    def _compiled(
        self, key: t.Hashable, build: Callable[[], sa.Executable]
    ) -> Compiled:
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._cache[key] = Compiled(build(), self._dialect)
        return compiled

    def _compiled_statement(self, stmt: sa.Executable) -> Compiled:
        compiled = self._cache.get(stmt)
        if compiled is None:
            compiled = self._cache[stmt] = Compiled(stmt, self._dialect)
        return compiled

    def claim(
        self,
        owner: str,
        names: Sequence[str],
        batch_sizes: Mapping[str, int],
        now: datetime.datetime,
        until: datetime.datetime,
        queues: Sequence[str] | None,
        outcomes: Outcomes | None,
    ) -> list[tuple[t.Any, ...]]:
        """As :meth:`Storage.claim`, in one ``BEGIN IMMEDIATE`` transaction."""
        with self._write() as cursor:
            if outcomes:
                for stmt, param_sets in self._storage.settle_params(
                    owner, outcomes, now
                ):
                    compiled = self._compiled_statement(stmt)
                    cursor.executemany(
                        compiled.sql, [compiled.args(p) for p in param_sets]
                    )
            return self._claim_rows(
                cursor, owner, names, batch_sizes, now, until, queues
            )

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Keep one pooled connection for this thread's claims while in the block,
        instead of checking one out of the pool per transaction (a claim loop)."""
        raw = self._storage.engine.raw_connection()
        self._local.raw = raw
        try:
            yield
        finally:
            self._local.raw = None
            raw.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[t.Any]:
        """A driver cursor in a ``BEGIN IMMEDIATE`` transaction, committed on
        success, on this thread's pinned connection or a pooled one."""
        pinned = getattr(self._local, "raw", None)
        raw = pinned or self._storage.engine.raw_connection()
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
        finally:
            if pinned is None:
                raw.close()

    def _claim_rows(
        self,
        cursor: t.Any,
        owner: str,
        names: Sequence[str],
        batch_sizes: Mapping[str, int],
        now: datetime.datetime,
        until: datetime.datetime,
        queues: Sequence[str] | None,
    ) -> list[tuple[t.Any, ...]]:
        if not names:
            return []
        s = self._storage
        params: dict[str, t.Any] = {"now": now}
        params.update(s.queue_params(queues))
        if len(names) == 1:
            name = names[0]
        else:
            shape = (len(names), None if queues is None else len(queues))
            head = self._compiled(("head", shape), lambda: s.head_statement(*shape))
            params.update(s.name_params(names))
            heads = cursor.execute(head.sql, head.args(params)).fetchall()
            if not heads:
                return []
            # One row per name at most: the first in claim order wins.
            name = min(heads, key=lambda r: (-r[1], r[2], r[3]))[0]
        shape_q = None if queues is None else len(queues)
        claim = self._compiled(("claim", shape_q), lambda: s.claim_statement(shape_q))
        params.update(owner=owner, until=until, p_name=name, limit=batch_sizes[name])
        claimed: list[tuple[t.Any, ...]] = cursor.execute(
            claim.sql, claim.args(params)
        ).fetchall()
        return claimed

    def insert(self, rows: Sequence[Mapping[str, t.Any]]) -> list[int]:
        """Insert ``rows`` in a write transaction of their own and commit; return
        their ids in order."""
        s = self._storage
        insert = self._compiled(
            ("insert", tuple(rows[0])),
            lambda: sa.insert(s.table).values({k: sa.bindparam(k) for k in rows[0]}),
        )
        with self._write() as cursor:
            if len(rows) == 1:
                cursor.execute(insert.sql, insert.args(rows[0]))
            else:
                cursor.executemany(insert.sql, [insert.args(r) for r in rows])
            # Under the write lock AUTOINCREMENT hands out consecutive ids.
            last: int = cursor.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - len(rows) + 1, last + 1))


class ChangeProbe:
    """Tells whether another connection committed to the SQLite file, via
    ``PRAGMA data_version`` on a connection of its own (microseconds, no table
    read)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: t.Any = None
        self._version: int | None = None

    def changed(self) -> bool:
        try:
            if self._conn is None:
                self._conn = self._engine.raw_connection()
            cursor = self._conn.cursor()
            try:
                cursor.execute("PRAGMA data_version")
                version = cursor.fetchone()[0]
            finally:
                cursor.close()
        except Exception:
            logger.exception("PRAGMA data_version failed; polling instead")
            self.reset()
            return True
        previous, self._version = self._version, version
        return previous is not None and version != previous

    def reset(self) -> None:
        self.close()
        self._version = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the probe connection failed", exc_info=True)
