"""What a worker's claim loops report while claiming fails: a missing queue
table once, after a grace period; any other failure with its traceback once,
again once a minute, and the recovery once."""

from __future__ import annotations

import logging
import time
import typing as t

from .failure_log import FailureLog

if t.TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("flask_plainqueue.worker")

#: How long a missing queue table is waited for quietly before it is reported:
#: under ``flask run`` the worker starts while the app may still be creating it.
MISSING_TABLE_GRACE = 5.0


class ClaimFailures:
    """The claim failures of one worker (its claim loops share it).

    :param worker_id: names the worker in the log lines.
    :param store: says which errors mean the queue table is missing.
    """

    def __init__(self, worker_id: str, store: Store) -> None:
        self.worker_id = worker_id
        self.store = store
        # A failing claim (e.g. the database restarting) is logged with its
        # traceback once, then once a minute, and its recovery once.
        self._log = FailureLog(
            logger,
            worker_id,
            failed="Worker %s: claiming failed; will retry",
            still="Worker %s: claiming still fails after %.0fs: %s",
            works="Worker %s: claiming works again after %.1fs of failures",
        )
        self._missing_table_since: float | None = None
        self._missing_table_reported = False

    def failed(self, exc: Exception, burst: bool) -> None:
        """Report a claim that raised ``exc`` (at once in a ``burst`` run)."""
        now = time.monotonic()
        if self.store.is_missing_table(exc):
            # A setup step not done yet, not a crash: say so once, without a
            # traceback per poll.
            if self._missing_table_since is None:
                self._missing_table_since = now
            waited = now - self._missing_table_since
            if self._missing_table_reported or (
                waited < MISSING_TABLE_GRACE and not burst
            ):
                return
            self._missing_table_reported = True
            logger.warning(
                "Worker %s: the queue table %r does not exist. Create it with"
                " 'db.create_all()' or your migrations; until then no task can run.",
                self.worker_id,
                self.store.table.name,
            )
            return
        self._log.failed(exc)

    def succeeded(self) -> None:
        """A claim worked: report the recovery if claims had been failing."""
        self._missing_table_since = None
        self._log.succeeded()
