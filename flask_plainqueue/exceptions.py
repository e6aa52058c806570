"""The exception tree: every error the queue raises on purpose derives from
:class:`PlainQueueError`."""

from __future__ import annotations

import datetime

from .validate import seconds


class PlainQueueError(Exception):
    """Base class of every error flask-plainqueue raises on purpose."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(PlainQueueError):
    """A ``PLAINQUEUE_*`` setting or a task option has a value that cannot work."""


class DuplicateTaskName(PlainQueueError):
    """Two task definitions were registered under the same name."""


class UnknownTask(PlainQueueError):
    """No task definition is registered under this name."""


class TaskNotFound(PlainQueueError):
    """No task with this id exists (it finished, was deleted, or never existed)."""


class TaskDataError(PlainQueueError, TypeError):
    """The data given to ``perform`` is not JSON-serialisable.

    It is also a :class:`TypeError`, so ``except TypeError`` keeps working.
    """


class InvalidArgument(PlainQueueError, TypeError, ValueError):
    """An argument of ``perform`` (or of another call) has a type or value that
    cannot work; the message names the argument and what is allowed.

    It is also a :class:`TypeError` and a :class:`ValueError`, the errors
    Python raises for such arguments, so existing ``except`` clauses keep
    working.

    .. versionadded:: 0.1
    """


class UniqueTaskWaiting(PlainQueueError):
    """The task has a ``unique_key`` and another task with that key waits."""


class ScheduleError(PlainQueueError):
    """No tick of a periodic task's schedule could be computed."""


class TransferError(PlainQueueError):
    """An export file that cannot be imported; the message names the line."""


class Retry(PlainQueueError):
    """Raise inside a task to run it again later without counting a failure.

    :param delay: seconds (or a :class:`~datetime.timedelta`) to wait before the
        next attempt; ``None`` means the task's ``retry_interval``.
    :raises InvalidArgument: ``delay`` is not a finite number of seconds within
        100 years.
    """

    def __init__(
        self,
        delay: float | datetime.timedelta | None = None,
        message: str | None = None,
    ) -> None:
        if delay is not None:
            delay = seconds("Retry(delay=...)", delay, error=InvalidArgument)
        self.delay: float | None = delay
        super().__init__(message or f"retry requested (delay={delay!r})")
