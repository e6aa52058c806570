"""What a failed attempt becomes: its log line, the task's failure callback,
the signals, and the :class:`~.claims.Failure` to record (retried after its
back-off, or dead)."""

from __future__ import annotations

import datetime
import logging
import typing as t
from collections.abc import Callable

from . import current
from . import signals
from .claims import ClaimedTask
from .claims import Failure
from .current import running
from .current import TaskContext
from .exceptions import Retry
from .outcomes import format_error
from .outcomes import storable
from .progress import ProgressWriter
from .retry import is_dead
from .retry import retry_delay

if t.TYPE_CHECKING:
    from .store import Store
    from .tasks import TaskDefinition

logger = logging.getLogger("flask_plainqueue.worker")


class FailedAttempts:
    """The failure path of :class:`~.runner.TaskRunner`, mixed into it."""

    store: Store
    id: str
    _now: Callable[[], datetime.datetime]

    if t.TYPE_CHECKING:
        # Provided by TaskRunner.
        def _interrupted(self, exc: BaseException) -> None: ...

        def _send(self, signal: t.Any, **kwargs: t.Any) -> None: ...

    def _unrecorded(
        self,
        definition: TaskDefinition[t.Any, t.Any],
        task: ClaimedTask,
        exc: BaseException,
    ) -> Failure:
        """The outcome of an attempt whose own outcome could not be worked out:
        a failed attempt, dead once out of retries, with the error that got in
        the way."""
        logger.critical(
            "Task %s (%s): its outcome could not be recorded (%s: %s); it counts as"
            " a failed attempt.",
            task.id,
            task.name,
            type(exc).__name__,
            exc,
            extra={"task_id": task.id, "task": task.name},
        )
        try:
            options = definition.options
            dead = is_dead(task.failed_nr + 1, options.max_retries)
            delay = min(options.retry_interval, 3600.0)
        except BaseException:
            dead, delay = True, 0.0
        error = storable(
            f"The outcome of this attempt could not be recorded:\n{format_error(exc)}"
        )
        run_at = self._now() + datetime.timedelta(seconds=delay)
        return Failure(task.id, task.attempts, error, run_at, dead)

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
        return self._failure(task, exc, delay, dead=False, counts=False)

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
        # An interrupt (KeyboardInterrupt, SystemExit) says nothing about the
        # task: it is retried whatever retry_on says.
        retryable = isinstance(exc, options.retry_on) or not isinstance(exc, Exception)
        dead = not retryable or is_dead(failed_nr, options.max_retries)
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
            context = current.get()
            if context is None or context.id != task.id:
                # A timeout recorded from the batch's thread.
                writer = ProgressWriter(self.store, self.id, task, deferred=True)
                writer.close()
                context = TaskContext(task.id, task.name, task.attempts, lambda: writer)
            context.will_retry = not dead
            try:
                with running(context):
                    definition.failure(data, exc)
            except BaseException as callback_exc:
                self._interrupted(callback_exc)
                logger.exception(
                    "The failure callback of task %s (%s) raised; ignored.",
                    task.id,
                    task.name,
                    extra=extra,
                )
        kwargs = {"task_id": task.id, "task": task.name, "duration": duration}
        self._send(signals.task_failed, exception=exc, **kwargs)
        if dead:
            self._send(signals.task_dead, exception=exc, **kwargs)
        return self._failure(task, exc, delay, dead=dead)

    def _failure(
        self,
        task: ClaimedTask,
        exc: BaseException,
        delay: float,
        *,
        dead: bool,
        counts: bool = True,
    ) -> Failure:
        """The failed attempt to record: due again ``delay`` seconds from now."""
        run_at = self._now() + datetime.timedelta(seconds=delay)
        return Failure(task.id, task.attempts, format_error(exc), run_at, dead, counts)
