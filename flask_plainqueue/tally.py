"""A worker's counts of finished attempts per task name and minute, kept in
memory: the claim loops add a batch's counts at once, and the scheduler
thread takes them every :data:`~.scheduler.STATS_FLUSH_INTERVAL` seconds and
adds them to the stats table (:mod:`.history`), so the claim and settle
transactions never write them. A worker that dies loses what it counted
since its last flush."""

from __future__ import annotations

import datetime
import logging
import threading
import typing as t

from . import history
from .history import MinuteRow

if t.TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("flask_plainqueue.worker")

#: The most (minute, name) counts a worker keeps while its flushes fail; past
#: it the oldest minutes are dropped, so a database that stays down cannot
#: fill the worker's memory (a day of one task name is 1,440).
MAX_PENDING = 20_000


class Counts:
    """Finished attempts of one task name (in one batch, or one minute)."""

    __slots__ = ("succeeded", "failed", "dead", "seconds")

    def __init__(self) -> None:
        self.succeeded = 0
        #: Failed attempts, the last one of a dead task included.
        self.failed = 0
        #: Of the failed attempts, those that left their task dead.
        self.dead = 0
        #: The attempts' run time, summed.
        self.seconds = 0.0

    def __bool__(self) -> bool:
        return bool(self.succeeded or self.failed)

    def merge(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.dead += other.dead
        self.seconds += other.seconds


Key = tuple[datetime.datetime, str]
MINUTE = datetime.timedelta(minutes=1)


def minute_of(when: datetime.datetime) -> datetime.datetime:
    """The start of the minute ``when`` falls in."""
    return when.replace(second=0, microsecond=0)


class Tally:
    """The counts a worker has not written yet, shared by its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, Counts] = {}
        self._dropped = 0
        # The minute the last batch finished in: [start, end).
        self._minute: datetime.datetime | None = None
        self._minute_end = datetime.datetime.min

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, when: datetime.datetime, name: str, counts: Counts) -> None:
        """Add a batch's ``counts`` of task ``name``, finished at ``when``
        (``counts`` is kept: the caller must not change it afterwards)."""
        if not counts:
            return
        with self._lock:
            # Most batches finish in the minute of the one before: reuse its
            # start (and its cached hash) instead of computing it again.
            start = self._minute
            if start is None or not start <= when < self._minute_end:
                start = self._minute = minute_of(when)
                self._minute_end = start + MINUTE
            key = (start, name)
            pending = self._counts.get(key)
            if pending is None:
                self._counts[key] = counts
            else:
                pending.merge(counts)

    def take(self) -> dict[Key, Counts]:
        """The counts so far; the tally starts again from zero."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def put_back(self, counts: dict[Key, Counts]) -> None:
        """Keep ``counts`` (taken but not written) for the next flush, the
        newest :data:`MAX_PENDING` minutes of them."""
        with self._lock:
            for key, value in counts.items():
                pending = self._counts.get(key)
                if pending is None:
                    self._counts[key] = value
                else:
                    pending.merge(value)
            excess = len(self._counts) - MAX_PENDING
            if excess > 0:
                for key in sorted(self._counts)[:excess]:
                    del self._counts[key]
                self._dropped += excess

    def flush(self, store: Store) -> int:
        """Add the counts so far to the stats table; return how many rows were
        written. If the write fails the counts are kept for the next flush and
        the error is raised."""
        counts = self.take()
        if not counts:
            return 0
        rows = [
            MinuteRow(minute, name, c.succeeded, c.failed, c.dead, c.seconds)
            for (minute, name), c in sorted(counts.items())
        ]
        try:
            history.add(store, rows)
        except BaseException:
            self.put_back(counts)
            raise
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.warning(
                "%d minute(s) of task counts were dropped while the stats table"
                " could not be written",
                dropped,
            )
        return len(rows)
