"""A task definition's options: the keyword arguments of ``@queue.task`` and
``@queue.periodic``, checked into :class:`TaskOptions`, and the limits on
them."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Callable
from collections.abc import Iterable

from . import validate
from .exceptions import ConfigurationError

SuccessCallback = Callable[[t.Any], object]
FailureCallback = Callable[[t.Any, BaseException], object]

#: The most tasks one claim may take (``batch_size``).
MAX_BATCH_SIZE = 1000
#: The longest task name and queue name (their columns' lengths).
MAX_NAME_LENGTH = 255
MAX_QUEUE_LENGTH = 100


class TaskOptionArgs(t.TypedDict, total=False):
    """The keyword arguments of :meth:`~flask_plainqueue.PlainQueue.task` and
    :meth:`~flask_plainqueue.PlainQueue.periodic`; each is described on
    :class:`TaskOptions`."""

    name: str | None
    success: SuccessCallback | None
    failure: FailureCallback | None
    batch_size: int
    max_retries: int
    retry_interval: float | datetime.timedelta
    retry_backoff: float
    retry_jitter: float
    retry_max_delay: float | datetime.timedelta
    retry_on: type[BaseException] | Iterable[type[BaseException]]
    poll_interval: float | datetime.timedelta | None
    queue: str
    priority: int
    timeout: float | datetime.timedelta | None
    atomic: bool
    keep_succeeded: float | datetime.timedelta | None


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """How the worker runs one task definition: the options of
    :meth:`~flask_plainqueue.PlainQueue.task`, checked.

    :raises ConfigurationError: an option has a wrong type or is out of range;
        the message names it and what is allowed.
    """

    #: How many due tasks of this name a worker claims at once and runs
    #: concurrently (1 to 1,000).
    batch_size: int = 1
    #: Failures allowed before the task is kept as dead; it runs at most
    #: ``max_retries + 1`` times.
    max_retries: int = 5
    #: Seconds before the first retry.
    retry_interval: float = 3.0
    #: The factor the interval grows by with each failure (1 to 100).
    retry_backoff: float = 1.0
    #: Up to this fraction is added to each wait at random (0 to 10).
    retry_jitter: float = 0.0
    #: The longest wait between attempts (seconds).
    retry_max_delay: float = 3600.0
    #: Exception classes that are retried; others make the task dead at once.
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    #: How often an idle worker polls for this task; default
    #: ``PLAINQUEUE_POLL_INTERVAL``.
    poll_interval: float | None = None
    #: The queue name, for ``flask queue work --queue``.
    queue: str = "default"
    #: Tasks of higher priority are claimed first.
    priority: int = 0
    #: Seconds an attempt may run before it is failed with a ``TimeoutError``
    #: (a coroutine is cancelled; a sync function's thread runs on and its
    #: result is discarded).
    timeout: float | None = None
    #: The function's ``db.session`` writes, the success callback's and the
    #: row's removal commit in one transaction, or none of them do.
    atomic: bool = False
    #: Seconds a succeeded task is kept, with its return value as its result,
    #: before it is pruned; 0 deletes it at once. Default
    #: ``PLAINQUEUE_KEEP_SUCCEEDED``.
    keep_succeeded: float | None = None

    def __post_init__(self) -> None:
        err = ConfigurationError
        set_ = object.__setattr__
        set_(
            self,
            "batch_size",
            validate.whole(
                "batch_size",
                self.batch_size,
                error=err,
                minimum=1,
                maximum=MAX_BATCH_SIZE,
            ),
        )
        set_(
            self,
            "max_retries",
            validate.whole("max_retries", self.max_retries, error=err, minimum=0),
        )
        set_(self, "priority", validate.whole("priority", self.priority, error=err))
        for key in ("retry_interval", "retry_max_delay"):
            set_(self, key, validate.seconds(key, getattr(self, key), error=err))
        set_(
            self,
            "retry_jitter",
            _number("retry_jitter", self.retry_jitter, 0.0, 10.0),
        )
        set_(
            self,
            "retry_backoff",
            _number("retry_backoff", self.retry_backoff, 1.0, 100.0),
        )
        if self.timeout is not None:
            set_(
                self,
                "timeout",
                validate.seconds("timeout", self.timeout, error=err, positive=True),
            )
        if self.poll_interval is not None:
            set_(
                self,
                "poll_interval",
                validate.seconds(
                    "poll_interval",
                    self.poll_interval,
                    error=err,
                    positive=True,
                    maximum=3600.0,
                ),
            )
        validate.flag("atomic", self.atomic, error=err)
        if self.keep_succeeded is not None:
            set_(
                self,
                "keep_succeeded",
                validate.seconds("keep_succeeded", self.keep_succeeded, error=err),
            )
        validate.text("queue", self.queue, error=err, max_length=MAX_QUEUE_LENGTH)
        retry_on: t.Any = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        try:
            retry_on = tuple(retry_on)
        except TypeError:
            retry_on = None
        if not retry_on or not all(
            isinstance(e, type) and issubclass(e, BaseException) for e in retry_on
        ):
            raise ConfigurationError(
                "retry_on must be an exception class or a tuple of them, got"
                f" {self.retry_on!r}."
            )
        set_(self, "retry_on", retry_on)


def _number(name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not low <= value <= high  # also refuses NaN
    ):
        raise ConfigurationError(
            f"{name} must be a number from {low:g} to {high:g}, got {value!r}."
        )
    return float(value)
