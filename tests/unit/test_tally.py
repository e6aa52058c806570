"""The worker's in-memory tally of finished attempts: batches of a minute
add up, taking empties it, and counts put back after a failed write stay
bounded."""

from __future__ import annotations

import datetime
import threading

import pytest

from flask_plainqueue import tally
from flask_plainqueue.batches import count
from flask_plainqueue.claims import Failure
from flask_plainqueue.runner import COMMITTED
from flask_plainqueue.runner import COMPLETED
from flask_plainqueue.runner import SETTLED
from flask_plainqueue.tally import Counts
from flask_plainqueue.tally import Tally

UTC = datetime.timezone.utc
T0 = datetime.datetime(2030, 5, 6, 7, 8, 9, 123, tzinfo=UTC)


def _counts(succeeded: int = 0, failed: int = 0, seconds: float = 0.0) -> Counts:
    counts = Counts()
    counts.succeeded, counts.failed, counts.seconds = succeeded, failed, seconds
    return counts


def test_batches_of_one_minute_add_up() -> None:
    pending = Tally()
    pending.add(T0, "a", _counts(2, 1, 0.5))
    pending.add(T0 + datetime.timedelta(seconds=40), "a", _counts(3, 0, 0.25))
    pending.add(T0 + datetime.timedelta(seconds=60), "a", _counts(1))
    pending.add(T0, "b", _counts())  # nothing finished: nothing kept
    taken = pending.take()
    minute = T0.replace(second=0, microsecond=0)
    assert sorted(taken) == [(minute, "a"), (minute.replace(minute=9), "a")]
    first = taken[(minute, "a")]
    assert (first.succeeded, first.failed, first.seconds) == (5, 1, 0.75)
    assert len(pending) == 0 and pending.take() == {}


def test_counts_from_many_threads_are_not_lost() -> None:
    pending = Tally()

    def add() -> None:
        for _ in range(2000):
            pending.add(T0, "a", _counts(1))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pending.take()[(T0.replace(second=0, microsecond=0), "a")].succeeded == 8000


def test_put_back_keeps_the_newest_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "MAX_PENDING", 3)
    pending = Tally()
    for m in range(5):
        pending.add(T0 + datetime.timedelta(minutes=m), "a", _counts(1))
    pending.put_back(pending.take())
    kept = sorted(minute.minute for minute, _ in pending.take())
    assert kept == [10, 11, 12]


def test_what_counts() -> None:
    counts = Counts()
    run_at = T0
    count(counts, COMPLETED, 1.0)
    count(counts, COMMITTED, 1.0)
    count(counts, Failure(1, 1, "e", run_at, dead=False), 2.0)
    count(counts, Failure(2, 1, "e", run_at, dead=True), 2.0)
    # A Retry request and an outcome dropped are not counted.
    count(counts, Failure(3, 1, "e", run_at, dead=False, counts=False), 5.0)
    count(counts, SETTLED, 5.0)
    assert (counts.succeeded, counts.failed, counts.dead) == (2, 2, 1)
    assert counts.seconds == 6.0
