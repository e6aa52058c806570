"""PostgreSQL's database clock, carried forward between reads with this
host's monotonic clock: read again when that clock stopped while the host
slept (Linux's and macOS's monotonic clocks do not count a suspend), not left
behind the database until the next periodic read."""

from __future__ import annotations

import contextlib
import datetime
import typing as t
from collections.abc import Iterator

import pytest

from flask_plainqueue import postgresql
from flask_plainqueue.postgresql import CLOCK_RETRY
from flask_plainqueue.postgresql import DatabaseClock

UTC = datetime.timezone.utc
T0 = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


class Host:
    """This host's clocks and a database server's, moved by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 2_000_000_000.0
        self.server = T0
        self.reads = 0
        self.attempts = 0
        self.down = False

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def run(self, seconds: float) -> None:
        """Time passes while the host runs (or a process is stopped)."""
        self.mono += seconds
        self.wall += seconds
        self.server += datetime.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """The host is suspended: its monotonic clock stands still."""
        self.wall += seconds
        self.server += datetime.timedelta(seconds=seconds)

    @contextlib.contextmanager
    def connect(self) -> Iterator[t.Any]:
        self.attempts += 1
        if self.down:
            raise OSError("the server cannot be reached")
        self.reads += 1
        yield self

    def execute(self, stmt: object) -> t.Any:
        return self

    def scalar_one(self) -> datetime.datetime:
        return self.server


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    host = Host()
    monkeypatch.setattr(postgresql, "time", host)
    return host


def test_the_clock_is_carried_forward_between_reads(host: Host) -> None:
    clock = DatabaseClock(host)
    assert clock() == T0
    host.run(100)
    assert clock() == T0 + datetime.timedelta(seconds=100)
    assert host.reads == 1


def test_a_suspended_host_reads_the_database_clock_again(host: Host) -> None:
    clock = DatabaseClock(host)
    assert clock() == T0
    host.sleep(600)
    # Not 600 s behind the database (its leases would be over when written,
    # its heartbeats 600 s old) until the next periodic read.
    assert clock() == T0 + datetime.timedelta(seconds=600)
    assert host.reads == 2
    host.run(1)
    assert clock() == T0 + datetime.timedelta(seconds=601)
    assert host.reads == 2


def test_a_clock_that_cannot_be_read_after_a_suspend_is_retried_later(
    host: Host,
) -> None:
    clock = DatabaseClock(host)
    clock()
    host.sleep(600)
    host.down = True
    # The last reading goes on, and the server is not asked on every call.
    assert clock() == T0
    assert clock() == T0
    assert host.attempts == 2
    host.down = False
    host.run(CLOCK_RETRY)
    assert clock() == T0 + datetime.timedelta(seconds=600 + CLOCK_RETRY)
    assert host.reads == 2
