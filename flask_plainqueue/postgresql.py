"""The PostgreSQL backend: claims with ``FOR UPDATE SKIP LOCKED`` in one
statement, NOTIFY sent inside the inserting transaction, and the LISTEN
connection that wakes idle workers.

NOTIFY is evaluated inside the insert (in ``RETURNING``), so PostgreSQL
delivers it only at commit (with ``perform(..., commit=False)``, when the
caller commits), never after a rollback, and folds repeats in one transaction
into one. The payload is the task's queue, so a worker can ignore other queues.

Polling stays the safety net: delayed tasks, retries and expired leases send no
notification, and while the listening connection is lost the worker polls. The
listener reconnects with backoff and logs the loss once and the recovery once.
"""

from __future__ import annotations

import datetime
import logging
import os
import selectors
import socket
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
from .backend import WatcherThread
from .clock import as_utc
from .clock import Clock
from .clock import utcnow
from .statements import ClaimRequest
from .statements import Outcomes

logger = logging.getLogger(__name__)

#: The SQLSTATE of "undefined_table".
UNDEFINED_TABLE = "42P01"
#: How often the database's clock is read again (seconds); in between it is
#: carried forward with this host's monotonic clock.
CLOCK_RESYNC = 300.0
#: After a failed read, how long the host's own clock stands in.
CLOCK_RETRY = 5.0


