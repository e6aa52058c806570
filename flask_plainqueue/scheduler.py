"""The worker's scheduler thread: periodic ticks, housekeeping and the stats
flush, on time whatever the claim loops are doing."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import typing as t

from . import history
from .claims import new_row
from .clock import as_utc
from .clock import Clock
from .failure_log import FailureLog

if t.TYPE_CHECKING:
    from .presence import Presence
    from .schedules import Schedule
    from .store import AppParts
    from .tally import Tally
    from .tasks import TaskDefinition

logger = logging.getLogger("flask_plainqueue.worker")

#: How often dead tasks are pruned and unknown task names looked for (seconds).
HOUSEKEEPING_INTERVAL = 60.0
#: The first look for unknown names waits this long: under ``flask run`` the
#: worker starts while the app is still registering its tasks.
FIRST_HOUSEKEEPING = 10.0
#: A tick whose enqueue failed is tried again after this many seconds, doubling
#: up to :data:`RETRY_MAX`.
RETRY_MIN = 1.0
RETRY_MAX = 30.0
#: How often a worker adds what it counted to the stats table (seconds): a
#: worker that dies loses at most this long of counts.
STATS_FLUSH_INTERVAL = 10.0


class Scheduler:
    """Enqueues the periodic tasks' ticks (once per tick across all workers) and
    does the housekeeping of one worker, on a thread of its own.

    :param parts: the app's queue storage, task definitions (periodic ones
        have a schedule) and settings.
    :param owner: the worker's id, for log lines.
    :param clock: the worker's clock.
    :param presence: the worker's heartbeat and pauses, kept on this thread.
    :param tally: the worker's counts of finished attempts, written to the
        stats table every :data:`STATS_FLUSH_INTERVAL` seconds.
    """

    def __init__(
        self,
        parts: AppParts,
        owner: str,
        clock: Clock,
        presence: Presence | None = None,
        *,
        tally: Tally | None = None,
    ) -> None:
        self.parts = parts
        self.store = parts.store
        self.owner = owner
        self.clock = clock
        self.presence = presence
        self.tally = tally
        self._next_flush = time.monotonic() + STATS_FLUSH_INTERVAL
        self._stats_missing_reported = False
        self._stats_failures = FailureLog(
            logger,
            owner,
            failed="Worker %s: could not write the task stats; will try again",
            still="Worker %s: writing the task stats still fails after %.0fs: %s",
            works="Worker %s: writing the task stats works again after %.1fs of"
            " failures",
        )
        self._stopped = False
        self._wake = threading.Event()
        #: Only the heartbeat, no ticks or housekeeping (a ``--burst`` worker).
        self.presence_only = False
        self._thread: threading.Thread | None = None
        #: The last tick enqueued (or skipped) per periodic task, by this worker.
        self._ticks: dict[str, datetime.datetime] = {}
        self._retry_delay = RETRY_MIN
        self._reported_unknown: set[str] = set()
        self._next_prune = 0.0
        self._next_unknown = time.monotonic() + FIRST_HOUSEKEEPING

    def start(self, *, presence_only: bool = False) -> None:
        """Start the scheduler thread; with ``presence_only`` it only keeps the
        worker's heartbeat and pauses."""
        self.presence_only = presence_only
        self._thread = threading.Thread(
            target=self._run, name=f"plainqueue-scheduler-{self.owner}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the scheduler thread and wait up to ``timeout`` seconds for it."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def nudge(self) -> None:
        """Run the next step now (the worker started stopping)."""
        if self.presence is not None:
            self.presence.due_now()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            try:
                wait = self.step()
            except BaseException:  # a bug here must not end the ticks
                logger.exception("Worker %s: the scheduler failed", self.owner)
                wait = RETRY_MAX
            self._wake.wait(max(wait, 0.0))
            self._wake.clear()

    def step(self) -> float:
        """Heartbeat, tick and housekeep as each is due; return the seconds
        until the next is."""
        wait = RETRY_MAX
        if self.presence is not None:
            wait = self.presence.step()
        if self.tally is not None:
            # Also in a --burst worker: its counts are its own.
            now_mono = time.monotonic()
            if now_mono >= self._next_flush:
                self._next_flush = now_mono + STATS_FLUSH_INTERVAL
                self.flush_stats()
            wait = min(wait, self._next_flush - now_mono)
        if not self.presence_only:
            wait = min(wait, self.tick(), self.housekeeping())
        return wait

    # -- periodic ticks ---------------------------------------------------------

    def periodic(self) -> list[TaskDefinition[t.Any, t.Any]]:
        """The registered periodic task definitions."""
        return [d for d in self.parts.registry if d.schedule is not None]

    def tick(self, now: datetime.datetime | None = None) -> float:
        """Enqueue the periodic tasks whose tick has come; return the seconds
        until the next tick (or until a failed enqueue is tried again)."""
        periodic = self.periodic()
        if not periodic:
            return HOUSEKEEPING_INTERVAL
        # In UTC, as every time the queue writes (SQLite keeps no offset).
        now = self.clock() if now is None else as_utc(now)
        failed = False
        for definition in periodic:
            if not self._tick_one(definition, now):
                failed = True
        if failed:
            wait = self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        else:
            self._retry_delay = RETRY_MIN
            wait = HOUSEKEEPING_INTERVAL
        for definition in periodic:
            schedule = t.cast("Schedule", definition.schedule)
            try:
                upcoming = schedule.next(now)
            except Exception:
                continue
            wait = min(wait, (upcoming - now).total_seconds())
        return wait

    def _tick_one(
        self, definition: TaskDefinition[t.Any, t.Any], now: datetime.datetime
    ) -> bool:
        """Enqueue ``definition``'s latest tick if not done yet; return whether
        nothing is left to retry."""
        schedule = t.cast("Schedule", definition.schedule)
        name = definition.name
        try:
            tick = schedule.latest(now)
        except Exception:
            logger.exception("Worker %s: no tick for %s", self.owner, name)
            return True
        last = self._ticks.get(name)
        if last is not None and tick <= last:
            return True
        presence = self.presence
        if presence is not None and presence.paused.holds(
            name, definition.options.queue
        ):
            # Not recorded: on resume the latest tick runs once if catch_up
            # (the usual rule for ticks missed while no worker ran).
            return True
        late = (now - tick).total_seconds()
        tolerance = max(2 * self.parts.config.poll_interval, 5.0)
        run = definition.catch_up or late <= tolerance
        row = None
        if run:
            row = new_row(
                name,
                queue=definition.options.queue,
                priority=definition.options.priority,
                data="null",
                now=now,
                run_at=now,
                unique_key=f"tick:{tick.isoformat()}",
            )
        try:
            enqueued = self.store.enqueue_tick(name, tick, row)
        except Exception as exc:
            if not self.store.is_missing_table(exc):
                logger.exception(
                    "Worker %s: could not enqueue periodic task %s for its tick at"
                    " %s; will try again",
                    self.owner,
                    name,
                    tick.isoformat(),
                )
            return False
        self._ticks[name] = tick
        if enqueued:
            logger.info(
                "Periodic task %s enqueued for its tick at %s",
                name,
                tick.isoformat(),
                extra={"task": name},
            )
        elif row is None:
            logger.warning(
                "Periodic task %s: its tick at %s came %.1fs late and is skipped"
                " (catch_up=False).",
                name,
                tick.isoformat(),
                late,
                extra={"task": name},
            )
        return True

    # -- stats ------------------------------------------------------------------

    def flush_stats(self) -> int:
        """Add the worker's counts so far to the stats table; return how many
        rows were written. A failed write is logged and its counts are kept
        for the next flush."""
        if self.tally is None or not len(self.tally):
            return 0
        try:
            written = self.tally.flush(self.store)
        except Exception as exc:
            if not self.store.is_missing_table(exc):
                self._stats_failures.failed(exc)
            elif not self._stats_missing_reported:
                # An app upgraded without its migration: say so once.
                self._stats_missing_reported = True
                logger.warning(
                    "Worker %s: the stats table %r does not exist, so finished"
                    " attempts are not recorded; create it with 'db.create_all()'"
                    " or your migrations.",
                    self.owner,
                    self.store.tables.stats.name,
                )
            return 0
        self._stats_failures.succeeded()
        return written

    # -- housekeeping -----------------------------------------------------------

    def housekeeping(self) -> float:
        """Prune dead tasks and report unknown task names when due; return the
        seconds until the next housekeeping."""
        now_mono = time.monotonic()
        if now_mono >= self._next_prune:
            self._next_prune = now_mono + HOUSEKEEPING_INTERVAL
            try:
                self.prune()
            except Exception as exc:
                if not self.store.is_missing_table(exc):  # the claim loop says so
                    logger.exception(
                        "Worker %s: pruning finished tasks failed", self.owner
                    )
        if now_mono >= self._next_unknown:
            self._next_unknown = now_mono + HOUSEKEEPING_INTERVAL
            try:
                self.report_unknown_names()
            except Exception as exc:
                if not self.store.is_missing_table(exc):
                    logger.exception("Worker %s: housekeeping failed", self.owner)
        return min(self._next_prune, self._next_unknown) - time.monotonic()

    def prune(self) -> int:
        """Delete dead tasks older than ``PLAINQUEUE_KEEP_FAILED``, succeeded
        tasks whose ``keep_succeeded`` period ended, and stats older than
        ``PLAINQUEUE_KEEP_STATS``; return how many tasks."""
        now = self.clock()
        keep = self.parts.config.keep_failed
        pruned = 0
        if keep is not None:
            before = now - datetime.timedelta(seconds=keep)
            pruned = self.store.delete_dead(before=before, max_batches=100)
            if pruned:
                logger.info("Worker %s: pruned %d dead task(s)", self.owner, pruned)
        expired = self.store.delete_expired(now, max_batches=100)
        if expired:
            logger.info(
                "Worker %s: pruned %d succeeded task(s) past their keep_succeeded",
                self.owner,
                expired,
            )
        keep_stats = self.parts.config.keep_stats
        if keep_stats is not None:
            before = now - datetime.timedelta(seconds=keep_stats)
            history.prune(self.store, before, max_batches=10)
        return pruned + expired

    def report_unknown_names(self) -> list[str]:
        """Log (once per name) due tasks that no registered definition claims;
        return their names."""
        names = self.store.unknown_names(self.parts.registry.names(), self.clock())
        for name in names:
            if name not in self._reported_unknown:
                self._reported_unknown.add(name)
                logger.warning(
                    "Tasks named %r are waiting but no task definition of that name is"
                    " registered in this worker; they are left for a worker that knows"
                    " it (import its module, e.g. with PLAINQUEUE_TASKS).",
                    name,
                    extra={"task": name},
                )
        return names
