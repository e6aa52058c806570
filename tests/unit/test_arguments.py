"""Every task option, setting and data value is checked when it is given, with
an error that names it and what is allowed (the trust issue, items 2-8), so
nothing bad reaches a worker. No database here: the checks run before any."""

from __future__ import annotations

import datetime
import math
import typing as t

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_plainqueue import ConfigurationError
from flask_plainqueue import InvalidArgument
from flask_plainqueue import PlainQueue
from flask_plainqueue import PlainQueueError
from flask_plainqueue import Retry
from flask_plainqueue import TaskDataError
from flask_plainqueue.enqueue import encode
from flask_plainqueue.enqueue import MAX_DEPTH
from flask_plainqueue.validate import MAX_SECONDS

BAD_SECONDS = [math.nan, math.inf, -math.inf, -1, 1e12, MAX_SECONDS * 2, "3", True]


@pytest.fixture
def queue() -> PlainQueue:
    return PlainQueue()


def _noop(data: object = None) -> None:
    return None


# -- 2: a cron expression that can never match --------------------------------


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_never_matching_cron_is_refused_when_defined(
    queue: PlainQueue, cron: str
) -> None:
    pytest.importorskip("croniter")
    with pytest.raises(ConfigurationError, match="never"):
        queue.periodic(cron=cron)(_noop)
    assert queue.registry.names() == []


def test_rare_but_real_cron_is_accepted(queue: PlainQueue) -> None:
    pytest.importorskip("croniter")
    # 29 February: only in leap years, but it does match.
    definition = queue.periodic(cron="0 0 29 2 *", name="leap")(_noop)
    assert definition.schedule is not None


# -- 3: task names ------------------------------------------------------------


@pytest.mark.parametrize("name", [5, b"bytes", "", "x" * 256, 1.5])
def test_task_name_must_be_a_non_empty_str_that_fits(
    queue: PlainQueue, name: object
) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        queue.task(name=t.cast(str, name))(_noop)
    assert queue.registry.names() == []


# -- 4 and 6: option ranges, named in the error ---------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 2**63),
        ("batch_size", 0),
        ("batch_size", 1001),
        ("batch_size", 2.0),
        ("max_retries", -1),
        ("max_retries", 2**31),
        ("priority", 2**31),
        ("priority", -(2**31) - 1),
        ("priority", True),
        ("retry_backoff", 0.5),
        ("retry_backoff", math.nan),
        ("retry_jitter", -0.1),
        ("retry_jitter", math.inf),
        ("queue", ""),
        ("queue", "q" * 101),
        ("atomic", "yes"),
    ]
    + [
        (key, bad)
        for key in ("retry_interval", "retry_max_delay")
        for bad in BAD_SECONDS
    ]
    + [(key, bad) for key in ("timeout", "poll_interval") for bad in BAD_SECONDS],
)
def test_out_of_range_option_is_refused_and_named(
    queue: PlainQueue, option: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=option):
        queue.task(name="t", **t.cast(t.Any, {option: value}))(_noop)
    assert queue.registry.names() == []


def test_every_option_at_its_limits_is_accepted(queue: PlainQueue) -> None:
    definition = queue.task(
        name="limits",
        batch_size=1000,
        max_retries=2**31 - 1,
        priority=-(2**31),
        retry_interval=MAX_SECONDS,
        retry_max_delay=datetime.timedelta(days=365),
        retry_backoff=100,
        retry_jitter=10,
        timeout=0.001,
    )(_noop)
    assert definition.options.batch_size == 1000
    assert definition.options.retry_max_delay == 365 * 86400.0


# -- 5: Retry(delay=...) -----------------------------------------------------------


@pytest.mark.parametrize("delay", BAD_SECONDS)
def test_retry_delay_must_be_finite_and_in_range(delay: object) -> None:
    with pytest.raises(InvalidArgument, match=r"Retry\(delay"):
        Retry(delay=t.cast(float, delay))


def test_retry_delay_accepts_a_timedelta() -> None:
    assert Retry(datetime.timedelta(minutes=2)).delay == 120.0


# -- 7: retry_on and tz --------------------------------------------------------


def test_retry_on_accepts_a_single_class(queue: PlainQueue) -> None:
    definition = queue.task(name="t", retry_on=ValueError)(_noop)
    assert definition.options.retry_on == (ValueError,)


@pytest.mark.parametrize("retry_on", [ValueError(), "ValueError", [int], []])
def test_retry_on_must_be_exception_classes(
    queue: PlainQueue, retry_on: object
) -> None:
    with pytest.raises(ConfigurationError, match="retry_on"):
        queue.task(name="t", retry_on=t.cast(t.Any, retry_on))(_noop)


@pytest.mark.parametrize("tz", [5, "Not/AZone", ""])
def test_bad_tz_is_refused_by_name(queue: PlainQueue, tz: object) -> None:
    pytest.importorskip("croniter")
    with pytest.raises(ConfigurationError, match="tz"):
        queue.periodic(cron="* * * * *", tz=t.cast(str, tz))(_noop)


def test_every_must_be_at_least_a_second(queue: PlainQueue) -> None:
    with pytest.raises(ConfigurationError, match="every"):
        queue.periodic(every=datetime.timedelta(milliseconds=10))(_noop)


# -- 6: settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "PLAINQUEUE_LEASE_SECONDS",
        "PLAINQUEUE_SQLITE_BUSY_TIMEOUT",
        "PLAINQUEUE_KEEP_FAILED",
        "PLAINQUEUE_POLL_INTERVAL",
        "PLAINQUEUE_SHUTDOWN_GRACE",
    ],
)
@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 1e15, "ten"])
def test_out_of_range_setting_is_refused_at_init_app(
    key: str, value: object, tmp_path: t.Any
) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'q.db'}"
    app.config[key] = value
    db = SQLAlchemy(app)
    with pytest.raises(ConfigurationError, match=key):
        PlainQueue(app, db)
    assert "plainqueue" not in app.extensions


# -- 8: data -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({1: "a", "1": "b"}, "key"),
        ({"a": {2: 3}}, "key"),
        ("\ud800", "surrogate"),
        ({"k\udfff": 1}, "surrogate"),
        (["ok", "\udc80"], "surrogate"),
        (math.nan, "finite|NaN|JSON"),
        ({"a": object()}, "JSON"),
        ({"a": b"bytes"}, "JSON"),
    ],
)
def test_data_that_would_not_round_trip_is_refused(data: object, reason: str) -> None:
    with pytest.raises(TaskDataError, match=reason):
        encode("t", data)


def test_nesting_deeper_than_the_limit_is_a_task_data_error() -> None:
    deep: object = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(TaskDataError, match="deep"):
        encode("t", deep)
    very_deep: object = {}
    for _ in range(100_000):
        very_deep = {"a": very_deep}
    with pytest.raises(TaskDataError):
        encode("t", very_deep)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    deep: object = "leaf"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert encode("t", deep).startswith("[[")


def test_every_refusal_is_a_plainqueue_error_and_the_builtin_kind() -> None:
    # Code that catches TypeError/ValueError, as for json.dumps, still works.
    assert issubclass(InvalidArgument, PlainQueueError)
    assert issubclass(InvalidArgument, TypeError)
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(TaskDataError, TypeError)