class DatabaseClock:
    """The database server's time, so that every host computes due times,
    leases and periodic ticks on one clock, however wrong its own is.

    Read with one query every :data:`CLOCK_RESYNC` seconds and carried forward
    with ``time.monotonic()`` in between (immune to this host's clock being
    set); while the server cannot be reached, the last reading goes on, or
    this host's clock before the first.
    """

    def __init__(self, engine: t.Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        # (server time, monotonic time it was read at, next read due)
        self._base: tuple[datetime.datetime, float, float] | None = None

    def __call__(self) -> datetime.datetime:
        mono = time.monotonic()
        base = self._base
        if base is None or mono >= base[2]:
            base = self._sync(base)
        if base is None:
            return utcnow()
        return base[0] + datetime.timedelta(seconds=mono - base[1])

    def _sync(
        self, old: tuple[datetime.datetime, float, float] | None
    ) -> tuple[datetime.datetime, float, float] | None:
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
                    self._base = (old[0], old[1], time.monotonic() + CLOCK_RETRY)
                return self._base
            # The server read its clock somewhere in the round trip.
            middle = (before + after) / 2
            self._base = (as_utc(server), middle, middle + CLOCK_RESYNC)
            return self._base


class PostgreSQLBackend(Backend):
    """PostgreSQL (psycopg 3): row locks instead of a database-wide write lock,
    so claims skip the rows other workers are taking."""

    dialect = "postgresql"

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        #: The LISTEN/NOTIFY channel of this table.
        self.channel = self.statements.table.name[:63]
        #: The channel on which changes of stored tasks (progress, kept
        #: results, failures) are announced, with their ids, for streams.
        self.changes_channel = f"{self.statements.table.name[:55]}_changes"
        #: Whether inserts send NOTIFY (``PLAINQUEUE_NOTIFY``), and progress
        #: and settles on :attr:`changes_channel`.
        self.notifies = self.config.notify
        c = self.statements.table.c
        self._notify_columns: tuple[sa.ColumnElement[t.Any], ...] = (
            (sa.func.pg_notify(sa.literal(self.channel, sa.Text), c.queue),)
            if self.notifies
            else ()
        )
        self._statements: dict[t.Hashable, sa.Executable] = {}
        self._clock = DatabaseClock(self.engine)

    def insert_columns(self) -> tuple[sa.ColumnElement[t.Any], ...]:
        return self._notify_columns

    def clock(self) -> Clock:
        return self._clock

    def notify(self, conn: Connection) -> None:
        if self.notifies:
            # Delivered at commit; the empty payload wakes workers of any queue.
            conn.execute(sa.select(sa.func.pg_notify(self.channel, "")))

    def upsert(self, table: sa.Table) -> t.Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

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
            # The claim's statements are prepared (psycopg prepares a statement
            # run five times); a generic plan spares planning them on every
            # claim, and their plans do not depend on the values.
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            if outcomes:
                self.settle_on(conn, request.owner, outcomes, request.now)
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
        for start in range(0, len(ids), _IDS_PER_NOTIFY):
            payload = ",".join(str(i) for i in ids[start : start + _IDS_PER_NOTIFY])
            conn.execute(sa.select(sa.func.pg_notify(self.changes_channel, payload)))

    def is_missing_table(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        return getattr(orig, "sqlstate", None) == UNDEFINED_TABLE


#: Task ids per change notification (each at most 20 characters and a comma).
_IDS_PER_NOTIFY = 300

#: First wait before reconnecting a lost listening connection (seconds); it
#: doubles up to :data:`RECONNECT_MAX`.
RECONNECT_MIN = 0.25
#: Longest wait between reconnection attempts (seconds).
RECONNECT_MAX = 10.0
#: After this many seconds without traffic the connection is checked with a query,
#: so a silently dropped connection is noticed (TCP keepalive helps too).
HEALTH_CHECK_INTERVAL = 30.0


class Listener(WatcherThread):
    """LISTEN on the backend's channel in a daemon thread and call
    ``on_notify`` for every notification.

    The connection comes from ``engine.raw_connection()`` (so the URL's
    options, ``connect_args`` and connect events apply) and is then detached
    from the pool: it does not count against ``pool_size``.

    :param backend: the PostgreSQL (psycopg 3) backend.
    :param on_notify: called in the listener thread; must be quick.
    :param name: names the thread and the log lines (e.g. the worker id).
    """

    kind = "listen"
    backend: PostgreSQLBackend

    def __init__(
        self,
        backend: PostgreSQLBackend,
        on_notify: ChangeCallback,
        *,
        name: str,
        channel: str | None = None,
    ) -> None:
        super().__init__(backend, on_notify, name=name)
        #: The channel listened on (default: the backend's, for new tasks).
        self.channel = channel or backend.channel
        self._listening = threading.Event()
        # A self-pipe cuts the wait in select() short when stop() is called.
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_lock = threading.Lock()
        self._conn: t.Any = None
        #: How many times LISTEN was established (1 + reconnections).
        self.connects = 0

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (if not, the worker polls)."""
        return self._listening.is_set()

    @property
    def reliable(self) -> bool:
        return self._listening.is_set()

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Block until LISTEN is in place (or ``timeout``); return whether it is."""
        return self._listening.wait(timeout)

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop listening, close the connection and wait up to ``timeout`` seconds
        for the thread to end."""
        self._stop.set()
        with self._pipe_lock:
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        thread = self._join(timeout)
        if thread is None or not thread.is_alive():
            self._close_pipe()

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        delay = RECONNECT_MIN
        lost_since: float | None = None
        try:
            while not self._stop.is_set():
                try:
                    self._connect()
                except _Unsupported as exc:
                    logger.warning(
                        "Worker %s: no LISTEN/NOTIFY wake-ups (%s); polling instead.",
                        self.name,
                        exc,
                    )
                    return
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    if lost_since is None:
                        lost_since = time.monotonic()
                        logger.warning(
                            "Worker %s: cannot LISTEN for new tasks (%s); polling until"
                            " it works again (retrying in the background).",
                            self.name,
                            _describe(exc),
                        )
                    else:
                        logger.debug("LISTEN still unavailable: %s", _describe(exc))
                    self._stop.wait(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                delay = RECONNECT_MIN
                self.connects += 1
                if lost_since is not None:
                    logger.warning(
                        "Worker %s: LISTEN is back after %.1fs; idle workers wake on"
                        " new tasks again.",
                        self.name,
                        time.monotonic() - lost_since,
                    )
                    lost_since = None
                else:
                    logger.debug("Worker %s: listening on %r", self.name, self.channel)
                self._listening.set()
                # Tasks committed while nobody listened sent no notification here.
                self._call(None)
                try:
                    self._listen()
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    lost_since = time.monotonic()
                    logger.warning(
                        "Worker %s: lost the LISTEN connection (%s); polling until it"
                        " is back (reconnecting in the background).",
                        self.name,
                        _describe(exc),
                    )
                finally:
                    self._listening.clear()
                    self._disconnect()
        finally:
            self._listening.clear()
            self._disconnect()
            if self._stop.is_set():
                self._close_pipe()

    def _connect(self) -> None:
        raw = self.backend.engine.raw_connection()
        conn: t.Any = raw.driver_connection
        pgconn = getattr(conn, "pgconn", None)
        if pgconn is None:
            raw.close()
            raise _Unsupported(
                f"the {self.backend.engine.dialect.driver!r} driver is not psycopg 3;"
                " install 'flask-plainqueue[postgresql]' and use a"
                " 'postgresql+psycopg://' URI"
            )
        # Ours alone from here: the pool forgets it and opens another when needed.
        raw.detach()
        self._conn = conn
        conn.rollback()
        conn.autocommit = True
        _keepalive(conn.fileno())
        # Notifications that arrive while psycopg itself reads (during LISTEN and
        # the health check) go to its handlers, not to the loop in _listen.
        conn.add_notify_handler(lambda n: self._call(n.payload))
        conn.execute(self._listen_sql())

    def _listen(self) -> None:
        conn = self._conn
        pgconn = conn.pgconn
        fileno = conn.fileno()
        last_traffic = time.monotonic()
        # Not select.select(): it fails for file descriptors past 1024, which a
        # busy process (many pooled connections, gunicorn) reaches.
        with selectors.DefaultSelector() as selector:
            selector.register(fileno, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = {key.fd for key, _ in selector.select(HEALTH_CHECK_INTERVAL)}
                if self._stop.is_set():
                    return
                if self._read(conn, pgconn, fileno in ready, last_traffic):
                    last_traffic = time.monotonic()

    def _read(self, conn: t.Any, pgconn: t.Any, readable: bool, last: float) -> bool:
        """Deliver what arrived; return whether there was traffic."""
        from psycopg import pq

        if not readable:
            if time.monotonic() - last >= HEALTH_CHECK_INTERVAL:
                # Raises if the connection died without the socket noticing. LISTEN
                # again rather than SELECT 1: harmless, and pg_stat_activity keeps
                # showing what this connection is for.
                conn.execute(self._listen_sql())
                return True
            return False
        pgconn.consume_input()  # raises OperationalError on a closed connection
        payloads = []
        while True:
            notification = pgconn.notifies()
            if notification is None:
                break
            payloads.append(notification.extra.decode("utf-8", "replace"))
        if not payloads:
            if pgconn.status != pq.ConnStatus.OK:
                raise ConnectionError("the server closed the connection")
            # A FATAL message, e.g. "terminating connection due to administrator
            # command", comes before the close: read on to the end.
            return True
        for payload in dict.fromkeys(payloads):
            self._call(payload)
        return True

    def _listen_sql(self) -> str:
        channel = self.channel.replace('"', '""')
        return f'LISTEN "{channel}"'

    def _call(self, payload: str | None) -> None:
        try:
            self.on_change(payload)
        except Exception:
            logger.exception("Worker %s: the NOTIFY callback raised", self.name)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("closing the LISTEN connection failed", exc_info=True)

    def _close_pipe(self) -> None:
        # Both the thread and stop() may get here; the lock and the -1 make the
        # second a no-op (and gevent's os.close refuses -1 with a ValueError).
        with self._pipe_lock:
            fds = (self._wake_r, self._wake_w)
            self._wake_r = self._wake_w = -1
            for fd in fds:
                if fd >= 0:
                    os.close(fd)


class _Unsupported(Exception):
    pass


def _names() -> sa.BindParameter[t.Any]:
    # Sent as one array: the same statement text whatever the names, so the
    # statement is prepared and planned once per connection.
    return sa.bindparam("names", type_=ARRAY(sa.Text))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _keepalive(fileno: int) -> None:
    """Let the kernel notice a silently dropped connection (a dead host or
    network) within about a minute, instead of the listener waiting forever."""
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:  # pragma: no cover - not a socket we can tune
        return
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (
            ("TCP_KEEPIDLE", 30),
            ("TCP_KEEPINTVL", 10),
            ("TCP_KEEPCNT", 3),
            ("TCP_USER_TIMEOUT", 60_000),
        ):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:  # pragma: no cover - best effort
        logger.debug(
            "could not set TCP keepalive on the LISTEN connection", exc_info=True
        )
    finally:
        sock.close()
