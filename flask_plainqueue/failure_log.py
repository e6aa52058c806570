"""Failures that repeat while something outside the worker is wrong (a
database that is away, a full disk): the first is logged with its traceback,
then one line at most once a minute, and the recovery once. A worker tries its
claims, lease extensions, stats, heartbeats and reads of the pauses again every
few seconds; a line each time would bury everything else in the log."""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections.abc import Callable

#: While a failure repeats, how often it is logged again (seconds).
FAILURE_LOG_INTERVAL = 60.0


class FailureLog:
    """How one kind of repeating failure is reported. The messages take the
    ``owner`` (the worker's id) first; ``still`` then the seconds since the
    first failure and the error, ``works`` the seconds of failures.

    :param logger: where the records go.
    :param owner: names the worker in every record.
    :param failed: the first failure's message, logged with its traceback
        (``"Worker %s: claiming failed; will retry"``).
    :param still: a repeat's (``"Worker %s: claiming still fails after
        %.0fs: %s"``).
    :param works: the recovery's (``"Worker %s: claiming works again after
        %.1fs of failures"``).
    :param interval: how often a repeat is logged (seconds).
    :param clock: a monotonic clock (seconds).
    """

    def __init__(
        self,
        logger: logging.Logger,
        owner: str,
        *,
        failed: str,
        still: str,
        works: str,
        interval: float = FAILURE_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._owner = owner
        self._failed = failed
        self._still = still
        self._works = works
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._logged = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        """Report that an attempt raised ``exc``."""
        now = self._clock()
        with self._lock:
            first = self._since is None
            if first:
                self._since = self._logged = now
            due = now - self._logged >= self._interval
            if due:
                self._logged = now
            since = t.cast(float, self._since)
        if first:
            self._logger.error(self._failed, self._owner, exc_info=exc)
        else:
            # Between the lines a minute apart, only at DEBUG.
            level = logging.ERROR if due else logging.DEBUG
            self._logger.log(level, self._still, self._owner, now - since, exc)

    def succeeded(self) -> None:
        """Report that an attempt worked: the recovery, if it was failing."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            self._logger.warning(self._works, self._owner, self._clock() - since)
