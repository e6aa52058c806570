"""The history of finished attempts: counted in memory per task name and
minute, flushed to the stats table (by ``drain``, the scheduler thread, and a
worker's stop), read by ``queue.stats()``, pruned by the housekeeping, on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import json
import logging
import typing as t

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env

from flask_plainqueue import history
from flask_plainqueue import InvalidArgument
from flask_plainqueue import Retry
from flask_plainqueue import Stats
from flask_plainqueue import StatsCounts
from flask_plainqueue.history import MinuteRow
from flask_plainqueue.scheduler import STATS_FLUSH_INTERVAL
from flask_plainqueue.tally import Counts

UTC = datetime.timezone.utc
pytestmark = pytest.mark.usefixtures("app_ctx")


def _define(env: Env) -> None:
    @env.queue.task(name="ok")
    def ok(data: t.Any) -> None:
        pass

    @env.queue.task(name="flaky", max_retries=1, retry_interval=0)
    def flaky(data: t.Any) -> None:
        raise ValueError("no")

    @env.queue.task(name="later")
    def later(data: t.Any) -> None:
        raise Retry(delay=3600)


def _rows(env: Env) -> list[t.Any]:
    table = env.queue.store().tables.stats
    with env.queue.store().read() as conn:
        return list(conn.execute(sa.select(table).order_by("minute", "name")))


def test_drain_counts_and_writes_outcomes(env: Env) -> None:
    _define(env)
    for i in range(3):
        env.queue.perform("ok", i)
    env.queue.perform("flaky", None)
    env.queue.perform("later", None)
    # flaky: fails, is retried at once, fails again and is dead; later asks
    # to be retried, which is neither a success nor a failure.
    assert env.queue.drain() == 6
    stats = env.queue.stats()
    assert isinstance(stats, Stats)
    by_name = {c.name: c for c in stats.tasks}
    assert set(by_name) == {"ok", "flaky"}
    assert (by_name["ok"].succeeded, by_name["ok"].failed) == (3, 0)
    flaky = by_name["flaky"]
    assert (flaky.succeeded, flaky.failed, flaky.dead) == (0, 2, 1)
    total = stats.total
    assert (total.succeeded, total.failed, total.dead, total.finished) == (3, 2, 1, 5)
    assert total.run_seconds > 0
    assert stats.rate(total) == pytest.approx(5 / stats.period_minutes)
    # Written at the end of the drain: the table has them, in one minute or
    # two (a drain that crosses a minute's end).
    assert sum(row.succeeded for row in _rows(env)) == 3
    assert env.queue.stats(name="ok").total.succeeded == 3
    assert env.queue.stats(name="flaky").total.succeeded == 0


def test_counts_of_two_workers_add_up_in_one_minute(env: Env) -> None:
    store = env.queue.store()
    minute = datetime.datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    history.add(store, [MinuteRow(minute, "a", 2, 1, 0, 1.5)])
    history.add(
        store,
        [MinuteRow(minute, "a", 3, 2, 1, 0.5), MinuteRow(minute, "b", 1, 0, 0, 0.25)],
    )
    rows = history.read(store, minute)
    assert rows == [
        MinuteRow(minute, "a", 5, 3, 1, 2.0),
        MinuteRow(minute, "b", 1, 0, 0, 0.25),
    ]
    assert history.read(store, minute, "b") == [rows[1]]
    assert history.read(store, minute + datetime.timedelta(minutes=1)) == []


def test_two_workers_flush_into_the_same_rows(env: Env) -> None:
    _define(env)
    first, second = env.queue.worker(), env.queue.worker()
    when = datetime.datetime.now(UTC)
    for worker, n in ((first, 2), (second, 3)):
        counts = Counts()
        counts.succeeded, counts.seconds = n, 0.5 * n
        worker.tally.add(when, "ok", counts)
    assert first.scheduler.flush_stats() == 1
    assert second.scheduler.flush_stats() == 1
    assert first.scheduler.flush_stats() == 0  # nothing new
    rows = _rows(env)
    assert len(rows) == 1
    assert (rows[0].succeeded, rows[0].run_seconds) == (5, 2.5)


def test_scheduler_flushes_every_interval(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _define(env)
    worker = env.queue.worker()
    mono = [1000.0]
    monkeypatch.setattr("flask_plainqueue.scheduler.time.monotonic", lambda: mono[0])
    worker.scheduler._next_flush = mono[0] + STATS_FLUSH_INTERVAL
    counts = Counts()
    counts.failed = counts.dead = 1
    worker.tally.add(datetime.datetime.now(UTC), "flaky", counts)
    wait = worker.scheduler.step()
    assert 0 < wait <= STATS_FLUSH_INTERVAL
    assert _rows(env) == []  # not yet due
    mono[0] += STATS_FLUSH_INTERVAL
    worker.scheduler.step()
    assert [(r.name, r.failed, r.dead) for r in _rows(env)] == [("flaky", 1, 1)]
    assert len(worker.tally) == 0


def test_flushes_failing_for_a_while_log_one_traceback_and_one_recovery(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A database away for a while fails a flush every 10 s: the counts are
    kept for the next flush; the first failure is logged with its traceback,
    the next ones (within a minute) only at DEBUG, and the recovery once.
    (Each failed flush logged a traceback.)"""
    _define(env)
    worker = env.queue.worker()
    counts = Counts()
    counts.succeeded = 2
    worker.tally.add(datetime.datetime.now(UTC), "ok", counts)

    def broken(*args: t.Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is down"))

    caplog.set_level(logging.INFO, logger="flask_plainqueue")
    monkeypatch.setattr("flask_plainqueue.tally.history.add", broken)
    for _ in range(5):
        assert worker.scheduler.flush_stats() == 0
        assert len(worker.tally) == 1  # the counts are kept for the next one
    monkeypatch.undo()
    assert worker.scheduler.flush_stats() == 1
    assert worker.scheduler.flush_stats() == 0  # nothing new, nothing logged
    stats = [r for r in caplog.records if "task stats" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in stats] == [
        (logging.ERROR, True),
        (logging.WARNING, False),
    ]
    assert "works again" in stats[1].getMessage()
    assert [r.succeeded for r in _rows(env)] == [2]


def test_worker_run_flushes_on_stop(env: Env) -> None:
    _define(env)
    for i in range(4):
        env.queue.perform("ok", i)
    worker = env.queue.worker()
    # A --burst run stops when nothing is due; its final flush writes the
    # counts, long before the flush interval.
    worker.run(burst=True)
    assert sum(r.succeeded for r in _rows(env)) == 4


def test_housekeeping_prunes_old_stats(database_uri: str, tmp_path: t.Any) -> None:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_KEEP_STATS=3600
    )
    with app.app_context():
        db.create_all()
        try:
            store = queue.store()
            now = store.clock().replace(second=0, microsecond=0)
            rows = [
                MinuteRow(now - datetime.timedelta(minutes=m), name, 1, 0, 0, 0.1)
                for m in (0, 30, 59, 61, 120, 600)
                for name in ("a", "b")
            ]
            history.add(store, rows)
            worker = queue.worker()
            worker.scheduler.prune()
            left = history.read(store, now - datetime.timedelta(days=1))
            assert sorted({(now - r.minute).total_seconds() / 60 for r in left}) == [
                0,
                30,
                59,
            ]
            assert len(left) == 6
            # In batches: two minutes at a time still prunes everything.
            history.add(store, rows)
            assert history.prune(store, now, batch=2) == 10
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_keep_stats_none_keeps(database_uri: str, tmp_path: t.Any) -> None:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_KEEP_STATS=None
    )
    with app.app_context():
        db.create_all()
        try:
            store = queue.store()
            old = datetime.datetime(2001, 1, 1, tzinfo=UTC)
            history.add(store, [MinuteRow(old, "a", 1, 0, 0, 0.1)])
            queue.worker().scheduler.prune()
            assert len(history.read(store, old)) == 1
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_series_fills_empty_buckets(env: Env) -> None:
    store = env.queue.store()
    now = store.clock()
    minute = now.replace(second=0, microsecond=0)
    history.add(
        store,
        [
            MinuteRow(minute - datetime.timedelta(minutes=2), "a", 2, 1, 0, 1.0),
            MinuteRow(minute - datetime.timedelta(minutes=2), "b", 5, 0, 0, 1.0),
            MinuteRow(minute, "a", 1, 0, 0, 1.0),
        ],
    )
    stats = env.queue.stats(since=datetime.timedelta(minutes=4))
    series = stats.series()
    assert [c.finished for _, c in series][-3:] == [8, 0, 1]
    assert [c.finished for _, c in stats.series("a")][-3:] == [3, 0, 1]
    assert sum(c.failed for _, c in series) == 1
    assert stats.to_dict()["total"]["succeeded"] == 8
    assert StatsCounts("a", 1) + StatsCounts("a", 2) == StatsCounts("a", 3)


