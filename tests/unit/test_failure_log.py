"""Repeating failures (a database away, a full disk) are logged with their
traceback once, then once a minute, and their recovery once: claims, lease
extensions, the stats flush, heartbeats and reads of the pauses all report
through :class:`FailureLog`."""

from __future__ import annotations

import logging

import pytest

from flask_plainqueue.failure_log import FAILURE_LOG_INTERVAL
from flask_plainqueue.failure_log import FailureLog

logger = logging.getLogger("flask_plainqueue.test_failure_log")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _log(clock: Clock) -> FailureLog:
    return FailureLog(
        logger,
        "w1",
        failed="Worker %s: writing failed; will retry",
        still="Worker %s: writing still fails after %.0fs: %s",
        works="Worker %s: writing works again after %.1fs of failures",
        clock=clock,
    )


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [
        (r.levelno, r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.levelno >= logging.INFO
    ]


def test_the_first_failure_with_its_traceback_then_once_a_minute_then_the_recovery(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=logger.name)
    log = _log(clock)
    error = OSError("disk is full")
    for _ in range(30):  # every 2 s for a minute
        log.failed(error)
        clock.now += 2
    log.failed(error)
    clock.now += 2.5
    log.succeeded()
    log.succeeded()
    assert _records(caplog) == [
        (logging.ERROR, "Worker w1: writing failed; will retry", True),
        (
            logging.ERROR,
            "Worker w1: writing still fails after 60s: disk is full",
            False,
        ),
        (
            logging.WARNING,
            "Worker w1: writing works again after 62.5s of failures",
            False,
        ),
    ]
    # Each attempt in between is at DEBUG, for whoever needs them.
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 29


def test_no_recovery_without_a_failure_and_a_new_outage_starts_over(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    log = _log(clock)
    log.succeeded()
    assert not log.failing
    log.failed(OSError("away"))
    assert log.failing
    clock.now += 1
    log.succeeded()
    clock.now += FAILURE_LOG_INTERVAL / 2
    log.failed(OSError("away again"))
    messages = [m for _, m, _ in _records(caplog)]
    assert messages == [
        "Worker w1: writing failed; will retry",
        "Worker w1: writing works again after 1.0s of failures",
        "Worker w1: writing failed; will retry",
    ]


def test_a_percent_sign_in_the_worker_id_is_no_format(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=logger.name)
    log = FailureLog(
        logger,
        "host%s:1:ab",
        failed="Worker %s: writing failed; will retry",
        still="Worker %s: still after %.0fs: %s",
        works="Worker %s: works after %.1fs",
        clock=clock,
    )
    log.failed(OSError("x"))
    assert (
        caplog.records[0].getMessage()
        == "Worker host%s:1:ab: writing failed; will retry"
    )
