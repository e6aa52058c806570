"""A worker's presence in the database: its row and heartbeat, noticing the
workers that stopped beating (and freeing the tasks they held), and the pauses
it obeys. Driven by the worker's scheduler thread."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

from .clock import Clock
from .failure_log import FailureLog
from .roster import Paused
from .roster import Roster
from .roster import WorkerRow

if t.TYPE_CHECKING:
    from .store import AppParts

logger = logging.getLogger("flask_plainqueue.worker")

#: A lost worker's row is deleted this long after its last heartbeat (seconds):
#: long enough for an operator to see what was lost.
LOST_KEEP = 3600.0


def library_version() -> str:
    """The installed flask-plainqueue version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        return version("flask-plainqueue")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


class Presence:
    """One worker's row in the workers table, its heartbeats, and the pauses
    it reads.

    :param parts: the app's queue storage and settings.
    :param worker_id: the worker's id (its ``lease_owner``).
    :param kind: ``embedded`` or ``process``.
    :param queues: the queues it serves (``None``: all).
    :param concurrency: its claim loops.
    :param clock: the store's clock (the database's on PostgreSQL), so hosts
        with skewed clocks agree on who is lost.
    :param stopping: whether the worker is stopping.
    :param on_freed: called after tasks of lost workers were made due.
    """

    def __init__(
        self,
        parts: AppParts,
        worker_id: str,
        *,
        kind: str,
        queues: Sequence[str] | None,
        concurrency: int,
        clock: Clock,
        stopping: Callable[[], bool],
        on_freed: Callable[[], None],
    ) -> None:
        self.parts = parts
        self.roster = Roster(parts.store)
        self.id = worker_id
        self.kind = kind
        self.queues = None if queues is None else tuple(queues)
        self.concurrency = concurrency
        self.clock = clock
        self._stopping = stopping
        self._on_freed = on_freed
        self.heartbeat = parts.config.heartbeat
        self.timeout = parts.config.worker_timeout
        #: The pauses in effect, as last read (see :meth:`refresh_pauses`).
        self.paused = Paused()
        self._registered = False
        self._missing_reported = False
        self._next_beat = 0.0
        self._next_pauses = 0.0
        # Both repeat every few seconds while the database refuses them.
        self._beat_failures = FailureLog(
            logger,
            worker_id,
            failed="Worker %s could not record its heartbeat; will retry",
            still="Worker %s: recording its heartbeat still fails after %.0fs: %s",
            works="Worker %s: recording its heartbeat works again after %.1fs of"
            " failures",
        )
        self._pause_failures = FailureLog(
            logger,
            worker_id,
            failed="Worker %s could not read the pauses; will retry",
            still="Worker %s: reading the pauses still fails after %.0fs: %s",
            works="Worker %s: reading the pauses works again after %.1fs of failures",
        )
        # Fixed for the worker's life: not looked up again on every heartbeat.
        self._host = socket.gethostname()[:255]
        self._version = library_version()[:32]

    def row(self, now: datetime.datetime) -> WorkerRow:
        """This worker's row as of ``now``."""
        return WorkerRow(
            id=self.id,
            host=self._host,
            pid=os.getpid(),
            kind=self.kind,
            queues=self.queues,
            tasks=tuple(self.parts.registry.names()),
            concurrency=self.concurrency,
            version=self._version,
            state="stopping" if self._stopping() else "running",
            started=now,
            heartbeat=now,
        )

    # -- the worker's own row -------------------------------------------------

    def register(self) -> None:
        """Insert this worker's row (a failure is logged; heartbeats retry)."""
        now = self.clock()
        try:
            self.roster.register(self.row(now))
        except Exception as exc:
            self._failed(exc, "could not register")
            return
        self._registered = True
        self._next_beat = time.monotonic() + self.heartbeat
        self.refresh_pauses()

    def unregister(self) -> None:
        """Delete this worker's row: a clean exit."""
        if not self._registered:
            return
        try:
            self.roster.unregister(self.id)
        except Exception as exc:
            self._failed(exc, "could not delete its row on exit")

    def step(self) -> float:
        """Heartbeat, look for lost workers and re-read the pauses when each is
        due; return the seconds until the next is."""
        now_mono = time.monotonic()
        if now_mono >= self._next_beat:
            self._next_beat = now_mono + self.heartbeat
            self.beat()
        if now_mono >= self._next_pauses:
            self.refresh_pauses()
        return max(0.0, min(self._next_beat, self._next_pauses) - time.monotonic())

    def due_now(self) -> None:
        """Make the next :meth:`step` heartbeat (e.g. to record ``stopping``)."""
        self._next_beat = 0.0

    def beat(self) -> bool:
        """Record a heartbeat, then free the tasks of lost workers; return
        whether it was written."""
        state = "stopping" if self._stopping() else "running"
        try:
            now = self.clock()
            if self._registered:
                self.roster.beat(self.row(now), now, state)
            else:
                self.roster.register(self.row(now))
                self._registered = True
            self.free_lost(now)
        except Exception as exc:
            self._failed(exc, "could not record its heartbeat", self._beat_failures)
            return False
        self._beat_failures.succeeded()
        return True

    def free_lost(self, now: datetime.datetime) -> int:
        """Make the tasks that lost workers hold due at once; return how many."""
        lost = self.roster.lost(
            now - datetime.timedelta(seconds=self.timeout), exclude=(self.id,)
        )
        freed = self.roster.free_leases(lost, now) if lost else 0
        if freed:
            logger.warning(
                "Worker %s: worker(s) %s sent no heartbeat for %.0fs and are lost;"
                " %d task(s) they held are due again",
                self.id,
                ", ".join(lost),
                self.timeout,
                freed,
            )
            self._on_freed()
        self.roster.prune(now - datetime.timedelta(seconds=LOST_KEEP))
        return freed

    # -- pauses -------------------------------------------------------------------

    def refresh_pauses(self) -> Paused:
        """Read the pauses now; every poll interval otherwise."""
        self._next_pauses = time.monotonic() + self.parts.config.poll_interval
        try:
            paused = self.roster.paused()
        except Exception as exc:
            self._failed(exc, "could not read the pauses", self._pause_failures)
            return self.paused
        self._pause_failures.succeeded()
        self.paused = paused
        return paused

    def _failed(
        self, exc: Exception, what: str, repeating: FailureLog | None = None
    ) -> None:
        if self.parts.store.is_missing_table(exc):
            # An app upgraded without its migration: the queue runs, unseen.
            if not self._missing_reported:
                self._missing_reported = True
                logger.warning(
                    "Worker %s %s: the table %r or %r is missing. Create them with"
                    " 'db.create_all()' or your migrations ('flask db migrate' and"
                    " 'flask db upgrade'); until then workers are not listed,"
                    " pauses are ignored and lost workers' tasks wait for their"
                    " leases to end.",
                    self.id,
                    what,
                    self.roster.workers.name,
                    self.roster.pauses.name,
                )
            return
        if repeating is not None:
            repeating.failed(exc)
        else:
            logger.warning("Worker %s %s: %s", self.id, what, exc)