@pytest.mark.parametrize("since", [0, -1, "1h", float("inf")])
def test_stats_refuses_a_bad_since(env: Env, since: t.Any) -> None:
    with pytest.raises(InvalidArgument, match="since"):
        env.queue.stats(since=since)


def test_stats_needs_no_worker_to_have_run(env: Env) -> None:
    stats = env.queue.stats(since=60)
    assert stats.minutes == () and stats.total.finished == 0
    assert [c.finished for _, c in stats.series()] == [0, 0]


def test_success_callbacks_and_timeouts_are_counted(env: Env) -> None:
    @env.queue.task(name="called", success=lambda data: None)
    def called(data: t.Any) -> None:
        pass

    @env.queue.task(name="atomic", atomic=True)
    def atomic(data: t.Any) -> None:
        pass

    @env.queue.task(name="slow", timeout=0.2, max_retries=0)
    def slow(data: t.Any) -> None:
        import time

        time.sleep(0.6)

    for name in ("called", "atomic", "slow"):
        env.queue.perform(name, None)
    env.queue.drain()
    by_name = {c.name: c for c in env.queue.stats().tasks}
    assert by_name["called"].succeeded == 1
    assert by_name["atomic"].succeeded == 1
    slow_counts = by_name["slow"]
    assert (slow_counts.failed, slow_counts.dead) == (1, 1)
    # A timed-out attempt counts its timeout as its run time.
    assert slow_counts.run_seconds == pytest.approx(0.2)


