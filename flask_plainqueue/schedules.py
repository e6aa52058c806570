"""When periodic tasks are due: cron expressions and fixed intervals (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
import zoneinfo

from .clock import UTC
from .exceptions import ConfigurationError
from .exceptions import ScheduleError
from .validate import MAX_SECONDS
from .validate import seconds

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_2000 = datetime.datetime(2000, 1, 1, tzinfo=UTC)
#: The shortest interval of an ``every=`` schedule.
MIN_EVERY = datetime.timedelta(seconds=1)
#: How far croniter looks for the next tick before giving up.
MAX_YEARS_BETWEEN_TICKS = 10


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The ticks of a periodic task: a cron expression (in ``tz``, UTC by
    default) or a fixed interval counted from the Unix epoch, so every process
    computes the same ticks without talking to the others.

    :raises ConfigurationError: a bad cron expression, a non-positive interval,
        an unknown time zone, or both or neither of ``cron`` and ``every``.
    """

    cron: str | None = None
    every: datetime.timedelta | None = None
    tz: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(
                "@queue.periodic needs exactly one of cron='*/5 * * * *' or"
                " every=timedelta(...)."
            )
        if self.every is not None:
            if not isinstance(self.every, datetime.timedelta):
                raise ConfigurationError(
                    f"every must be a timedelta, got {self.every!r}."
                )
            seconds(
                "every",
                self.every,
                error=ConfigurationError,
                positive=True,
                maximum=MAX_SECONDS,
            )
            if self.every < MIN_EVERY:
                raise ConfigurationError(
                    f"every must be at least {MIN_EVERY}, got {self.every!r}."
                )
        if self.tz is not None:
            if not isinstance(self.tz, str):
                raise ConfigurationError(
                    f"tz must be the name of a time zone such as 'Europe/Paris',"
                    f" got {self.tz!r}."
                )
            try:
                zoneinfo.ZoneInfo(self.tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ConfigurationError(
                    f"tz={self.tz!r} is not a known time zone."
                ) from exc
        if self.cron is not None:
            croniter = _croniter()
            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise ConfigurationError(
                    f"cron={self.cron!r} is not a valid cron expression (croniter"
                    " syntax, e.g. '*/5 * * * *')."
                )
            # croniter accepts expressions that never match (February 30th);
            # finding the next two ticks within a bounded search refuses them
            # here instead of at the worker's first tick.
            try:
                first = self.next(_EPOCH_2000)
                self.next(first)
            except ScheduleError as exc:
                raise ConfigurationError(
                    f"cron={self.cron!r} never matches (no tick within"
                    f" {MAX_YEARS_BETWEEN_TICKS} years); check the day and month."
                ) from exc

    def latest(self, now: datetime.datetime) -> datetime.datetime:
        """The last tick at or before ``now`` (UTC)."""
        if self.every is not None:
            step = self.every.total_seconds()
            n = (now - _EPOCH).total_seconds() // step
            return _EPOCH + datetime.timedelta(seconds=n * step)
        local = now.astimezone(self._zone())
        # croniter's get_prev is strictly before its start, so start just after now.
        start = local + datetime.timedelta(microseconds=1)
        return self._cron_tick(start, prev=True)

    def next(self, now: datetime.datetime) -> datetime.datetime:
        """The first tick after ``now`` (UTC)."""
        if self.every is not None:
            return self.latest(now) + self.every
        return self._cron_tick(now.astimezone(self._zone()), prev=False)

    def _cron_tick(self, start: datetime.datetime, *, prev: bool) -> datetime.datetime:
        croniter = _croniter()
        try:
            it = croniter(
                self.cron, start, max_years_between_matches=MAX_YEARS_BETWEEN_TICKS
            )
            tick = (
                it.get_prev(datetime.datetime)
                if prev
                else it.get_next(datetime.datetime)
            )
        except (ValueError, OverflowError) as exc:  # croniter's errors are ValueErrors
            raise ScheduleError(f"no tick of cron {self.cron!r} near {start}") from exc
        return t.cast(datetime.datetime, tick).astimezone(UTC)

    def _zone(self) -> datetime.tzinfo:
        return UTC if self.tz is None else zoneinfo.ZoneInfo(self.tz)

    def __str__(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r}" + (f" ({self.tz})" if self.tz else "")
        return f"every {self.every}"


def _croniter() -> t.Any:
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "cron schedules need croniter: pip install 'flask-plainqueue[cron]'."
        ) from exc
    return croniter
