"""Running one claimed task: in a fresh app context, with its callbacks and
timeout, turned into an outcome for the worker to record."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

from . import current
from . import signals
from .attempt_failures import FailedAttempts
from .claims import ClaimedTask
from .claims import Failure
from .claims import Kept
from .claims import Outcomes
from .current import running
from .current import TaskContext
from .enqueue import JOIN_SESSION
from .eventloop import EventLoop
from .exceptions import Retry
from .exceptions import TaskDataError
from .outcomes import format_error as format_error
from .outcomes import kept
from .outcomes import MAX_ERROR_LENGTH as MAX_ERROR_LENGTH
from .outcomes import storable as storable
from .progress import ProgressWriter

if t.TYPE_CHECKING:
    from flask import Flask

    from .store import AppParts
    from .tasks import TaskDefinition

logger = logging.getLogger("flask_plainqueue.worker")

#: The task succeeded; its row is deleted with the batch's next write.
COMPLETED = "completed"
#: The outcome is already written (or deliberately dropped).
SETTLED = "settled"
#: The task succeeded and its success transaction committed.
COMMITTED = "committed"
Outcome = str | Failure | Kept


class TaskRunner(FailedAttempts):
    """Runs claimed tasks for one worker.

    :param app: the app whose context each attempt runs in.
    :param parts: the app's Flask-SQLAlchemy instance (the task's
        ``db.session``) and queue storage (which writes the success
        transaction and timed-out failures).
    :param worker_id: the lease owner the worker claims as.
    :param now: the worker's clock.
    """

    def __init__(
        self,
        app: Flask,
        parts: AppParts,
        worker_id: str,
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.app = app
        self.db = parts.db
        self.store = parts.store
        self.config = parts.config
        self.id = worker_id
        self._now = now
        self._lock = threading.Lock()
        self._loop = EventLoop()
        # (id, attempt) of timed-out tasks still running: whether the timeout
        # was recorded.
        self._timed_out: dict[tuple[int, int], bool] = {}
        self._interrupt: BaseException | None = None

    def close(self) -> None:
        """Stop the event loop of async tasks."""
        self._loop.close()

    def time_out(
        self, definition: TaskDefinition[t.Any, t.Any], tasks: Sequence[ClaimedTask]
    ) -> tuple[list[Failure], bool]:
        """Fail sync tasks that ran past their timeout and give up their leases now;
        their threads run on, and whatever they return later is discarded.
        Returns the failures, and whether they were written: if not, the
        caller writes them with its next claim (the attempt still counts)."""
        outcomes = Outcomes()
        limit = t.cast(float, definition.options.timeout)
        with self.app.app_context():
            for task in tasks:
                self._timed_out[(task.id, task.attempts)] = False
                exc = TimeoutError(
                    f"task {task.name!r} ran past its timeout of {limit}s"
                )
                try:
                    data = _decode(task)
                except TaskDataError:
                    data = None
                outcomes.failed.append(self._failed(definition, task, data, exc, limit))
        failed = list(outcomes.failed)  # settle() empties outcomes
        written = True
        try:
            self.store.settle(self.id, outcomes, self._now())
        except Exception:
            written = False
            logger.exception(
                "Worker %s: could not record timed-out tasks now; they are"
                " recorded with the next claim",
                self.id,
            )
        # Recorded now or with the next claim, before any expired lease is
        # handed back: whatever the thread returns later is discarded.
        for task in tasks:
            self._timed_out[(task.id, task.attempts)] = True
        return failed, written

    def take_interrupt(self) -> BaseException | None:
        """The first ``KeyboardInterrupt`` or ``SystemExit`` a task, a callback
        or a receiver raised since the last call (each was handled like an
        exception where it was raised): ``drain()`` re-raises it, a worker
        only logs it."""
        with self._lock:
            exc, self._interrupt = self._interrupt, None
        return exc

    def take_interrupt_pending(self) -> bool:
        """Whether :meth:`take_interrupt` has something to give."""
        return self._interrupt is not None

    def _interrupted(self, exc: BaseException) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            with self._lock:
                if self._interrupt is None:
                    self._interrupt = exc

    def _send(self, signal: t.Any, **kwargs: t.Any) -> None:
        if not signal.receivers:  # the common case, on every attempt
            return
        try:
            signals.send(signal, self.app, **kwargs)
        except BaseException as exc:  # logged by send(); never ends the worker
            self._interrupted(exc)

    def attempt(
        self, definition: TaskDefinition[t.Any, t.Any], task: ClaimedTask
    ) -> Outcome:
        """Run one claimed task in a fresh app context; return its outcome.

        Never raises: whatever goes wrong, even while working out the outcome,
        the attempt counts (see :meth:`_unrecorded`).
        """
        try:
            return self._attempt(definition, task)
        except BaseException as exc:
            self._interrupted(exc)
            return self._unrecorded(definition, task, exc)

    def timed(
        self, definition: TaskDefinition[t.Any, t.Any], task: ClaimedTask
    ) -> tuple[Outcome, float]:
        """:meth:`attempt`, and how long it took (seconds)."""
        start = time.perf_counter()
        outcome = self.attempt(definition, task)
        return outcome, time.perf_counter() - start

    def _attempt(
        self, definition: TaskDefinition[t.Any, t.Any], task: ClaimedTask
    ) -> Outcome:
        extra = {"task_id": task.id, "task": task.name}
        with self.app.app_context():
            try:
                data = _decode(task)
            except TaskDataError as exc:
                logger.error("Task %s (%s): %s", task.id, task.name, exc, extra=extra)
                # It is dead without running: receivers hear of it like any death.
                for signal in (signals.task_failed, signals.task_dead):
                    self._send(
                        signal,
                        task_id=task.id,
                        task=task.name,
                        duration=0.0,
                        exception=exc,
                    )
                return Failure(
                    task.id, task.attempts, format_error(exc), self._now(), True
                )
            deferred = (
                definition.options.atomic and self.store.backend.write_locks_database
            )
            context = TaskContext(
                task.id,
                task.name,
                task.attempts,
                lambda: ProgressWriter(self.store, self.id, task, deferred=deferred),
            )
            token = current.enter(context)
            try:
                return self._run(definition, task, data, context)
            finally:
                current.leave(token)
                if context.sink is not None:
                    context.sink.close()

    def _run(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        data: t.Any,
        context: TaskContext,
    ) -> Outcome:
        extra = {"task_id": task.id, "task": task.name}
        self._send(signals.task_started, task_id=task.id, task=task.name)
        # DEBUG and guarded: the default level (INFO) must not pay for a
        # record per task.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Task %s (%s) started", task.id, task.name, extra=extra)
        atomic = definition.options.atomic
        session = self.db.session() if atomic else None
        start = time.perf_counter()
        try:
            if session is not None:
                # The task's writes, the success callback's and the row's
                # removal commit in this one transaction, or none of them do;
                # a perform() inside joins it.
                self.store.begin_session_write(session)
                session.info[JOIN_SESSION] = True
            value = self._call(definition, data, context)
        except BaseException as exc:
            duration = time.perf_counter() - start
            self._interrupted(exc)
            if session is not None:
                session.rollback()
            if self._discard_if_timed_out(task):
                return SETTLED
            if context.sink is not None:
                # The last progress is written before the failure is.
                context.sink.flush_and_close()
            if isinstance(exc, Retry):
                return self._retry_requested(definition, task, exc, duration)
            return self._failed(definition, task, data, exc, duration)
        duration = time.perf_counter() - start
        if self._discard_if_timed_out(task):
            if session is not None:
                session.rollback()
            return SETTLED
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Task %s (%s) succeeded in %.3fs",
                task.id,
                task.name,
                duration,
                extra=extra,
            )
        self._send(
            signals.task_succeeded,
            task_id=task.id,
            task=task.name,
            duration=duration,
        )
        keep = definition.options.keep_succeeded
        keep = self.config.keep_succeeded if keep is None else keep
        # Kept: the held progress is written with the outcome; not kept,
        # the row is deleted and its progress with it.
        held = None if context.sink is None else context.sink.close()
        outcome: Outcome = COMPLETED
        if keep:
            outcome = kept(task, value, keep=keep, now=self._now(), progress=held)
        if definition.success is None and not atomic:
            return outcome
        return self._commit_success(definition, task, data, duration, outcome)

    def _call(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        data: t.Any,
        context: TaskContext,
    ) -> t.Any:
        args = (data,) if definition.takes_data else ()
        if not definition.is_async:
            return definition.func(*args)
        loop = self._loop.get()
        coro = self._in_context(definition, args, context)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()  # never scheduled (the loop is closing): no warning
            raise
        return future.result()

    async def _in_context(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        args: tuple[t.Any, ...],
        context: TaskContext,
    ) -> t.Any:
        # The coroutine runs on the loop thread, in an asyncio task with a
        # context of its own: it needs its app context and current_task there.
        with self.app.app_context(), running(context):
            timeout = definition.options.timeout
            if timeout is None:
                return await definition.func(*args)
            # wait_for cancels the coroutine and waits for it to unwind, on the loop.
            try:
                return await asyncio.wait_for(definition.func(*args), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(
                    f"task {definition.name!r} ran past its timeout of {timeout}s and"
                    " was cancelled"
                ) from None

    def _discard_if_timed_out(self, task: ClaimedTask) -> bool:
        if not self._timed_out:  # the common case, on every attempt
            return False
        recorded = self._timed_out.pop((task.id, task.attempts), None)
        if recorded is None:
            return False
        logger.warning(
            "Task %s (%s) finished after its timeout; its result is discarded (%s).",
            task.id,
            task.name,
            "the timeout was recorded as its failure"
            if recorded
            else "the timeout could not be recorded; the task runs again when its"
            " lease expires",
            extra={"task_id": task.id, "task": task.name},
        )
        return True

    def _commit_success(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        data: t.Any,
        duration: float,
        outcome: Outcome,
    ) -> Outcome:
        """Run the success callback; its writes (and an atomic task's) and the
        row's deletion (or, kept, its result) commit in one transaction through
        the app's session."""
        session = self.db.session()
        atomic = definition.options.atomic
        extra = {"task_id": task.id, "task": task.name}
        try:
            if not atomic:
                self.store.begin_session_write(session)
            # A perform() in the callback joins the success transaction.
            session.info[JOIN_SESSION] = True
            if definition.success is not None:
                definition.success(data)
            held = self.store.complete_in_session(
                session, self.id, task, outcome if isinstance(outcome, Kept) else None
            )
            if not held:
                session.rollback()
                logger.warning(
                    "Task %s (%s) finished after its lease was lost; its success"
                    " transaction was rolled back.",
                    task.id,
                    task.name,
                    extra=extra,
                )
                return SETTLED
            session.commit()
            return COMMITTED
        except BaseException as exc:
            self._interrupted(exc)
            session.rollback()
            if atomic:
                # Nothing of the task was committed, so it is a failed attempt.
                return self._failed(definition, task, data, exc, duration)
            logger.exception(
                "The success callback of task %s (%s) raised; the task itself"
                " succeeded.",
                task.id,
                task.name,
                extra=extra,
            )
            return outcome


def _decode(task: ClaimedTask) -> t.Any:
    if task.data is None:
        return None
    try:
        return json.loads(task.data)
    except (ValueError, RecursionError) as exc:
        raise TaskDataError(
            f"Task {task.id} ({task.name}) has data that is not valid JSON, so it"
            f" cannot run: {exc}. It is kept as dead for inspection."
        ) from exc
