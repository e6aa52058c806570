"""The worker's claim loops: claim a batch under a lease, run it, record what
happened, and wait for more. The scheduler thread (:mod:`.scheduler`), the
watchdog (:mod:`.leases`) and the attempt itself (:mod:`.runner`) live beside
it."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import typing as t
import uuid
from collections.abc import Iterable
from collections.abc import Sequence

from . import signals
from .batches import BatchRunner
from .batches import collect
from .batches import count
from .batches import STOP_CHECK_INTERVAL
from .claim_failures import ClaimFailures
from .claimable import Claimable
from .claims import ClaimRequest
from .claims import Outcomes
from .clock import as_utc
from .clock import Clock
from .exceptions import ConfigurationError
from .leases import Leases
from .presence import Presence
from .runner import TaskRunner
from .scheduler import Scheduler
from .store import AppParts
from .tally import Counts
from .tally import Tally
from .unwritten import REFUSED_AFTER
from .unwritten import Unwritten

if t.TYPE_CHECKING:
    from flask import Flask

    from .backend import Watcher

logger = logging.getLogger(__name__)

#: Shortest idle wait; idle waits double from here up to the poll interval.
MIN_IDLE = 0.01
#: How long after the grace period ``run()`` still waits for its claim loops.
STOP_MARGIN = 0.5


def new_worker_id() -> str:
    """``host:pid:random``, unique per worker, recorded as the lease owner."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Worker:
    """Claims and runs tasks for one app.

    ``concurrency`` claim loops share one thread pool; each loop claims a batch
    of up to ``batch_size`` due tasks of one name and runs them concurrently
    (sync functions on pool threads, coroutine functions on one event loop).

    :param app: the concrete Flask app whose context each task runs in.
    :param parts: the app's database, queue storage, task definitions (those
        this worker may run) and settings.
    :param queues: only claim tasks of these queues; ``None`` means all.
    :param tasks: only claim tasks of these names; ``None`` means every
        registered one.
    :param clock: returns the current UTC time; default the store's clock
        (the database's on PostgreSQL). Tests inject their own.
    :param kind: ``process`` or ``embedded``, as the workers table shows it.
    """

    def __init__(
        self,
        app: Flask,
        parts: AppParts,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
        tasks: Iterable[str] | None = None,
        kind: str = "process",
    ) -> None:
        self.app = app
        #: The app's database, queue storage, task definitions and settings.
        self.parts = parts
        self.db = parts.db
        self.store = store = parts.store
        self.registry = parts.registry
        # When a claim last handed back expired leases (store clock); None:
        # the next claim does.
        self._swept: datetime.datetime | None = None
        self.config = config = parts.config
        self.concurrency = concurrency or config.concurrency
        self.queues = list(queues) if queues else None
        #: The task names this worker claims; ``None``: every registered one.
        self.tasks = None if tasks is None else frozenset(tasks)
        self._claimable = Claimable(self.registry, config, self.tasks)
        self.clock = clock or store.clock
        #: Recorded as ``lease_owner`` on the rows this worker claims.
        self.id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._wake_events: list[threading.Event] = []
        self._lock = threading.Lock()
        self._watcher: Watcher | None = None
        self._lease = datetime.timedelta(seconds=config.lease_seconds)
        # Outcomes of a batch claimed this long ago are written on their own:
        # its leases may have ended (or been freed, the worker taken for lost)
        # meanwhile, and only such a write says which rows were still ours.
        self._late_after = min(config.lease_seconds, config.worker_timeout) / 3
        self._fixed_now: datetime.datetime | None = None
        self._runner = TaskRunner(app, parts, self.id, self._now)
        self.leases = Leases(
            store,
            self.id,
            config.lease_seconds,
            self.clock,
            lambda: self._stop_deadline,
        )
        self._batches = BatchRunner(self._runner, self.leases, parts, self.concurrency)
        #: Its row in the workers table, heartbeats and the pauses it obeys.
        self.presence = Presence(
            parts,
            self.id,
            kind=kind,
            queues=self.queues,
            concurrency=self.concurrency,
            clock=store.clock,
            stopping=self._stop.is_set,
            on_freed=self.wake,
        )
        #: Finished attempts per task name and minute, not yet in the stats
        #: table.
        self.tally = Tally()
        #: Heartbeats, periodic ticks, housekeeping and the stats flush (its
        #: thread runs with :meth:`run`).
        self.scheduler = Scheduler(
            parts, self.id, self.clock, self.presence, tally=self.tally
        )
        # What the claim loops report while claiming fails, and the finished
        # tasks they hold meanwhile.
        self._claim_failures = ClaimFailures(self.id, store)
        # (The clock through self: tests replace it on a built worker.)
        self._unwritten = Unwritten(
            self.id, store, self.presence, self._claim_failures, lambda: self.clock()
        )

    def _now(self) -> datetime.datetime:
        # run_once(now=...) pins the time for the whole batch (tests, replays).
        return self._fixed_now or self.clock()

    # -- public -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def abandoned(self) -> int:
        """Tasks still running when the shutdown grace period ran out (handed
        back)."""
        return self.leases.handed_back

    def run_once(self, now: datetime.datetime | None = None) -> int:
        """Claim one batch, run it to the end, write the results and the stats;
        return how many attempts ran (0 when nothing was due)."""
        if now is not None:
            # In UTC, as every time the queue writes (SQLite keeps no offset).
            now = as_utc(now)
        outcomes = Outcomes()
        self._fixed_now = now
        self._swept = None
        try:
            return self._cycle(outcomes, now)
        finally:
            self._fixed_now = None
            self._unwritten.settle(outcomes, now or self.clock())
            self.scheduler.flush_stats()
            self._reraise_interrupt()

    def drain(self) -> int:
        """Run batches until none is due, then write the results and the stats;
        return how many attempts ran."""
        total = 0
        outcomes = Outcomes()
        self._swept = None
        self.presence.refresh_pauses()
        try:
            with self.store.pinned():
                while True:
                    ran = self._cycle(outcomes, None)
                    if not ran:
                        return total
                    total += ran
                    # Ctrl-C in a task: recorded as a failed attempt (retried
                    # as usual), then it stops the drain.
                    if self._runner.take_interrupt_pending():
                        return total
        finally:
            self._unwritten.settle(outcomes, self.clock())
            self.scheduler.flush_stats()
            self._reraise_interrupt()

    def run_task(self, task_id: int) -> bool:
        """Claim the queued task ``task_id`` whether due or not and run it now, in
        the calling thread (eager mode). Returns whether it was there to run."""
        now = self.clock()
        task = self.store.claim_id(
            owner=self.id, task_id=task_id, until=now + self._lease
        )
        if task is None:
            return False
        outcome, seconds = self._runner.timed(self.registry.get(task.name), task)
        outcomes, counts = Outcomes(), Counts()
        collect(outcomes, task, outcome)
        count(counts, outcome, seconds)
        self._unwritten.settle(outcomes, self.clock())
        # Written by close(), once for all the tasks of an eager perform_many.
        self.tally.add(self.clock(), task.name, counts)
        self._reraise_interrupt()
        return True

    def _reraise_interrupt(self) -> None:
        # Only the calling thread's own runs (drain, run_once, eager mode) end
        # with the interrupt: it is the caller's Ctrl-C or sys.exit().
        interrupt = self._runner.take_interrupt()
        if interrupt is not None:
            raise interrupt

    def check_pool(self) -> None:
        """Refuse a ``concurrency`` the engine's pool cannot serve: each claim
        loop runs a task that may hold a session connection, and the app needs
        one more.

        :raises ConfigurationError: the pool is too small; the message says
            which settings to change.
        """
        capacity = self.store.pool_capacity()
        if capacity is not None and self.concurrency + 1 > capacity:
            raise ConfigurationError(
                f"PLAINQUEUE_CONCURRENCY (or --concurrency) is {self.concurrency},"
                f" but the database pool hands out {capacity} connections: each"
                " claim loop's task may hold one and the app needs at least one"
                " more. Lower the concurrency, or raise pool_size/max_overflow in"
                " SQLALCHEMY_ENGINE_OPTIONS."
            )

    def run(self, *, burst: bool = False) -> None:
        """Run claim loops until :meth:`stop` (or, with ``burst``, until nothing is
        due), then write what finished and hand back what did not."""
        self.check_pool()
        self._send(signals.worker_started)
        logger.info(
            "Worker %s started: %d loop(s), tasks: %s",
            self.id,
            self.concurrency,
            ", ".join(self.registry.names()) or "(none)",
        )
        self.presence.register()
        try:
            if not burst:
                self._watcher = self.store.watcher(self.on_change, self.id)
                if self._watcher is not None:
                    self._watcher.start()
            # A --burst worker only keeps its heartbeat: no ticks, no pruning.
            self.scheduler.start(presence_only=burst)
            # The loops run on daemon threads, so that one stuck in a task past the
            # grace period (its row handed back by the watchdog) cannot keep run()
            # from returning.
            threads = [
                threading.Thread(
                    target=self._claim_loop,
                    args=(burst,),
                    name=f"plainqueue-loop-{i}",
                    daemon=True,
                )
                for i in range(self.concurrency)
            ]
            for thread in threads:
                thread.start()
            self._wait_for(threads)
        finally:
            self.close()
            self._send(signals.worker_stopped)
            logger.info("Worker %s stopped", self.id)

    def _send(self, signal: t.Any) -> None:
        try:
            signals.send(signal, self.app, worker_id=self.id)
        except BaseException:  # logged by send(); a receiver never stops a worker
            pass

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming. Running tasks get ``grace`` seconds (default
        ``PLAINQUEUE_SHUTDOWN_GRACE``) to finish; what has not finished by then is
        handed back, due at once, for another worker to take. A later call with
        an earlier end replaces the deadline."""
        if grace is None:
            grace = self.config.shutdown_grace
        with self._lock:
            deadline = time.monotonic() + grace
            if self._stop_deadline is None or deadline < self._stop_deadline:
                self._stop_deadline = deadline
            self._stop.set()
        self.wake()
        # Its row says "stopping" at once, not at the next heartbeat.
        self.scheduler.nudge()

    def wake(self) -> None:
        """Cut an idle wait short: a task was just enqueued in this process."""
        with self._lock:
            events = list(self._wake_events)
        for event in events:
            event.set()

    def close(self) -> None:
        """Stop the helper threads, the thread pool and the event loop; write
        the stats counted since the last flush."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        self.scheduler.stop()
        self.scheduler.flush_stats()
        self.presence.unregister()
        self._batches.close()
        self._runner.close()
        self.leases.close()

    # -- the loop -----------------------------------------------------------

    def _wait_for(self, threads: list[threading.Thread]) -> None:
        while True:
            alive = [thread for thread in threads if thread.is_alive()]
            if not alive:
                return
            deadline = self._stop_deadline
            if deadline is not None and time.monotonic() > deadline + STOP_MARGIN:
                logger.warning(
                    "Worker %s: a task still runs after the grace period; its row"
                    " was handed back, and the worker stops without it.",
                    self.id,
                )
                return
            # Until a stop is asked for there is no deadline to watch: a
            # longer wait keeps an idle worker's main thread asleep.
            alive[0].join(STOP_CHECK_INTERVAL if deadline is not None else 1.0)

    def _claim_loop(self, burst: bool) -> None:
        outcomes = Outcomes()
        wake = threading.Event()
        with self._lock:
            self._wake_events.append(wake)
        idle = MIN_IDLE
        failures = self._claim_failures
        failed_in_row = 0
        try:
            with self.store.pinned():
                while not self._stop.is_set():
                    try:
                        ran = self._cycle(outcomes, None)
                        failed_in_row = 0
                    except Exception as exc:
                        failures.failed(exc, burst)
                        ran = 0
                        failed_in_row += 1
                        if outcomes and failed_in_row % REFUSED_AFTER == 0:
                            self._unwritten.write_apart(outcomes)
                        self._unwritten.hold(bool(outcomes))
                    except BaseException:  # not a signal: this is not the main thread
                        logger.exception(
                            "Worker %s: a claim loop was interrupted", self.id
                        )
                        ran = 0
                        self._unwritten.hold(bool(outcomes))
                    interrupt = self._runner.take_interrupt()
                    if interrupt is not None:
                        logger.warning(
                            "Worker %s: a task, callback or receiver raised %s; it was"
                            " handled as an error and the worker goes on",
                            self.id,
                            type(interrupt).__name__,
                        )
                    if ran:
                        idle = MIN_IDLE
                        continue
                    if burst:
                        break
                    watcher = self._watcher
                    if watcher is not None and watcher.reliable:
                        # A commit wakes this loop at once; the poll is only for
                        # delayed tasks, retries and expired leases, which send
                        # no notification.
                        idle = self._claimable.poll_interval()
                    wake.wait(idle)
                    wake.clear()
                    idle = min(idle * 2, self._claimable.poll_interval())
        finally:
            try:
                self._unwritten.settle(outcomes, self.clock())
            except Exception:
                logger.exception("Worker %s: could not record finished tasks", self.id)
            self._unwritten.hold(False)
            with self._lock:
                self._wake_events.remove(wake)

    @property
    def watcher(self) -> Watcher | None:
        """What wakes this worker's idle loops on new tasks (LISTEN/NOTIFY on
        PostgreSQL, the change probe on SQLite), while :meth:`run` runs."""
        return self._watcher

    def on_change(self, payload: str | None) -> None:
        """Called by the watcher: tasks of queue ``payload`` (``""`` or
        ``None``: any queue) may be claimable. Wakes the idle loops unless this
        worker does not serve that queue."""
        if payload and self.queues is not None and payload not in self.queues:
            return
        self.wake()

    # -- one batch ------------------------------------------------------------

    def _cycle(self, outcomes: Outcomes, now: datetime.datetime | None) -> int:
        """Settle ``outcomes`` and claim a batch in one transaction, run the batch,
        and leave its results in ``outcomes``."""
        if self._stop.is_set() and now is None and self._stop_deadline is not None:
            return 0
        claim_time = now or self.clock()
        claimed_at = time.monotonic()
        # A batch that ran long (or a worker that was paused): see _late_after.
        if (
            outcomes.claimed_at is not None
            and claimed_at - outcomes.claimed_at >= self._late_after
            and outcomes
        ):
            self._unwritten.settle(outcomes, claim_time)
            self._unwritten.written()
        paused = self.presence.paused
        claim = self._claimable.now(paused)
        definitions, names = claim.definitions, claim.names
        if not names and paused:
            # Everything this worker knows is paused; finished work is still
            # written.
            if outcomes:
                self._unwritten.settle(outcomes, claim_time)
                self._unwritten.written()
            return 0
        swept = self._swept
        sweep = (
            swept is None
            or claim_time < swept
            or claim_time - swept >= claim.sweep_every
        ) and self._unwritten.may_sweep()
        tasks = self.store.claim(
            ClaimRequest(
                owner=self.id,
                names=names,
                batch_sizes=claim.batch_sizes,
                now=claim_time,
                until=claim_time + self._lease,
                queues=self.queues,
                sweep=sweep,
            ),
            outcomes,
        )
        self._unwritten.written()
        if sweep:
            self._swept = claim_time
        if not tasks:
            return 0
        outcomes.claimed_at = claimed_at
        counts = self._batches.run(definitions[tasks[0].name], tasks, outcomes)
        self.tally.add(self._now(), tasks[0].name, counts)
        return len(tasks)
