"""Periodic ticks, priorities, delays, unique tasks, timeouts, atomic tasks and
retention on real databases (issue: scheduling and task control). Schedules
alone are in ``tests/unit/test_schedules.py``; the same features across
processes in ``tests/processes/test_scheduling_processes.py``."""

from __future__ import annotations

import datetime
import threading
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from helpers import wait_for
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import TaskState
from flask_plainqueue.clock import as_utc

UTC = datetime.timezone.utc


def _rows(env: Env) -> list[t.Any]:
    env.db.session.rollback()
    return list(env.db.session.scalars(sa.select(env.queue.Task).order_by("id")))


def _at(hour: int, minute: int, second: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


# -- periodic ticks in process ---------------------------------------------------


@pytest.mark.usefixtures("app_ctx")
def test_a_tick_is_enqueued_once_across_workers(env: Env) -> None:
    runs: list[int] = []

    @env.queue.periodic(every=datetime.timedelta(minutes=1), name="minutely")
    def minutely() -> None:
        runs.append(1)

    env.db.create_all()
    workers = [env.queue.worker(env.app) for _ in range(3)]
    try:
        now = _at(12, 0, 30)
        for w in workers:
            # The seconds until the next tick: the scheduler thread's wait.
            assert w.scheduler.tick(now) == pytest.approx(30)
        # A new schedule waits for its next tick.
        assert _rows(env) == []
        now = _at(12, 1, 2)
        for w in workers:
            assert w.scheduler.tick(now) == pytest.approx(58)
        (row,) = _rows(env)
        assert row.name == "minutely"
        assert row.unique_key == "tick:2026-03-01T12:01:00+00:00"
        assert workers[0].run_once(now) == 1
        assert runs == [1]
        # Several missed ticks run once, not once per tick.
        now = _at(12, 9, 2)
        for w in workers:
            w.scheduler.tick(now)
        assert len(_rows(env)) == 1
    finally:
        for w in workers:
            w.close()
            env.queue.forget_worker(w)


@pytest.mark.usefixtures("app_ctx")
def test_catch_up_false_skips_stale_ticks(env: Env) -> None:
    @env.queue.periodic(cron="0 * * * *", name="hourly", catch_up=False)
    def hourly() -> None:
        pass

    env.db.create_all()
    worker = env.queue.worker(env.app)
    try:
        worker.scheduler.tick(_at(12, 30))
        # The 15:00 tick is half an hour old.
        worker.scheduler.tick(_at(15, 30))
        assert _rows(env) == []
        worker.scheduler.tick(_at(16, 0, 1))
        assert len(_rows(env)) == 1
    finally:
        worker.close()
        env.queue.forget_worker(worker)


def test_a_tick_fires_on_time_while_a_long_task_runs(
    database_uri: str, tmp_path: Path
) -> None:
    """Ticks come from the worker's scheduler thread, so a task that keeps the
    worker's only claim loop busy does not hold them back."""
    app, db, queue = create_test_app(
        database_uri, tmp_path / "i", PLAINQUEUE_CONCURRENCY=1
    )
    started = threading.Event()
    release = threading.Event()

    @queue.periodic(every=datetime.timedelta(seconds=1), name="every_second")
    def every_second() -> None:
        pass

    @queue.task(name="long")
    def long(data: t.Any) -> None:
        started.set()
        release.wait(60)

    with app.app_context():
        db.create_all()
        queue.perform(long)
    thread = queue.start_worker(app, force=True)
    try:
        assert thread.worker.concurrency == 1
        assert started.wait(30)
        with app.app_context():
            # The first tick the scheduler sees is only recorded; the two after
            # it are enqueued, each on time, while "long" still runs.
            wait_for(
                lambda: queue.count(name="every_second") >= 2,
                timeout=30,
                message="two ticks enqueued while the long task runs",
            )
            assert queue.count(name="long", state=TaskState.RUNNING) == 1
            ticks = queue.tasks(name="every_second")
            assert not release.is_set()
        assert len(ticks) >= 2
        for info in ticks:
            assert info.unique_key is not None
            tick = datetime.datetime.fromisoformat(
                info.unique_key.removeprefix("tick:")
            )
            late = (as_utc(info.created) - tick).total_seconds()
            # Enqueued at its tick, not when the claim loop is free again.
            assert 0 <= late < 2.0, (info, late)
            assert info.state in (TaskState.PENDING, TaskState.SCHEDULED)
    finally:
        release.set()
        assert queue.stop_worker(app, timeout=10)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


# -- delays, priorities, unique keys ------------------------------------------------


@pytest.mark.usefixtures("app_ctx")
def test_priorities_are_honoured_within_a_batch(env: Env) -> None:
    order: list[int] = []
    lock = threading.Lock()

    @env.queue.task(name="ranked", batch_size=3)
    def ranked(data: int) -> None:
        with lock:
            order.append(data)

    env.queue.perform(ranked, 0)
    env.queue.perform(ranked, 1)
    env.queue.perform(ranked, 5, priority=5)
    env.queue.perform(ranked, 9, priority=9)
    worker = env.queue.worker(env.app)
    try:
        assert worker.run_once() == 3
    finally:
        worker.close()
        env.queue.forget_worker(worker)
    assert sorted(order) == [0, 5, 9]  # the lowest-priority newest waits
    assert [r.priority for r in _rows(env)] == [0]


def test_delay_is_honoured_by_a_running_worker(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(
        sqlite_uri, tmp_path / "i", PLAINQUEUE_POLL_INTERVAL=0.2
    )
    ran_at: list[datetime.datetime] = []
    done = threading.Event()

    @queue.task(name="later")
    def later(data: t.Any) -> None:
        ran_at.append(datetime.datetime.now(UTC))
        done.set()

    with app.app_context():
        db.create_all()
        due = datetime.datetime.now(UTC) + datetime.timedelta(seconds=1)
        queue.perform(later, run_at=due)
        thread = queue.start_worker(app, force=True)
        try:
            assert done.wait(60)
        finally:
            assert queue.stop_worker(app, timeout=10)
        assert not thread.is_alive()
        assert ran_at[0] >= due
        db.session.remove()
        db.engine.dispose()


@pytest.mark.usefixtures("app_ctx")
def test_dead_unique_task_does_not_block_a_new_one(env: Env) -> None:
    @env.queue.task(name="once", max_retries=0)
    def once(data: t.Any) -> None:
        raise ValueError

    first = env.queue.perform(once, unique_key="k")
    assert first.new
    env.queue.drain()
    assert [r.status for r in _rows(env)] == ["dead"]
    second = env.queue.perform(once, unique_key="k")
    assert second.new
    assert second != first


# -- timeouts ------------------------------------------------------------------


def test_a_sync_task_past_its_timeout_fails_and_the_worker_goes_on(
    database_uri: str, tmp_path: Path
) -> None:
    app, db, queue = create_test_app(database_uri, tmp_path / "i")
    release = threading.Event()
    finished = threading.Event()
    runs: list[str] = []

    @queue.task(name="stuck", timeout=0.5, max_retries=1, retry_interval=0)
    def stuck(data: t.Any) -> None:
        runs.append("stuck")
        release.wait(60)
        finished.set()

    @queue.task(name="quick")
    def quick(data: t.Any) -> None:
        runs.append("quick")

    with app.app_context():
        db.create_all()
        queue.perform(stuck)
        worker = queue.worker(app)
        try:
            assert worker.run_once() == 1
            (row,) = db.session.scalars(sa.select(queue.Task)).all()
            assert row.failed_error is not None
            assert "TimeoutError" in row.failed_error and "0.5s" in row.failed_error
            assert row.failed_nr == 1 and row.status == "queued"
            assert row.lease_owner is None
            queue.perform(quick)
            # The retry runs too (and times out, so the task is dead); the other
            # task is not held up by the stuck threads.
            assert worker.drain() == 2
            db.session.rollback()
            rows = db.session.scalars(sa.select(queue.Task)).all()
            assert [(r.name, r.status, r.failed_nr) for r in rows] == [
                ("stuck", "dead", 2)
            ]
            assert runs.count("quick") == 1
            release.set()
            assert finished.wait(60)
        finally:
            release.set()
            worker.close()
            queue.forget_worker(worker)
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.mark.usefixtures("app_ctx")
def test_an_async_task_past_its_timeout_is_cancelled(env: Env) -> None:
    import asyncio

    cancelled = threading.Event()

    @env.queue.task(name="slow_async", timeout=0.3, max_retries=0)
    async def slow_async(data: t.Any) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    env.queue.perform(slow_async)
    worker = env.queue.worker(env.app)
    try:
        assert worker.run_once() == 1
    finally:
        worker.close()
        env.queue.forget_worker(worker)
    assert cancelled.wait(30)
    (row,) = _rows(env)
    assert row.status == "dead" and "TimeoutError" in row.failed_error


# -- atomic tasks --------------------------------------------------------------


@pytest.fixture
def ledger(env: Env) -> t.Any:
    class Ledger(env.db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "ledger"
        id: Mapped[int] = mapped_column(primary_key=True)
        note: Mapped[str]

    with env.app.app_context():
        env.db.create_all()
    return Ledger


@pytest.mark.usefixtures("app_ctx")
def test_atomic_task_commits_its_writes_with_the_row_removal(
    env: Env, ledger: t.Any
) -> None:
    def confirm(data: t.Any) -> None:
        env.db.session.add(ledger(note="success callback"))

    @env.queue.task(name="move", atomic=True, success=confirm)
    def move(data: t.Any) -> None:
        env.db.session.add(ledger(note="task"))  # no commit: the worker commits

    env.queue.perform(move)
    assert env.queue.drain() == 1
    notes = env.db.session.scalars(sa.select(ledger.note).order_by(ledger.id)).all()
    assert notes == ["task", "success callback"]
    assert _rows(env) == []


@pytest.mark.usefixtures("app_ctx")
def test_atomic_task_that_fails_leaves_no_writes(env: Env, ledger: t.Any) -> None:
    @env.queue.task(name="half", atomic=True, max_retries=0)
    def half(data: t.Any) -> None:
        env.db.session.add(ledger(note="half"))
        env.db.session.flush()
        raise RuntimeError("broke mid-way")

    def broken(data: t.Any) -> None:
        raise RuntimeError("callback broke")

    @env.queue.task(name="cb", atomic=True, success=broken, max_retries=0)
    def cb(data: t.Any) -> None:
        env.db.session.add(ledger(note="cb"))

    env.queue.perform(half)
    env.queue.perform(cb)
    assert env.queue.drain() == 2
    assert env.db.session.scalars(sa.select(ledger)).all() == []
    assert [(r.name, r.status) for r in _rows(env)] == [
        ("half", "dead"),
        ("cb", "dead"),
    ]


# -- retention -----------------------------------------------------------------


@pytest.mark.usefixtures("app_ctx")
def test_prune_deletes_old_dead_tasks_only(env: Env) -> None:
    @env.queue.task(name="doomed", max_retries=0)
    def doomed(data: t.Any) -> None:
        raise ValueError

    for i in range(5):
        env.queue.perform(doomed, i)
    env.queue.drain()
    env.queue.perform(doomed, "waiting", delay=3600)
    table = env.queue.Task.__table__
    old = datetime.datetime.now(UTC) - datetime.timedelta(days=31)
    env.db.session.execute(
        sa.update(table)
        .where(table.c.data.in_(["0", "1", "2"]))
        .values(failed_last=old)
    )
    env.db.session.commit()
    assert env.queue.prune() == 3
    assert sorted(r.status for r in _rows(env)) == ["dead", "dead", "queued"]
    # Bounded batches: a prune of many rows still deletes them all.
    store = env.queue.store()
    env.db.session.execute(sa.update(table).values(failed_last=old))
    env.db.session.commit()
    assert store.delete_dead(before=datetime.datetime.now(UTC), batch=1) == 2
    assert [r.status for r in _rows(env)] == ["queued"]


def test_keep_failed_none_keeps_forever(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(sqlite_uri, tmp_path, PLAINQUEUE_KEEP_FAILED=None)
    with app.app_context():
        db.create_all()
        assert queue.prune() == 0
        db.engine.dispose()
