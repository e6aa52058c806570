"""When periodic tasks are due: cron expressions and fixed intervals (no I/O)."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t
import zoneinfo

from .exceptions import ConfigurationError

UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)


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
            if self.every.total_seconds() <= 0:
                raise ConfigurationError(
                    f"every must be longer than zero, got {self.every!r}."
                )
        if self.tz is not None:
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

    def latest(self, now: datetime.datetime) -> datetime.datetime:
        """The last tick at or before ``now`` (UTC)."""
        if self.every is not None:
            step = self.every.total_seconds()
            n = (now - _EPOCH).total_seconds() // step
            return _EPOCH + datetime.timedelta(seconds=n * step)
        local = now.astimezone(self._zone())
        # croniter's get_prev is strictly before its start, so start just after now.
        start = local + datetime.timedelta(microseconds=1)
        tick = _croniter()(self.cron, start).get_prev(datetime.datetime)
        return t.cast(datetime.datetime, tick).astimezone(UTC)

    def next(self, now: datetime.datetime) -> datetime.datetime:
        """The first tick after ``now`` (UTC)."""
        if self.every is not None:
            return self.latest(now) + self.every
        local = now.astimezone(self._zone())
        tick = _croniter()(self.cron, local).get_next(datetime.datetime)
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
