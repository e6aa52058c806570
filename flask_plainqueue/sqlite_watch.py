"""The SQLite backend's change probe: a thread that asks ``PRAGMA
data_version`` whether another connection committed, woken by inotify on the
WAL file where there is one."""

from __future__ import annotations

import logging
import os
import select
import sys
import time
import typing as t

from .backend import WatcherThread

# The records keep the backend's logger, as before this module was split off.
logger = logging.getLogger("flask_plainqueue.sqlite")

#: How often the change probe asks ``PRAGMA data_version`` whether another
#: connection committed: a cheap check instead of a query on the table.
PROBE_INTERVAL = 0.01
#: With inotify telling of writes to the WAL file, the probe asks only then,
#: and at least this often in case an event is missed (which costs a pickup
#: this long at worst, and an idle worker a wake-up this often).
WATCHED_PROBE_INTERVAL = 0.5
#: A write to the WAL file can come before its commit shows in
#: ``data_version``: the probe then asks again this many times, every
#: :data:`PROBE_INTERVAL`, before it waits for the next write.
RECHECKS_AFTER_WRITE = 5


class ChangeProbe(WatcherThread):
    """Wakes a worker when another connection commits to the SQLite file: a
    thread asks ``PRAGMA data_version``, on a connection of its own outside the
    pool (microseconds, no table read).

    On Linux (with ``inotify_simple``) it asks when the database's WAL file is
    written, which wakes an idle worker within a millisecond or so of a commit
    in another process, and otherwise every :data:`WATCHED_PROBE_INTERVAL`
    seconds. Elsewhere, or where the directory cannot be watched, it asks every
    :data:`PROBE_INTERVAL` seconds.
    """

    kind = "probe"
    _running = False

    @property
    def reliable(self) -> bool:
        return self._running

    def stop(self) -> None:
        self._join(5.0)

    def _run(self) -> None:
        conn: t.Any = None
        version: int | None = None
        written = False
        rechecks = 0
        watch = WalWatch.open(self.backend.engine.url.database, self.name)
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        raw = self.backend.engine.raw_connection()
                        raw.detach()
                        conn = raw
                    cursor = conn.cursor()
                    try:
                        cursor.execute("PRAGMA data_version")
                        current = cursor.fetchone()[0]
                    finally:
                        cursor.close()
                    self._running = True
                except Exception:
                    logger.exception(
                        "Worker %s: PRAGMA data_version failed; polling instead",
                        self.name,
                    )
                    self._running = False
                    _close(conn)
                    conn = None
                    version = None
                    self._stop.wait(1.0)
                    continue
                changed = version is not None and current != version
                if changed:
                    try:
                        self.on_change("")
                    except Exception:
                        logger.exception("Worker %s: waking failed", self.name)
                version = current
                if watch is None:
                    self._stop.wait(PROBE_INTERVAL)
                elif (
                    (written or rechecks)
                    and not changed
                    and rechecks < RECHECKS_AFTER_WRITE
                ):
                    rechecks += 1
                    written = watch.wait(PROBE_INTERVAL)
                else:
                    rechecks = 0
                    written = watch.wait(WATCHED_PROBE_INTERVAL)
        finally:
            self._running = False
            _close(conn)
            if watch is not None:
                watch.close()


class WalWatch:
    """inotify on the directory of a SQLite file, for writes to its WAL file."""

    def __init__(self, notify: t.Any, wal: str) -> None:
        self._notify = notify
        self._wal = wal

    @classmethod
    def open(cls, database: str | None, name: str) -> WalWatch | None:
        """A watch for ``database``'s WAL file, or ``None`` where there is no
        inotify (not Linux, ``inotify_simple`` missing, no file, no watch)."""
        if (
            not database
            or database == ":memory:"
            or not sys.platform.startswith("linux")
        ):
            return None
        try:
            # Imported here, once a gevent app has patched select.
            import inotify_simple
        except ImportError:
            return None
        path = os.path.abspath(database)
        try:
            notify = inotify_simple.INotify(nonblocking=True)
        except OSError as exc:
            logger.debug("Worker %s: no inotify (%s); polling", name, exc)
            return None
        try:
            flags = inotify_simple.flags
            notify.add_watch(
                os.path.dirname(path) or ".",
                flags.MODIFY | flags.CREATE | flags.MOVED_TO,
            )
        except OSError as exc:
            notify.close()
            logger.debug("Worker %s: cannot watch %s (%s); polling", name, path, exc)
            return None
        return cls(notify, os.path.basename(path) + "-wal")

    def wait(self, timeout: float) -> bool:
        """Return ``True`` when the WAL file was written, ``False`` after
        ``timeout`` seconds without a write."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # select.select looked up now: gevent's, when gevent patched it.
            ready, _, _ = select.select([self._notify], [], [], left)
            if not ready:
                return False
            if any(event.name == self._wal for event in self._notify.read(timeout=0)):
                return True

    def close(self) -> None:
        self._notify.close()


def _close(conn: t.Any) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            logger.debug("closing the probe connection failed", exc_info=True)
