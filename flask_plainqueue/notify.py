"""LISTEN/NOTIFY wake-ups for idle workers on PostgreSQL.

The sending half lives in :mod:`.storage`: every insert calls ``pg_notify`` in
its own transaction, so PostgreSQL delivers the notification at commit (with
``perform(..., commit=False)``, when the caller commits) and drops it on
rollback. This module is the listening half: a :class:`Listener` holds one
connection of its own, outside the engine's pool, on which it runs ``LISTEN``,
and calls back for each notification, so an idle worker wakes at once instead of
at its next poll.

Polling stays the safety net: delayed tasks, retries and expired leases send no
notification, and while the listening connection is lost the worker polls. The
listener reconnects with backoff and logs the loss once and the recovery once.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
import typing as t
from collections.abc import Callable

if t.TYPE_CHECKING:
    from .storage import Storage

logger = logging.getLogger(__name__)

#: First wait before reconnecting a lost listening connection (seconds); it
#: doubles up to :data:`RECONNECT_MAX`.
RECONNECT_MIN = 0.25
#: Longest wait between reconnection attempts (seconds).
RECONNECT_MAX = 10.0
#: After this many seconds without traffic the connection is checked with a query,
#: so a silently dropped connection is noticed (TCP keepalive helps too).
HEALTH_CHECK_INTERVAL = 30.0

#: ``on_notify(payload)``: ``payload`` is the task's queue, ``""`` for any queue, or
#: ``None`` after (re)connecting, when notifications may have been missed.
NotifyCallback = Callable[[str | None], None]


class Listener:
    """LISTEN on ``storage.channel`` in a daemon thread and call ``on_notify`` for
    every notification.

    The connection comes from ``storage.engine.raw_connection()`` (so the URL's
    options, ``connect_args`` and connect events apply) and is then detached
    from the pool: it does not count against ``pool_size``.

    :param storage: the queue storage of a PostgreSQL (psycopg 3) engine.
    :param on_notify: called in the listener thread; must be quick.
    :param name: names the thread and the log lines (e.g. the worker id).
    """

    def __init__(
        self, storage: Storage, on_notify: NotifyCallback, *, name: str
    ) -> None:
        self.storage = storage
        self.on_notify = on_notify
        self.name = name
        self._stop = threading.Event()
        self._listening = threading.Event()
        # A self-pipe cuts the wait in select() short when stop() is called.
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: t.Any = None
        #: How many times LISTEN was established (1 + reconnections).
        self.connects = 0

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (if not, the worker polls)."""
        return self._listening.is_set()

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Block until LISTEN is in place (or ``timeout``); return whether it is."""
        return self._listening.wait(timeout)

    def start(self) -> None:
        """Start the listener thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"plainqueue-listen-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop listening, close the connection and wait up to ``timeout`` seconds
        for the thread to end."""
        self._stop.set()
        with self._pipe_lock:
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
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
                    logger.debug(
                        "Worker %s: listening on %r", self.name, self.storage.channel
                    )
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
        raw = self.storage.engine.raw_connection()
        conn: t.Any = raw.driver_connection
        pgconn = getattr(conn, "pgconn", None)
        if pgconn is None:
            raw.close()
            raise _Unsupported(
                f"the {self.storage.engine.dialect.driver!r} driver is not psycopg 3;"
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
        channel = self.storage.channel.replace('"', '""')
        return f'LISTEN "{channel}"'

    def _call(self, payload: str | None) -> None:
        try:
            self.on_notify(payload)
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
