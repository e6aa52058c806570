"""The history of finished attempts as the public API shows it: per task name
and minute, and summed (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class StatsCounts:
    """Finished attempts of one task name (or of all) in one minute or over
    the whole period.

    .. versionadded:: 0.1
    """

    #: The task name; ``None`` for every task together.
    name: str | None
    #: Attempts that succeeded.
    succeeded: int = 0
    #: Attempts that failed, the last one of a dead task included.
    failed: int = 0
    #: Of the failed attempts, those that left their task dead.
    dead: int = 0
    #: The attempts' run time summed (seconds).
    run_seconds: float = 0.0

    @property
    def finished(self) -> int:
        """Attempts that ended, succeeded or failed: the throughput."""
        return self.succeeded + self.failed

    @property
    def mean_seconds(self) -> float | None:
        """The mean run time of an attempt, ``None`` without attempts."""
        return self.run_seconds / self.finished if self.finished else None

    def __add__(self, other: StatsCounts) -> StatsCounts:
        return StatsCounts(
            self.name if self.name == other.name else None,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.dead + other.dead,
            self.run_seconds + other.run_seconds,
        )

    def to_dict(self) -> dict[str, t.Any]:
        """The counts as JSON-ready values."""
        return {
            "name": self.name,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "dead": self.dead,
            "run_seconds": round(self.run_seconds, 6),
        }


@dataclasses.dataclass(frozen=True)
class StatsMinute:
    """The finished attempts of one task name in one minute.

    .. versionadded:: 0.1
    """

    #: The minute's start, UTC.
    minute: datetime.datetime
    counts: StatsCounts


@dataclasses.dataclass(frozen=True)
class Stats:
    """Finished attempts per task name and minute from ``since`` to
    ``until``, as :meth:`~flask_plainqueue.PlainQueue.stats` returns them.

    Workers write their counts every few seconds (see :ref:`history`), so
    the last seconds may be missing.

    .. versionadded:: 0.1
    """

    #: The start of the period: the start of its first minute, UTC.
    since: datetime.datetime
    #: The end of the period (the time of the query), UTC.
    until: datetime.datetime
    #: The minutes with finished attempts, per task name, by minute then
    #: name; minutes without any are left out.
    minutes: tuple[StatsMinute, ...]

    @property
    def period_minutes(self) -> float:
        """The length of the period in minutes (at least one)."""
        return max((self.until - self.since).total_seconds() / 60.0, 1.0)

    @property
    def names(self) -> list[str]:
        """The task names with finished attempts, sorted."""
        return sorted({m.counts.name for m in self.minutes if m.counts.name})

    @property
    def tasks(self) -> list[StatsCounts]:
        """The totals per task name, sorted by name."""
        totals: dict[str, StatsCounts] = {}
        for entry in self.minutes:
            name = t.cast(str, entry.counts.name)
            seen = totals.get(name)
            totals[name] = entry.counts if seen is None else seen + entry.counts
        return [totals[name] for name in sorted(totals)]

    @property
    def total(self) -> StatsCounts:
        """The totals of every task together."""
        return _summed(None, (m.counts for m in self.minutes))

    def rate(self, counts: StatsCounts) -> float:
        """``counts``' finished attempts per minute over the period."""
        return counts.finished / self.period_minutes

    def series(
        self, name: str | None = None, *, step: int = 1
    ) -> list[tuple[datetime.datetime, StatsCounts]]:
        """The counts of task ``name`` (``None``: of every task) for each
        ``step`` minutes of the period, oldest first, empty ones included: what
        a chart shows. Each starts at a multiple of ``step`` minutes since
        midnight UTC (the first may begin before :attr:`since`)."""
        if step < 1:
            raise ValueError(f"step must be 1 minute or more, got {step!r}")
        width = datetime.timedelta(minutes=step)
        midnight = self.since.replace(hour=0, minute=0)
        first = midnight + ((self.since - midnight) // width) * width
        buckets: list[tuple[datetime.datetime, list[StatsCounts]]] = []
        start = first
        while start < self.until:
            buckets.append((start, []))
            start += width
        for entry in self.minutes:
            if name is not None and entry.counts.name != name:
                continue
            index = int((entry.minute - first) // width)
            if 0 <= index < len(buckets):
                buckets[index][1].append(entry.counts)
        return [(start, _summed(name, counts)) for start, counts in buckets]

    def to_dict(self) -> dict[str, t.Any]:
        """The stats as JSON-ready values: the period, the totals (with the
        rate per minute) and the per-minute series."""

        def with_rate(counts: StatsCounts) -> dict[str, t.Any]:
            return {**counts.to_dict(), "per_minute": round(self.rate(counts), 3)}

        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "total": with_rate(self.total),
            "tasks": [with_rate(counts) for counts in self.tasks],
            "minutes": [
                {"minute": m.minute.isoformat(), **m.counts.to_dict()}
                for m in self.minutes
            ],
        }


def _summed(name: str | None, counts: Iterable[StatsCounts]) -> StatsCounts:
    succeeded = failed = dead = 0
    seconds = 0.0
    for c in counts:
        succeeded += c.succeeded
        failed += c.failed
        dead += c.dead
        seconds += c.run_seconds
    return StatsCounts(name, succeeded, failed, dead, seconds)
