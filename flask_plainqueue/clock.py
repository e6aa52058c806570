"""Time: UTC, the current time, and datetimes made timezone-aware."""

from __future__ import annotations

import datetime
from collections.abc import Callable

UTC = datetime.timezone.utc

#: A function returning the current time, timezone-aware UTC.
Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(UTC)


def as_utc(value: datetime.datetime) -> datetime.datetime:
    """``value`` as timezone-aware UTC. A naive value read from the database is
    UTC already (SQLite keeps no offset; the queue writes only UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)
