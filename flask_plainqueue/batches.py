"""Running one claimed batch: on the claiming thread (a batch of one) or on
the task pool's threads, with the batch's leases watched, its sync timeout
enforced, and what outlives the shutdown grace period handed back."""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Sequence

from .claims import ClaimedTask
from .claims import Failure
from .claims import Kept
from .claims import Outcomes
from .leases import Held
from .leases import Leases
from .pool import Batch
from .pool import TaskPool
from .runner import COMMITTED
from .runner import COMPLETED
from .runner import Outcome
from .runner import TaskRunner
from .tally import Counts

if t.TYPE_CHECKING:
    from .store import AppParts
    from .tasks import TaskDefinition

#: How often a worker waiting on a running batch looks at its deadlines.
STOP_CHECK_INTERVAL = 0.1


def collect(outcomes: Outcomes, task: ClaimedTask, outcome: Outcome) -> None:
    """Add an attempt's outcome to those the worker writes next."""
    if outcome == COMPLETED:
        outcomes.completed.append((task.id, task.attempts))
    elif isinstance(outcome, Failure):
        outcomes.failed.append(outcome)
    elif isinstance(outcome, Kept):
        outcomes.kept.append(outcome)


def count(counts: Counts, outcome: Outcome, seconds: float) -> None:
    """Count a finished attempt for the stats: succeeded, or failed (and
    dead). A :class:`~flask_plainqueue.Retry` request is no failure; an
    outcome discarded here (finished after its timeout, or its success
    callback after its lease) was counted when it timed out, or not at all.
    An outcome the database drops later (its row no longer this worker's, as
    after a pause longer than the lease) is counted as the attempt ran."""
    if outcome == COMPLETED or outcome == COMMITTED or isinstance(outcome, Kept):
        counts.succeeded += 1
    elif isinstance(outcome, Failure) and outcome.counts:
        counts.failed += 1
        counts.dead += outcome.dead
    else:
        return
    counts.seconds += seconds


class BatchRunner:
    """Runs the batches of one worker's claim loops.

    :param runner: runs one attempt.
    :param leases: the worker's lease keeper (which knows its stop deadline).
    :param parts: the app's queue storage and task definitions (for the
        pool's size).
    :param concurrency: the worker's claim loops (for the pool's size).
    """

    def __init__(
        self,
        runner: TaskRunner,
        leases: Leases,
        parts: AppParts,
        concurrency: int,
    ) -> None:
        self._runner = runner
        self.leases = leases
        self.parts = parts
        self.concurrency = concurrency
        self._pool: TaskPool | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Let the pool's idle threads end."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def run(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        tasks: Sequence[ClaimedTask],
        outcomes: Outcomes,
    ) -> Counts:
        """Run ``tasks`` (all of ``definition``), add their outcomes to
        ``outcomes`` and return their counts for the stats."""
        # This thread may run the tasks itself unless one is a sync function
        # with a timeout, which only a pool thread can be left running. The
        # watchdog then extends the leases and hands the tasks back after the
        # grace period, as this thread cannot while it runs one.
        helps = definition.is_async or definition.options.timeout is None
        inline = len(tasks) == 1 and helps
        held = self.leases.hold(
            tasks, extendable=self._extendable(definition), inline=helps
        )
        counts = Counts()
        try:
            if inline:
                # A batch of one runs on this thread: handing it to a pool thread
                # and back would cost more than a no-op task. The watchdog extends
                # its lease and hands it back after the grace period. (A sync task
                # with a timeout needs the pool: only there can it be left behind.)
                outcome, seconds = self._runner.timed(definition, tasks[0])
                collect(outcomes, tasks[0], outcome)
                count(counts, outcome, seconds)
            else:
                self._on_pool(definition, tasks, outcomes, held, counts, helps)
        finally:
            self.leases.drop(held)
        return counts

    def _extendable(self, definition: TaskDefinition[t.Any, t.Any]) -> bool:
        return not (
            definition.options.atomic and self.parts.store.backend.write_locks_database
        )

    def _on_pool(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        tasks: Sequence[ClaimedTask],
        outcomes: Outcomes,
        held: Held,
        counts: Counts,
        helps: bool,
    ) -> None:
        batch = self._start_batch([(definition, task) for task in tasks], helps)
        if helps:
            # Tasks that end at once then need no thread switch each; while
            # one here blocks, the pool's threads start the rest.
            batch.run_pending()
        # A coroutine's timeout is enforced on the event loop (it is cancelled);
        # a sync function's here, since its thread cannot be stopped.
        limit = definition.options.timeout
        timeout_at = (
            None if limit is None or definition.is_async else time.monotonic() + limit
        )
        while True:
            # Short waits: stop() may move the deadline earlier at any time.
            if batch.wait(STOP_CHECK_INTERVAL):
                for i in range(len(tasks)):
                    self._collect(outcomes, counts, tasks[i], batch.result(i))
                return
            now = time.monotonic()
            stop_at = self.leases.deadline()
            timed_out = timeout_at is not None and now >= timeout_at
            if not timed_out and (stop_at is None or now < stop_at):
                continue
            # Record what finished; what runs on is failed or handed back.
            finished = batch.finished()
            for i in finished:
                self._collect(outcomes, counts, tasks[i], batch.result(i))
            self.leases.release(held, [tasks[i] for i in finished])
            running = [task for i, task in enumerate(tasks) if i not in finished]
            if timed_out:
                self.leases.release(held, running)
                for failure in self._time_out(definition, running, outcomes):
                    count(counts, failure, limit or 0.0)
            else:
                self.leases.hand_back(held)
            return

    @staticmethod
    def _collect(
        outcomes: Outcomes,
        counts: Counts,
        task: ClaimedTask,
        timed: tuple[Outcome, float],
    ) -> None:
        outcome, seconds = timed
        collect(outcomes, task, outcome)
        count(counts, outcome, seconds)

    def _start_batch(
        self,
        calls: list[tuple[TaskDefinition[t.Any, t.Any], ClaimedTask]],
        helped: bool,
    ) -> Batch[tuple[Outcome, float]]:
        # Under the lock: a timed-out batch replaces the pool, and a batch must
        # never be queued on one that was just shut down.
        with self._lock:
            if self._pool is None:
                biggest = max(
                    (d.options.batch_size for d in self.parts.registry), default=1
                )
                self._pool = TaskPool(
                    min(256, biggest * self.concurrency), "plainqueue-task"
                )
            return self._pool.run_batch(self._runner.timed, calls, helped=helped)

    def _time_out(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        tasks: Sequence[ClaimedTask],
        outcomes: Outcomes,
    ) -> list[Failure]:
        failures, written = self._runner.time_out(definition, tasks)
        if not written:
            # Written with this loop's next claim, which writes outcomes before
            # it hands back any expired lease.
            outcomes.failed.extend(failures)
        # The stuck threads keep their pool slots: later batches get a new pool.
        with self._lock:
            stuck, self._pool = self._pool, None
        if stuck is not None:
            stuck.shutdown()
        return failures
