"""The exception tree: every error the queue raises on purpose derives from
:class:`PlainQueueError`."""

from __future__ import annotations

import datetime


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


class Retry(PlainQueueError):
    """Raise inside a task to run it again later without counting a failure.

    :param delay: seconds (or a :class:`~datetime.timedelta`) to wait before the
        next attempt; ``None`` means the task's ``retry_interval``.
    """

    def __init__(
        self,
        delay: float | datetime.timedelta | None = None,
        message: str | None = None,
    ) -> None:
        if isinstance(delay, datetime.timedelta):
            delay = delay.total_seconds()
        if delay is not None and delay < 0:
            raise ValueError(f"Retry(delay=...) must not be negative, got {delay!r}.")
        self.delay: float | None = delay
        super().__init__(message or f"retry requested (delay={delay!r})")