def _cli(env: Env, *args: str) -> t.Any:
    return env.app.test_cli_runner().invoke(args=["queue", "stats", *args])


def _seed(env: Env) -> datetime.datetime:
    """Known counts in the last hour and one older row; returns the minute."""
    store = env.queue.store()
    minute = store.clock().replace(second=0, microsecond=0)
    history.add(
        store,
        [
            MinuteRow(minute - datetime.timedelta(minutes=5), "mail", 10, 2, 1, 3.0),
            MinuteRow(minute, "mail", 20, 0, 0, 3.0),
            MinuteRow(minute, "resize", 3, 3, 0, 12.0),
            MinuteRow(minute - datetime.timedelta(hours=3), "mail", 100, 0, 0, 1.0),
        ],
    )
    return minute


def test_cli_stats_prints_totals_per_task(env: Env) -> None:
    _seed(env)
    result = _cli(env, "--since", "1h")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Finished attempts since ")
    assert lines[1].split() == [
        "TASK",
        "SUCCEEDED",
        "FAILED",
        "DEAD",
        "RUN",
        "TIME",
        "MEAN",
        "PER",
        "MIN",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    period = env.queue.stats(since=3600).period_minutes
    assert rows["mail"] == ["30", "2", "1", "6.000s", "0.188s", f"{32 / period:.2f}"]
    assert rows["resize"][:5] == ["3", "3", "0", "12.000s", "2.000s"]
    assert rows["(total)"][:4] == ["33", "5", "1", "18.000s"]
    # The older row counts with a longer --since.
    longer = _cli(env, "--since", "4h", "--name", "mail")
    assert [line.split()[1] for line in longer.output.splitlines()[2:]] == [
        "130",
        "130",
    ]


def test_cli_stats_json_has_the_series(env: Env) -> None:
    minute = _seed(env)
    result = _cli(env, "--json", "--name", "mail")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"]["succeeded"] == 30 and data["total"]["dead"] == 1
    assert [t["name"] for t in data["tasks"]] == ["mail"]
    assert [(m["minute"], m["succeeded"]) for m in data["minutes"]] == [
        ((minute - datetime.timedelta(minutes=5)).isoformat(), 10),
        (minute.isoformat(), 20),
    ]
    assert data["total"]["per_minute"] == pytest.approx(
        32 / env.queue.stats(since=3600).period_minutes, abs=0.01
    )


def test_cli_stats_without_counts_and_with_a_bad_since(env: Env) -> None:
    empty = _cli(env, "--since", "10m")
    assert empty.exit_code == 0
    assert empty.output.startswith("No finished attempts since ")
    bad = _cli(env, "--since", "soon")
    assert bad.exit_code == 2 and "is not a duration" in bad.output
    zero = _cli(env, "--since", "0s")
    assert zero.exit_code != 0
    assert zero.output.count("Error:") == 1 and "since" in zero.output


def test_eager_mode_writes_its_counts(database_uri: str, tmp_path: t.Any) -> None:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_EAGER=True
    )

    @queue.task(name="now")
    def now(data: t.Any) -> None:
        if data == "bad":
            raise ValueError(data)

    with app.app_context():
        db.create_all()
        try:
            queue.perform_many("now", ["a", "b", "bad"])
            total = queue.stats().total
            assert (total.succeeded, total.failed) == (2, 1)
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_a_missing_stats_table_is_reported_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    _define(env)
    env.queue.store().tables.stats.drop(env.db.engine)
    env.queue.perform("ok", 1)
    worker = env.queue.worker()
    assert worker.drain() == 1
    env.queue.perform("ok", 2)
    assert worker.drain() == 1
    warnings = [r for r in caplog.records if "stats table" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    # Kept for when the table exists.
    assert len(worker.tally) >= 1
    env.queue.store().tables.stats.create(env.db.engine)
    assert worker.scheduler.flush_stats() >= 1
    assert env.queue.stats().total.succeeded == 2
