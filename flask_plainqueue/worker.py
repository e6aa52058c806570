"""The worker: claims batches under a lease, runs them in app contexts, and
records what happened. The only module that pushes app contexts."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import typing as t
import uuid
from collections.abc import Callable
from collections.abc import Sequence

import sqlalchemy.exc

from . import signals
from .notify import Listener
from .pool import TaskPool
from .runner import collect
from .runner import Outcome
from .runner import TaskRunner
from .sqlite import ChangeProbe
from .storage import ClaimedTask
from .storage import new_row
from .storage import Outcomes
from .storage import Storage

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from .config import QueueConfig
    from .schedules import Schedule
    from .tasks import TaskDefinition
    from .tasks import TaskRegistry

logger = logging.getLogger(__name__)

UTC = datetime.timezone.utc
Clock = Callable[[], datetime.datetime]

#: Shortest idle wait; idle waits double from here up to the poll interval.
MIN_IDLE = 0.01
#: How often an idle SQLite worker asks ``PRAGMA data_version`` whether another
#: connection committed: a cheap check instead of a query on the table.
PROBE_INTERVAL = 0.01
#: How often a worker waiting on a running batch checks whether it was stopped.
STOP_CHECK_INTERVAL = 0.1
#: How long after the grace period ``run()`` still waits for its claim loops.
STOP_MARGIN = 0.5
#: How often unknown task names are looked for (seconds).
HOUSEKEEPING_INTERVAL = 60.0
#: How long a missing queue table is waited for quietly before it is reported:
#: under ``flask run`` the worker starts while the app may still be creating it.
MISSING_TABLE_GRACE = 5.0
#: While claiming keeps failing, how often it is logged again (seconds).
FAILURE_LOG_INTERVAL = 60.0

_ONE_SECOND = datetime.timedelta(seconds=1)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def new_worker_id() -> str:
    """``host:pid:random``, unique per worker, recorded as the lease owner."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Worker:
    """Claims and runs tasks for one app.

    ``concurrency`` claim loops share one thread pool; each loop claims a batch
    of up to ``batch_size`` due tasks of one name and runs them concurrently
    (sync functions on pool threads, coroutine functions on one event loop).

    :param app: the concrete Flask app whose context each task runs in.
    :param db: the app's Flask-SQLAlchemy instance.
    :param storage: the app's queue storage.
    :param registry: the task definitions this worker may run.
    :param config: the app's queue settings.
    :param queues: only claim tasks of these queues; ``None`` means all.
    :param clock: returns the current UTC time (tests inject their own).
    """

    def __init__(
        self,
        app: Flask,
        db: SQLAlchemy,
        storage: Storage,
        registry: TaskRegistry,
        config: QueueConfig,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        clock: Clock = utcnow,
        worker_id: str | None = None,
    ) -> None:
        self.app = app
        self.db = db
        self.storage = storage
        self.registry = registry
        self.config = config
        self.concurrency = concurrency or config.concurrency
        self.queues = list(queues) if queues else None
        self.clock = clock
        #: Recorded as ``lease_owner`` on the rows this worker claims.
        self.id = worker_id or new_worker_id()
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._wake_events: list[threading.Event] = []
        self._lock = threading.Lock()
        self._pool: TaskPool | None = None
        self._listener: Listener | None = None
        self._reported_unknown: set[str] = set()
        self._missing_table_since: float | None = None
        self._missing_table_reported = False
        # A failing claim (e.g. the database restarting) is logged with its
        # traceback once, then once a minute, and its recovery once.
        self._claims_failing_since: float | None = None
        self._claims_failure_logged = 0.0
        # The first look for unknown names waits a little: under `flask run` the
        # worker starts while the app is still registering its tasks.
        self._last_housekeeping = time.monotonic() - HOUSEKEEPING_INTERVAL + 10.0
        self._lease = datetime.timedelta(seconds=config.lease_seconds)
        #: Tasks still running when the shutdown grace period ran out (handed back).
        self.abandoned = 0
        self._fixed_now: datetime.datetime | None = None
        self._runner = TaskRunner(app, db, storage, self.id, self._now)
        # Tasks run on the claiming thread (a batch of one), by thread id.
        self._inline: dict[int, _Inline] = {}
        self._inline_event = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._closed = False
        self._ticks: dict[str, datetime.datetime] = {}
        self._next_tick: datetime.datetime | None = None
        self._last_prune = -HOUSEKEEPING_INTERVAL

    def _now(self) -> datetime.datetime:
        # run_once(now=...) pins the time for the whole batch (tests, replays).
        return self._fixed_now or self.clock()

    # -- public -------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def run_once(self, now: datetime.datetime | None = None) -> int:
        """Claim one batch, run it to the end, write the results; return how many
        attempts ran (0 when nothing was due)."""
        outcomes = Outcomes()
        self._fixed_now = now
        try:
            return self._cycle(outcomes, now)
        finally:
            self._fixed_now = None
            self.storage.settle(self.id, outcomes, now or self.clock())

    def drain(self) -> int:
        """Run batches until none is due; return how many attempts ran."""
        total = 0
        outcomes = Outcomes()
        try:
            with self._pinned():
                while True:
                    ran = self._cycle(outcomes, None)
                    if not ran:
                        return total
                    total += ran
        finally:
            self.storage.settle(self.id, outcomes, self.clock())

    def run_task(self, task_id: int) -> bool:
        """Claim the queued task ``task_id`` whether due or not and run it now, in
        the calling thread (eager mode). Returns whether it was there to run."""
        now = self.clock()
        task = self.storage.claim_id(
            owner=self.id, task_id=task_id, until=now + self._lease
        )
        if task is None:
            return False
        definition = self.registry.get(task.name)
        outcome = self._runner.attempt(definition, task)
        outcomes = Outcomes()
        collect(outcomes, task, outcome)
        self.storage.settle(self.id, outcomes, self.clock())
        return True

    def run(self, *, burst: bool = False) -> None:
        """Run claim loops until :meth:`stop` (or, with ``burst``, until nothing is
        due), then write what finished and hand back what did not."""
        signals.send(signals.worker_started, self.app, worker_id=self.id)
        logger.info(
            "Worker %s started: %d loop(s), tasks: %s",
            self.id,
            self.concurrency,
            ", ".join(self.registry.names()) or "(none)",
        )
        try:
            if not burst:
                self._start_listener()
            # The loops run on daemon threads, so that one stuck in a task past the
            # grace period (its row handed back by the watchdog) cannot keep run()
            # from returning.
            threads = [
                threading.Thread(
                    target=self._claim_loop,
                    args=(i, burst),
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
            signals.send(signals.worker_stopped, self.app, worker_id=self.id)
            logger.info("Worker %s stopped", self.id)

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
            alive[0].join(STOP_CHECK_INTERVAL)

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming. Running tasks get ``grace`` seconds (default
        ``PLAINQUEUE_SHUTDOWN_GRACE``) to finish; what has not finished by then is
        handed back, due at once, for another worker to take."""
        if grace is None:
            grace = self.config.shutdown_grace
        with self._lock:
            deadline = time.monotonic() + grace
            if self._stop_deadline is None or deadline < self._stop_deadline:
                self._stop_deadline = deadline
            self._stop.set()
            for event in self._wake_events:
                event.set()

    def wake(self) -> None:
        """Cut an idle wait short: a task was just enqueued in this process."""
        for event in self._wake_events:
            event.set()

    def close(self) -> None:
        """Shut the thread pool and event loop down."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        self._runner.close()
        with self._lock:
            self._closed = True
            self._inline_event.set()

    # -- the loop -----------------------------------------------------------

    def _claim_loop(self, index: int, burst: bool) -> None:
        outcomes = Outcomes()
        wake = threading.Event()
        with self._lock:
            self._wake_events.append(wake)
        probe = ChangeProbe(self.storage.engine) if self.storage.is_sqlite else None
        idle = MIN_IDLE
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self._pinned())
            while not self._stop.is_set():
                if index == 0:
                    self._housekeeping()
                    until_tick = self._schedule_ticks()
                else:
                    until_tick = math.inf
                if probe is not None:
                    # Read the version before claiming, so a commit that lands
                    # between an empty claim and the idle wait is not missed.
                    probe.changed()
                try:
                    ran = self._cycle(outcomes, None)
                    self._missing_table_since = None
                    if self._claims_failing_since is not None:
                        self._claims_work_again()
                except Exception as exc:
                    self._claim_failed(exc, burst)
                    ran = 0
                    if probe is not None:
                        probe.reset()
                if ran:
                    idle = MIN_IDLE
                    continue
                if burst:
                    break
                self._idle_wait(wake, probe, min(idle, until_tick), until_tick)
                idle = min(idle * 2, self._poll_interval())
        finally:
            try:
                self.storage.settle(self.id, outcomes, self.clock())
            except Exception:
                logger.exception("Worker %s: could not record finished tasks", self.id)
            stack.close()
            if probe is not None:
                probe.close()
            with self._lock:
                self._wake_events.remove(wake)

    def _pinned(self) -> t.ContextManager[None]:
        """SQLite: one connection for this thread's claims (see ``HotPath``)."""
        hot = self.storage.hot
        return contextlib.nullcontext() if hot is None else hot.pinned()

    def _claim_failed(self, exc: Exception, burst: bool) -> None:
        if not _is_missing_table(exc):
            now = time.monotonic()
            if self._claims_failing_since is None:
                self._claims_failing_since = self._claims_failure_logged = now
                logger.exception("Worker %s: claiming failed; will retry", self.id)
            elif now - self._claims_failure_logged >= FAILURE_LOG_INTERVAL:
                self._claims_failure_logged = now
                logger.error(
                    "Worker %s: claiming still fails after %.0fs: %s",
                    self.id,
                    now - self._claims_failing_since,
                    exc,
                )
            else:
                logger.debug("Worker %s: claiming failed again: %s", self.id, exc)
            return
        # A missing table is a setup step not done yet, not a crash: say so once,
        # without a traceback per poll.
        now = time.monotonic()
        if self._missing_table_since is None:
            self._missing_table_since = now
        waited = now - self._missing_table_since
        if self._missing_table_reported or (waited < MISSING_TABLE_GRACE and not burst):
            return
        self._missing_table_reported = True
        logger.warning(
            "Worker %s: the queue table %r does not exist. Create it with"
            " 'db.create_all()' or your migrations; until then no task can run.",
            self.id,
            self.storage.table.name,
        )

    def _claims_work_again(self) -> None:
        since, self._claims_failing_since = self._claims_failing_since, None
        if since is not None:
            logger.warning(
                "Worker %s: claiming works again after %.1fs of failures",
                self.id,
                time.monotonic() - since,
            )

    def _poll_interval(self) -> float:
        intervals = [
            d.options.poll_interval
            for d in self.registry
            if d.options.poll_interval is not None
        ]
        return min([self.config.poll_interval, *intervals])

    def _start_listener(self) -> None:
        if not self.storage.notifies or self._listener is not None:
            return
        listener = Listener(self.storage, self._on_notify, name=self.id)
        self._listener = listener
        listener.start()

    def _on_notify(self, payload: str | None) -> None:
        # The payload is the new task's queue ("" or None: any queue).
        if payload and self.queues is not None and payload not in self.queues:
            return
        self.wake()

    def _idle_wait(
        self,
        wake: threading.Event,
        probe: ChangeProbe | None,
        timeout: float,
        until_tick: float = math.inf,
    ) -> None:
        if probe is None:
            listener = self._listener
            if listener is not None and listener.listening:
                # PostgreSQL: NOTIFY wakes this loop at once; the poll is only for
                # delayed tasks, retries and expired leases, which send none (and
                # periodic ticks, which come when they are due).
                timeout = min(self._poll_interval(), until_tick)
            wake.wait(timeout)
        else:
            # SQLite: wait the whole poll interval (or until a periodic tick), but
            # look every few milliseconds whether any connection committed; only
            # then query the table.
            end = time.monotonic() + min(self._poll_interval(), timeout)
            while not wake.is_set():
                remaining = end - time.monotonic()
                if remaining <= 0 or probe.changed():
                    break
                wake.wait(min(remaining, PROBE_INTERVAL))
        wake.clear()

    def _schedule_ticks(self) -> float:
        """Enqueue the periodic tasks whose tick has come (once per tick across
        all workers); return the seconds until the next tick."""
        periodic = [d for d in self.registry if d.schedule is not None]
        if not periodic or self.storage.periodic is None:
            return math.inf
        now = self.clock()
        if self._next_tick is not None and now < self._next_tick:
            return (self._next_tick - now).total_seconds()
        tolerance = max(2 * self._poll_interval(), 5.0)
        for definition in periodic:
            schedule = t.cast("Schedule", definition.schedule)
            tick = schedule.latest(now)
            if tick <= self._ticks.get(definition.name, tick - _ONE_SECOND):
                continue
            run = definition.catch_up or (now - tick).total_seconds() <= tolerance
            row = None
            if run:
                row = new_row(
                    definition.name,
                    queue=definition.options.queue,
                    priority=definition.options.priority,
                    data="null",
                    now=now,
                    run_at=now,
                    unique_key=f"tick:{tick.isoformat()}",
                )
            try:
                enqueued = self.storage.enqueue_tick(definition.name, tick, row)
            except Exception:
                logger.exception(
                    "Worker %s: could not enqueue periodic task %s",
                    self.id,
                    definition.name,
                )
                continue
            self._ticks[definition.name] = tick
            if enqueued:
                logger.info(
                    "Periodic task %s enqueued for its tick at %s",
                    definition.name,
                    tick.isoformat(),
                    extra={"task": definition.name},
                )
        self._next_tick = min(
            t.cast("Schedule", d.schedule).next(now) for d in periodic
        )
        return max((self._next_tick - now).total_seconds(), 0.0)

    def _prune(self) -> None:
        keep = self.config.keep_failed
        if keep is None:
            return
        before = self.clock() - datetime.timedelta(seconds=keep)
        pruned = self.storage.prune(before)
        if pruned:
            logger.info("Worker %s: pruned %d dead task(s)", self.id, pruned)

    def _housekeeping(self) -> None:
        now_mono = time.monotonic()
        if now_mono - self._last_prune >= HOUSEKEEPING_INTERVAL:
            self._last_prune = now_mono
            try:
                self._prune()
            except Exception as exc:
                if not _is_missing_table(exc):  # the claim loop reports that
                    logger.exception("Worker %s: pruning dead tasks failed", self.id)
        if now_mono - self._last_housekeeping < HOUSEKEEPING_INTERVAL:
            return
        self._last_housekeeping = now_mono
        try:
            names = self.storage.unknown_names(self.registry.names(), self.clock())
        except Exception as exc:
            if not _is_missing_table(exc):  # the claim loop reports that
                logger.exception("Worker %s: housekeeping failed", self.id)
            return
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

    def _cycle(self, outcomes: Outcomes, now: datetime.datetime | None) -> int:
        """Settle ``outcomes`` and claim a batch in one transaction, run the batch,
        and leave its results in ``outcomes``."""
        if self._stop.is_set() and now is None and self._stop_deadline is not None:
            return 0
        claim_time = now or self.clock()
        definitions = {d.name: d for d in self.registry}
        tasks = self.storage.claim(
            owner=self.id,
            names=sorted(definitions),
            batch_sizes={name: d.options.batch_size for name, d in definitions.items()},
            now=claim_time,
            until=claim_time + self._lease,
            queues=self.queues,
            outcomes=outcomes,
        )
        if not tasks:
            return 0
        self._run_batch(definitions[tasks[0].name], tasks, outcomes)
        return len(tasks)

    def _run_batch(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        tasks: Sequence[ClaimedTask],
        outcomes: Outcomes,
    ) -> None:
        if len(tasks) == 1 and (
            definition.is_async or definition.options.timeout is None
        ):
            # A batch of one runs on this thread: handing it to a pool thread and
            # back would cost more than a no-op task. The watchdog extends its
            # lease and hands it back after the grace period. (A sync task with a
            # timeout needs the pool: only there can it be left behind.)
            outcome = self._run_inline(definition, tasks[0])
            collect(outcomes, tasks[0], outcome)
            return
        batch = self._get_pool().run_batch(
            self._runner.attempt, [(definition, task) for task in tasks]
        )
        extend_every = self.config.lease_seconds / 3
        next_extend = time.monotonic() + extend_every
        # A coroutine's timeout is enforced on the event loop (it is cancelled);
        # a sync function's here, since its thread cannot be stopped.
        limit = definition.options.timeout
        deadline = (
            None if limit is None or definition.is_async else time.monotonic() + limit
        )
        # An atomic task holds SQLite's write lock until it commits, so no other
        # worker can claim its row meanwhile, and an extension would only wait
        # for that lock.
        extendable = not (definition.options.atomic and self.storage.is_sqlite)
        while True:
            timeout = next_extend - time.monotonic()
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if self._stop_deadline is not None:
                timeout = min(timeout, self._stop_deadline - time.monotonic())
            else:
                # stop() cannot interrupt this wait, so look again soon: a grace
                # period must start when stop() is called, not at the next lease
                # extension.
                timeout = min(timeout, STOP_CHECK_INTERVAL)
            if batch.wait(max(timeout, 0)):
                for i in range(len(tasks)):
                    collect(outcomes, tasks[i], batch.result(i))
                return
            # One snapshot: a call ending after it counts as still running.
            finished = batch.finished()
            running = [task for i, task in enumerate(tasks) if i not in finished]
            ids = [task.id for task in running]
            if (
                self._stop_deadline is not None
                and time.monotonic() >= self._stop_deadline
            ) or (deadline is not None and time.monotonic() >= deadline):
                # Record what finished; what runs on is handed back or failed.
                for i in finished:
                    collect(outcomes, tasks[i], batch.result(i))
                if deadline is not None and time.monotonic() >= deadline:
                    self._time_out(definition, running)
                    return
                self._hand_back(ids)
                return
            if time.monotonic() >= next_extend:
                if extendable:
                    self._extend(ids)
                next_extend = time.monotonic() + extend_every

    def _hand_back(self, ids: list[int]) -> None:
        """The grace period is over: make these running tasks due for others."""
        self.abandoned += len(ids)
        handed = self.storage.release(self.id, ids, self.clock())
        logger.warning(
            "Worker %s: shutdown grace period over; handed back %d unfinished"
            " task(s): %s",
            self.id,
            handed,
            ids,
        )

    def _run_inline(
        self, definition: TaskDefinition[t.Any, t.Any], task: ClaimedTask
    ) -> Outcome:
        extendable = not (definition.options.atomic and self.storage.is_sqlite)
        key = threading.get_ident()
        with self._lock:
            self._inline[key] = _Inline(task, extendable, time.monotonic())
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="plainqueue-watchdog", daemon=True
                )
                self._watchdog.start()
            if not self._inline_event.is_set():
                self._inline_event.set()
        try:
            return self._runner.attempt(definition, task)
        finally:
            with self._lock:
                self._inline.pop(key, None)

    def _watch(self) -> None:
        """Extend the leases of tasks running on claiming threads, and hand them
        back once the shutdown grace period is over."""
        extend_every = self.config.lease_seconds / 3
        while True:
            self._inline_event.wait()
            # Look a tenth of a second later, not at once: most inline tasks end
            # within that, and waking per task would cost each one a thread switch.
            time.sleep(STOP_CHECK_INTERVAL)
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                if not self._inline:
                    self._inline_event.clear()
                    continue
                running = [i for i in self._inline.values() if not i.released]
            if not running:
                continue
            deadline = self._stop_deadline
            if deadline is not None and now >= deadline:
                for item in running:
                    item.released = True
                try:
                    self._hand_back([i.task.id for i in running])
                except Exception:
                    logger.exception("Worker %s: could not hand back tasks", self.id)
                continue
            due = [
                i for i in running if i.extendable and now - i.extended >= extend_every
            ]
            if due:
                for item in due:
                    item.extended = now
                self._extend([i.task.id for i in due])

    def _time_out(
        self, definition: TaskDefinition[t.Any, t.Any], tasks: Sequence[ClaimedTask]
    ) -> None:
        self._runner.time_out(definition, tasks)
        # The stuck threads keep their pool slots: later batches get a new pool.
        with self._lock:
            stuck, self._pool = self._pool, None
        if stuck is not None:
            stuck.shutdown()

    def _extend(self, ids: list[int]) -> None:
        try:
            held = self.storage.extend(self.id, ids, self.clock() + self._lease)
        except Exception:
            logger.exception("Worker %s: could not extend leases", self.id)
            return
        if held < len(ids):
            logger.warning(
                "Worker %s lost the lease of %d running task(s); another worker may"
                " run them again (delivery is at-least-once).",
                self.id,
                len(ids) - held,
            )

    def _get_pool(self) -> TaskPool:
        with self._lock:
            if self._pool is None:
                biggest = max((d.options.batch_size for d in self.registry), default=1)
                self._pool = TaskPool(
                    min(256, biggest * self.concurrency), "plainqueue-task"
                )
            return self._pool


def _is_missing_table(exc: BaseException) -> bool:
    """Whether ``exc`` says a table does not exist (SQLite or PostgreSQL)."""
    # The SQLite hot path raises the driver's own errors, unwrapped.
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL: undefined_table
        return True
    return isinstance(orig, sqlite3.OperationalError) and "no such table" in str(orig)


@dataclasses.dataclass
class _Inline:
    """A task running on a claiming thread, as the watchdog sees it."""

    task: ClaimedTask
    extendable: bool
    extended: float
    released: bool = False


class WorkerThread(threading.Thread):
    """Runs a :class:`Worker` in a daemon thread (a greenlet under gevent's
    monkey-patching). Installs no signal handlers."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="plainqueue-worker", daemon=True)
        self.worker = worker

    def run(self) -> None:
        try:
            self.worker.run()
        except Exception:
            logger.exception("The embedded worker crashed")

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the worker and wait up to ``timeout`` seconds; returns whether the
        thread ended."""
        self.worker.stop(grace=timeout)
        self.join(None if timeout is None else timeout + 2)
        return not self.is_alive()
