"""Running one claimed task: in a fresh app context, with its callbacks and
timeout, turned into an outcome for the worker to record."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
import traceback
import typing as t
from collections.abc import Callable
from collections.abc import Sequence

from . import signals
from .exceptions import Retry
from .exceptions import TaskDataError
from .retry import is_dead
from .retry import retry_delay
from .storage import ClaimedTask
from .storage import Failure
from .storage import Outcomes
from .storage import Storage

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from .tasks import TaskDefinition

logger = logging.getLogger("flask_plainqueue.worker")

#: The task succeeded; its row is deleted with the batch's next write.
COMPLETED = "completed"
#: The outcome is already written (or deliberately dropped).
SETTLED = "settled"
Outcome = str | Failure


def format_error(exc: BaseException) -> str:
    """The error's type, message and traceback, as stored in ``failed_error``."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def collect(outcomes: Outcomes, task: ClaimedTask, outcome: Outcome) -> None:
    """Add an attempt's outcome to those the worker writes next."""
    if outcome == COMPLETED:
        outcomes.completed.append((task.id, task.attempts))
    elif isinstance(outcome, Failure):
        outcomes.failed.append(outcome)


class TaskRunner:
    """Runs claimed tasks for one worker.

    :param app: the app whose context each attempt runs in.
    :param db: its Flask-SQLAlchemy instance (the task's ``db.session``).
    :param storage: writes the success transaction and timed-out failures.
    :param worker_id: the lease owner the worker claims as.
    :param now: the worker's clock.
    """

    def __init__(
        self,
        app: Flask,
        db: SQLAlchemy,
        storage: Storage,
        worker_id: str,
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.app = app
        self.db = db
        self.storage = storage
        self.id = worker_id
        self._now = now
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._timed_out: set[tuple[int, int]] = set()

    def close(self) -> None:
        """Stop the event loop of async tasks."""
        loop, self._loop = self._loop, None
        if loop is not None:
            # Cancel what still runs (past the grace period) and let it unwind
            # before the loop stops, instead of destroying pending tasks.
            asyncio.run_coroutine_threadsafe(_cancel_all_and_stop(), loop)

    def time_out(
        self, definition: TaskDefinition[t.Any, t.Any], tasks: Sequence[ClaimedTask]
    ) -> None:
        """Fail sync tasks that ran past their timeout and give up their leases now;
        their threads run on, and whatever they return later is discarded."""
        outcomes = Outcomes()
        limit = t.cast(float, definition.options.timeout)
        with self.app.app_context():
            for task in tasks:
                self._timed_out.add((task.id, task.attempts))
                exc = TimeoutError(
                    f"task {task.name!r} ran past its timeout of {limit}s"
                )
                try:
                    data = _decode(task)
                except TaskDataError:
                    data = None
                outcomes.failed.append(self._failed(definition, task, data, exc, limit))
        try:
            self.storage.settle(self.id, outcomes, self._now())
        except Exception:
            logger.exception("Worker %s: could not record timed-out tasks", self.id)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_run_loop,
                    args=(loop,),
                    name="plainqueue-asyncio",
                    daemon=True,
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def attempt(
        self, definition: TaskDefinition[t.Any, t.Any], task: ClaimedTask
    ) -> Outcome:
        """Run one claimed task in a fresh app context; return its outcome."""
        extra = {"task_id": task.id, "task": task.name}
        with self.app.app_context():
            try:
                data = _decode(task)
            except TaskDataError as exc:
                logger.error("Task %s (%s): %s", task.id, task.name, exc, extra=extra)
                # It is dead without running: receivers hear of it like any death.
                for signal in (signals.task_failed, signals.task_dead):
                    signals.send(
                        signal,
                        self.app,
                        task_id=task.id,
                        task=task.name,
                        duration=0.0,
                        exception=exc,
                    )
                return Failure(
                    task.id, task.attempts, format_error(exc), self._now(), True
                )
            signals.send(
                signals.task_started, self.app, task_id=task.id, task=task.name
            )
            if logger.isEnabledFor(logging.INFO):
                logger.info("Task %s (%s) started", task.id, task.name, extra=extra)
            atomic = definition.options.atomic
            session = self.db.session() if atomic else None
            start = time.perf_counter()
            try:
                if session is not None:
                    # The task's writes, the success callback's and the row's
                    # removal commit in this one transaction, or none of them do.
                    self.storage.begin_session_write(session)
                self._call(definition, data)
            except BaseException as exc:
                duration = time.perf_counter() - start
                if session is not None:
                    session.rollback()
                if self._discard_if_timed_out(task):
                    return SETTLED
                if isinstance(exc, Retry):
                    return self._retry_requested(definition, task, exc, duration)
                return self._failed(definition, task, data, exc, duration)
            duration = time.perf_counter() - start
            if self._discard_if_timed_out(task):
                if session is not None:
                    session.rollback()
                return SETTLED
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "Task %s (%s) succeeded in %.3fs",
                    task.id,
                    task.name,
                    duration,
                    extra=extra,
                )
            signals.send(
                signals.task_succeeded,
                self.app,
                task_id=task.id,
                task=task.name,
                duration=duration,
            )
            if definition.success is None and not atomic:
                return COMPLETED
            return self._commit_success(definition, task, data, duration)

    def _call(self, definition: TaskDefinition[t.Any, t.Any], data: t.Any) -> None:
        args = (data,) if definition.takes_data else ()
        if not definition.is_async:
            definition.func(*args)
            return
        loop = self._get_loop()
        coro = self._in_context(definition, args)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except BaseException:
            coro.close()  # never scheduled (the loop is closing): no warning
            raise
        future.result()

    async def _in_context(
        self, definition: TaskDefinition[t.Any, t.Any], args: tuple[t.Any, ...]
    ) -> t.Any:
        # The coroutine runs on the loop thread, so it needs its own app context.
        with self.app.app_context():
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
        key = (task.id, task.attempts)
        if key not in self._timed_out:
            return False
        self._timed_out.discard(key)
        logger.warning(
            "Task %s (%s) finished after its timeout; its result is discarded (the"
            " timeout was recorded as its failure).",
            task.id,
            task.name,
            extra={"task_id": task.id, "task": task.name},
        )
        return True

    def _commit_success(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        data: t.Any,
        duration: float,
    ) -> Outcome:
        """Run the success callback; its writes (and an atomic task's) and the
        row's deletion commit in one transaction through the app's session."""
        session = self.db.session()
        atomic = definition.options.atomic
        extra = {"task_id": task.id, "task": task.name}
        try:
            if not atomic:
                self.storage.begin_session_write(session)
            if definition.success is not None:
                definition.success(data)
            held = self.storage.complete_in_session(session, self.id, task)
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
            return SETTLED
        except Exception as exc:
            session.rollback()
            if atomic:
                # Nothing of the task was committed, so it is a failed attempt.
                return self._failed(definition, task, data, exc, duration)
            logger.exception(
                "The success callback of task %s (%s) raised; the task itself"
                " succeeded and is removed.",
                task.id,
                task.name,
                extra=extra,
            )
            return COMPLETED

    def _retry_requested(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        exc: Retry,
        duration: float,
    ) -> Failure:
        delay = definition.options.retry_interval if exc.delay is None else exc.delay
        logger.info(
            "Task %s (%s) asked to be retried in %.3fs",
            task.id,
            task.name,
            delay,
            extra={"task_id": task.id, "task": task.name},
        )
        now = self._now()
        return Failure(
            task.id,
            task.attempts,
            format_error(exc),
            now + datetime.timedelta(seconds=delay),
            dead=False,
            counts=False,
        )

    def _failed(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        data: t.Any,
        exc: BaseException,
        duration: float,
    ) -> Failure:
        options = definition.options
        failed_nr = task.failed_nr + 1
        retryable = isinstance(exc, options.retry_on)
        dead = not retryable or is_dead(failed_nr, options.max_retries)
        now = self._now()
        delay = retry_delay(
            failed_nr,
            interval=options.retry_interval,
            backoff=options.retry_backoff,
            jitter=options.retry_jitter,
            max_delay=options.retry_max_delay,
        )
        extra = {"task_id": task.id, "task": task.name}
        logger.error(
            "Task %s (%s) failed in %.3fs (attempt %d, %s): %s: %s",
            task.id,
            task.name,
            duration,
            failed_nr,
            "dead" if dead else f"retry in {delay:.3f}s",
            type(exc).__name__,
            exc,
            extra=extra,
        )
        if definition.failure is not None:
            try:
                definition.failure(data, exc)
            except Exception:
                logger.exception(
                    "The failure callback of task %s (%s) raised; ignored.",
                    task.id,
                    task.name,
                    extra=extra,
                )
        kwargs = {"task_id": task.id, "task": task.name, "duration": duration}
        signals.send(signals.task_failed, self.app, exception=exc, **kwargs)
        if dead:
            signals.send(signals.task_dead, self.app, exception=exc, **kwargs)
        return Failure(
            task.id,
            task.attempts,
            format_error(exc),
            now + datetime.timedelta(seconds=delay),
            dead=dead,
        )


async def _cancel_all_and_stop() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    asyncio.get_running_loop().stop()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    # Closing here, once ``close()`` has stopped the loop, releases the loop's
    # self-pipe sockets; each drain() would otherwise leak two file descriptors.
    try:
        loop.run_forever()
    finally:
        loop.close()


def _decode(task: ClaimedTask) -> t.Any:
    if task.data is None:
        return None
    try:
        return json.loads(task.data)
    except ValueError as exc:
        raise TaskDataError(
            f"Task {task.id} ({task.name}) has data that is not valid JSON, so it"
            f" cannot run: {exc}. It is kept as dead for inspection."
        ) from exc
