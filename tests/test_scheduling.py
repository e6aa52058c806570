"""Delays, periodic tasks, unique tasks, priorities, timeouts, atomic tasks and
retention (issue: scheduling and task control)."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import ConfigurationError
from flask_plainqueue.schedules import Schedule

UTC = datetime.timezone.utc
APPS = Path(__file__).parent / "apps"


def _rows(env: Env) -> list[t.Any]:
    env.db.session.rollback()
    return list(env.db.session.scalars(sa.select(env.queue.Task).order_by("id")))


def _at(hour: int, minute: int, second: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


# -- schedules ---------------------------------------------------------------


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
    from flask_plainqueue import PlainQueue

    with pytest.raises(ConfigurationError, match=match):
        PlainQueue().periodic(**kwargs)


# -- periodic ticks in process ---------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.mark.usefixtures("app_ctx")
def test_a_tick_is_enqueued_once_across_workers(env: Env) -> None:
    runs: list[int] = []

    @env.queue.periodic(every=datetime.timedelta(minutes=1), name="minutely")
    def minutely() -> None:
        runs.append(1)

    env.db.create_all()
    clock = FakeClock(_at(12, 0, 30))
    workers = [env.queue.worker(env.app) for _ in range(3)]
    for w in workers:
        w.clock = clock
        w._schedule_ticks()
    # A new schedule waits for its next tick.
    assert _rows(env) == []
    clock.now = _at(12, 1, 2)
    for w in workers:
        w._schedule_ticks()
    (row,) = _rows(env)
    assert row.name == "minutely"
    assert row.unique_key == "tick:2026-03-01T12:01:00+00:00"
    assert workers[0].run_once(clock.now) == 1
    assert runs == [1]
    # Several missed ticks run once, not once per tick.
    clock.now = _at(12, 9, 2)
    for w in workers:
        w._next_tick = None
        w._schedule_ticks()
    assert len(_rows(env)) == 1


@pytest.mark.usefixtures("app_ctx")
def test_catch_up_false_skips_stale_ticks(env: Env) -> None:
    @env.queue.periodic(cron="0 * * * *", name="hourly", catch_up=False)
    def hourly() -> None:
        pass

    env.db.create_all()
    worker = env.queue.worker(env.app)
    clock = FakeClock(_at(12, 30))
    worker.clock = clock
    worker._schedule_ticks()
    clock.now = _at(15, 30)  # the 15:00 tick is half an hour old
    worker._next_tick = None
    worker._schedule_ticks()
    assert _rows(env) == []
    clock.now = _at(16, 0, 1)
    worker._schedule_ticks()
    assert len(_rows(env)) == 1


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
    assert worker.run_once() == 3
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


@pytest.mark.usefixtures("app_ctx")
def test_dead_unique_task_does_not_block_a_new_one(env: Env) -> None:
    @env.queue.task(name="once", max_retries=0)
    def once(data: t.Any) -> None:
        raise ValueError

    first = env.queue.perform(once, unique_key="k")
    env.queue.drain()
    assert [r.status for r in _rows(env)] == ["dead"]
    assert env.queue.perform(once, unique_key="k") != first


def test_unique_key_race_between_processes(sqlite_uri: str, tmp_path: Path) -> None:
    env = _proc_env(sqlite_uri)
    script = (
        "from schedapp import create_app, queue, unique_job\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    for i in range(200):\n"
        "        queue.perform(unique_job, i, unique_key=f'k{i % 20}')\n"
    )
    # Create the tables once, before the race.
    subprocess.run(
        [sys.executable, "-c", "from schedapp import create_app; create_app()"],
        env=env,
        check=True,
        timeout=120,
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    engine = sa.create_engine(sqlite_uri)
    with engine.connect() as conn:
        keys = (
            conn.execute(sa.text("SELECT unique_key FROM plainqueue_tasks ORDER BY id"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert sorted(keys) == sorted(f"k{i}" for i in range(20))


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
        assert [(r.name, r.status, r.failed_nr) for r in rows] == [("stuck", "dead", 2)]
        assert runs.count("quick") == 1
        release.set()
        assert finished.wait(60)
        worker.close()
        db.session.remove()
        db.drop_all()


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


def test_atomic_async_task_is_refused() -> None:
    from flask_plainqueue import PlainQueue

    with pytest.raises(ConfigurationError, match="atomic"):

        @PlainQueue().task(atomic=True)
        async def nope(data: t.Any) -> None: ...


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
    storage = env.queue._state(env.app).storage
    env.db.session.execute(sa.update(table).values(failed_last=old))
    env.db.session.commit()
    assert storage.prune(datetime.datetime.now(UTC), batch=1) == 2


def test_keep_failed_none_keeps_forever(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(sqlite_uri, tmp_path, PLAINQUEUE_KEEP_FAILED=None)
    with app.app_context():
        db.create_all()
        assert queue.prune() == 0


# -- processes -----------------------------------------------------------------


def _proc_env(uri: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASK_", "PLAINQUEUE_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]),
        SCHEDAPP_DATABASE_URI=uri,
        FLASK_APP="schedapp:create_app",
        **extra,
    )
    return env


def _work(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "queue", "work", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[bytes]:
    errs = []
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        errs.append(err)
    return errs


def _wait_for(predicate: t.Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_periodic_runs_once_per_tick_across_three_processes(
    sqlite_uri: str, tmp_path: Path
) -> None:
    env = _proc_env(sqlite_uri, PLAINQUEUE_POLL_INTERVAL="0.2")
    subprocess.run(
        [sys.executable, "-c", "from schedapp import create_app; create_app()"],
        env=env,
        check=True,
        timeout=120,
    )
    engine = sa.create_engine(sqlite_uri)
    procs = [_work(env) for _ in range(3)]
    try:
        # Wait until the schedule is registered, then count 6 seconds.
        def registered() -> bool:
            with engine.connect() as conn:
                return bool(
                    conn.execute(
                        sa.text("SELECT count(*) FROM plainqueue_tasks_periodic")
                    ).scalar()
                )

        assert _wait_for(registered)
        start = time.time()
        time.sleep(6)  # the schedule itself is the subject: 6 s of real ticks
        end = time.time()
    finally:
        errs = _stop(procs)
    with engine.connect() as conn:
        ats = conn.execute(sa.text("SELECT at FROM ticks ORDER BY at")).scalars().all()
    engine.dispose()
    within = [a for a in ats if start <= a <= end]
    assert 5 <= len(within) <= 7, (ats, start, end)
    gaps = [b - a for a, b in zip(ats, ats[1:], strict=False)]
    # Two runs for one tick would be milliseconds apart.
    assert min(gaps) > 0.5, gaps
    for err in errs:
        assert b"database is locked" not in err


@pytest.mark.slow
def test_atomic_task_killed_mid_way_leaves_nothing_and_runs_again(
    sqlite_uri: str, tmp_path: Path
) -> None:
    env = _proc_env(sqlite_uri, PLAINQUEUE_LEASE_SECONDS="2")
    started = tmp_path / "started"
    marker = tmp_path / "never"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from schedapp import create_app, queue, move_credit\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            f"    queue.perform(move_credit, {{'started': {str(started)!r}, 'wait_for': {str(marker)!r}}})\n",
        ],
        env=env,
        check=True,
        timeout=120,
    )
    first = _work(env)
    try:
        assert _wait_for(started.exists)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    engine = sa.create_engine(sqlite_uri)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM credits")).scalar() == 0
    second = _work(env)
    try:
        # The second run sees the started file, so it completes; it must wait for
        # the dead worker's lease to expire first.
        def done() -> bool:
            with engine.connect() as conn:
                return (
                    conn.execute(
                        sa.text("SELECT count(*) FROM plainqueue_tasks")
                    ).scalar()
                    == 0
                )

        assert _wait_for(done, 120)
    finally:
        _stop([second])
    with engine.connect() as conn:
        steps = (
            conn.execute(sa.text("SELECT step FROM credits ORDER BY id"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert steps == ["debit", "credit"]
