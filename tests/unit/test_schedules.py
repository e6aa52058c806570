"""Schedules and the task options checked at decoration: no database, no
subprocess (the database side of scheduling is in
``tests/integration/test_scheduling.py``)."""

from __future__ import annotations

import datetime
import typing as t

import pytest

from flask_plainqueue import ConfigurationError
from flask_plainqueue import PlainQueue
from flask_plainqueue.schedules import Schedule

UTC = datetime.timezone.utc


def _at(hour: int, minute: int, second: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


def test_cron_ticks() -> None:
    s = Schedule(cron="*/5 * * * *")
    assert s.latest(_at(12, 7)) == _at(12, 5)
    assert s.latest(_at(12, 5)) == _at(12, 5)
    assert s.next(_at(12, 7)) == _at(12, 10)


def test_cron_in_a_time_zone() -> None:
    s = Schedule(cron="0 3 * * *", tz="Europe/Berlin")
    assert s.latest(_at(12, 0)) == _at(2, 0)  # 03:00 CET is 02:00 UTC


def test_every_is_aligned_to_the_epoch() -> None:
    s = Schedule(every=datetime.timedelta(seconds=30))
    assert s.latest(_at(12, 7, 44)) == _at(12, 7, 30)
    assert s.next(_at(12, 7, 44)) == _at(12, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cron": "every tuesday"}, "cron"),
        ({"every": datetime.timedelta(0)}, "every"),
        ({"every": 5}, "every"),
        ({}, "exactly one"),
        ({"cron": "* * * * *", "every": datetime.timedelta(seconds=1)}, "exactly one"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "tz"),
    ],
)
def test_bad_schedules_are_errors_at_decoration(
    kwargs: dict[str, t.Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        PlainQueue().periodic(**kwargs)


def test_atomic_async_task_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="atomic"):

        @PlainQueue().task(atomic=True)
        async def nope(data: t.Any) -> None: ...
