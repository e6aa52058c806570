"""The LISTEN connection of the PostgreSQL backend: a daemon thread that
wakes idle workers on NOTIFY, and streams on changes of stored tasks.

Polling stays the safety net: while the connection is lost the worker polls.
The listener reconnects with backoff and logs the loss once and the recovery
once.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
import typing as t

from .backend import ChangeCallback
from .backend import WatcherThread

if t.TYPE_CHECKING:
    # Only for the annotation: the backend imports this module to build its
    # listeners.
    from .postgresql import PostgreSQLBackend

# The records keep the backend's logger, as before this module was split off
# (docs/scaling.rst shows them under it).
logger = logging.getLogger("flask_plainqueue.postgresql")

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
        # The channel's SQL (default: the backend's, for new tasks), asked for
        # on each connection: it depends on the connection's search_path.
        self._channel_sql = channel or backend.channel
        #: The channel listened on, once connected.
        self.channel = ""
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
        (self.channel,) = conn.execute(f"SELECT {self._channel_sql}").fetchone()
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
