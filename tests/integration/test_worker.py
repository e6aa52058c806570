"""The worker's behaviour through ``run_once``/``drain`` in the test thread, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
import typing as t

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from flask import current_app
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_plainqueue import current_task
from flask_plainqueue import Retry
from flask_plainqueue import signals

UTC = datetime.timezone.utc
pytestmark = pytest.mark.usefixtures("app_ctx")


def _rows(env: Env) -> list[t.Any]:
    env.db.session.rollback()
    return list(env.db.session.scalars(sa.select(env.queue.Task).order_by("id")))


@pytest.fixture
def contact_model(env: Env) -> t.Any:
    class Contact(env.db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "contact"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]
        confirmed: Mapped[bool] = mapped_column(default=False)

    env.db.create_all()
    return Contact


def test_success_deletes_the_row_and_runs_in_an_app_context(env: Env) -> None:
    seen: list[t.Any] = []

    @env.queue.task
    def job(data: t.Any) -> None:
        seen.append((data, current_app._get_current_object()))  # type: ignore[attr-defined]

    env.queue.perform(job, {"a": 1})
    assert env.queue.drain() == 1
    assert seen == [({"a": 1}, env.app)]
    assert _rows(env) == []


def test_each_task_gets_its_own_session(env: Env, contact_model: t.Any) -> None:
    # The sessions themselves, not their ids: a freed session's id may be reused.
    sessions: list[t.Any] = []

    @env.queue.task(batch_size=3)
    def register(data: str) -> None:
        sessions.append(env.db.session())
        env.db.session.add(contact_model(email=data))
        env.db.session.commit()

    env.queue.perform_many(register, ["a@x", "b@x", "c@x"])
    assert env.queue.drain() == 3
    assert len({id(session) for session in sessions}) == 3
    assert all(env.db.session() is not session for session in sessions)
    emails = env.db.session.scalars(sa.select(contact_model.email)).all()
    assert sorted(emails) == ["a@x", "b@x", "c@x"]


def test_a_batch_runs_concurrently(env: Env) -> None:
    barrier = threading.Barrier(5, timeout=30)

    @env.queue.task(batch_size=5)
    def meet(data: int) -> None:
        barrier.wait()  # breaks (and fails the task) unless all 5 run at once

    env.queue.perform_many(meet, list(range(5)))
    assert env.queue.worker(env.app).run_once() == 5
    assert _rows(env) == []


def test_async_tasks_of_a_batch_share_an_event_loop(env: Env) -> None:
    arrived: list[int] = []
    loops: set[int] = set()

    @env.queue.task(batch_size=4)
    async def fetch(data: int) -> None:
        loops.add(id(asyncio.get_running_loop()))
        assert current_app.name == env.app.name
        arrived.append(data)
        for _ in range(3000):  # all four must be in flight together
            if len(arrived) == 4:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the batch did not run concurrently")

    env.queue.perform_many(fetch, [1, 2, 3, 4])
    worker = env.queue.worker(env.app)
    try:
        assert worker.run_once() == 4
    finally:
        worker.close()
    assert sorted(arrived) == [1, 2, 3, 4]
    assert len(loops) == 1
    assert _rows(env) == []


def test_failures_are_recorded_retried_and_kept_dead(env: Env) -> None:
    failures: list[tuple[t.Any, str]] = []

    def report(data: t.Any, error: BaseException) -> None:
        failures.append((data, str(error)))

    @env.queue.task(max_retries=2, retry_interval=0, failure=report)
    def flaky(data: t.Any) -> None:
        raise ValueError(f"boom {data}")

    env.queue.perform(flaky, 7)
    assert env.queue.drain() == 3  # first run + max_retries
    assert failures == [(7, "boom 7")] * 3
    (row,) = _rows(env)
    assert row.status == "dead"
    assert row.failed_nr == 3
    assert row.failed_last is not None
    assert row.lease_owner is None
    assert "ValueError: boom 7" in row.failed_error
    assert "Traceback (most recent call last)" in row.failed_error
    assert env.queue.drain() == 0


def test_retry_waits_for_the_retry_interval(env: Env) -> None:
    @env.queue.task(name="flaky", max_retries=5, retry_interval=10)
    def flaky(data: t.Any) -> None:
        raise RuntimeError("nope")

    env.queue.perform(flaky)
    start = datetime.datetime.now(UTC)
    worker = env.queue.worker(env.app)
    assert worker.run_once(start) == 1
    assert worker.run_once(start + datetime.timedelta(seconds=9)) == 0
    assert worker.run_once(start + datetime.timedelta(seconds=11)) == 1
    (row,) = _rows(env)
    assert row.failed_nr == 2 and row.status == "queued"


def test_a_pinned_now_in_any_timezone_is_stored_in_utc(env: Env) -> None:
    """Times the worker writes from a ``now`` given in another timezone are the
    same instants, read back in UTC, on every database (SQLite keeps no offset,
    so the queue writes UTC only)."""

    @env.queue.task(name="flaky", max_retries=5, retry_interval=10)
    def flaky(data: t.Any) -> None:
        raise RuntimeError("nope")

    @env.queue.periodic(every=datetime.timedelta(minutes=1), name="tick")
    def tick() -> None:
        pass

    task_id = env.queue.perform(flaky)
    west = datetime.timezone(datetime.timedelta(hours=-5))
    now = datetime.datetime.now(UTC).astimezone(west)
    worker = env.queue.worker(env.app)
    assert worker.run_once(now) == 1
    info = env.queue.get(task_id)
    assert info is not None
    assert info.failed_last == now and info.run_at == now + datetime.timedelta(
        seconds=10
    )
    assert info.run_at.utcoffset() == datetime.timedelta(0)
    assert worker.run_once(now + datetime.timedelta(seconds=9)) == 0
    assert worker.run_once(now + datetime.timedelta(seconds=11)) == 1
    # A periodic tick enqueued at a pinned time is due then.
    later = now + datetime.timedelta(minutes=5)
    worker.scheduler.tick(later)  # the first look only records the tick
    worker.scheduler.tick(later + datetime.timedelta(minutes=1))
    (ticked,) = env.queue.tasks(name="tick")
    assert ticked.created == later + datetime.timedelta(minutes=1)
    assert ticked.created.utcoffset() == datetime.timedelta(0)
    env.queue.forget_worker(worker)


def test_retry_backoff_grows_the_wait(env: Env) -> None:
    @env.queue.task(name="slowly", retry_interval=10, retry_backoff=3)
    def slowly(data: t.Any) -> None:
        raise RuntimeError("nope")

    env.queue.perform(slowly)
    worker = env.queue.worker(env.app)
    now = datetime.datetime.now(UTC)
    assert worker.run_once(now) == 1  # next after 10 s
    now += datetime.timedelta(seconds=11)
    assert worker.run_once(now) == 1  # next after 30 s
    assert worker.run_once(now + datetime.timedelta(seconds=29)) == 0
    assert worker.run_once(now + datetime.timedelta(seconds=31)) == 1


def test_retry_on_limits_what_is_retried(env: Env) -> None:
    @env.queue.task(retry_interval=0, retry_on=(ConnectionError,))
    def picky(data: str) -> None:
        raise ConnectionError() if data == "net" else KeyError(data)

    env.queue.perform(picky, "net")
    env.queue.perform(picky, "key")
    worker = env.queue.worker(env.app)
    assert worker.run_once() == 1
    assert worker.run_once() == 1
    rows = {json.loads(r.data): r for r in _rows(env)}
    assert rows["net"].status == "queued" and rows["net"].failed_nr == 1
    assert rows["key"].status == "dead" and rows["key"].failed_nr == 1


def test_retry_exception_reschedules_without_counting(env: Env) -> None:
    runs: list[int] = []

    @env.queue.task(max_retries=0)
    def later(data: t.Any) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise Retry(delay=60)

    env.queue.perform(later)
    worker = env.queue.worker(env.app)
    now = datetime.datetime.now(UTC)
    assert worker.run_once(now) == 1
    (row,) = _rows(env)
    assert row.failed_nr == 0 and row.status == "queued"
    assert worker.run_once(now + datetime.timedelta(seconds=59)) == 0
    assert worker.run_once(now + datetime.timedelta(seconds=61)) == 1
    assert _rows(env) == []


def test_success_callback_commits_with_the_row_removal(
    env: Env, contact_model: t.Any
) -> None:
    def mark_sent(data: dict[str, int]) -> None:
        contact = env.db.session.get(contact_model, data["id"])
        assert contact is not None
        contact.confirmed = True

    @env.queue.task(success=mark_sent)
    def double_opt_in(data: dict[str, int]) -> None:
        pass

    env.db.session.add(contact_model(id=1, email="a@x"))
    env.db.session.commit()
    env.queue.perform(double_opt_in, {"id": 1})
    assert env.queue.drain() == 1
    env.db.session.expire_all()
    contact = env.db.session.get(contact_model, 1)
    assert contact is not None and contact.confirmed is True
    assert _rows(env) == []


@pytest.mark.parametrize("flush", [False, True], ids=["pending", "flushed"])
@pytest.mark.parametrize("callback", [True, False], ids=["callback", "no-callback"])
def test_leftover_session_work_is_rolled_back_before_success(
    env: Env, contact_model: t.Any, flush: bool, callback: bool
) -> None:
    """A task that adds to ``db.session`` without committing leaves nothing
    behind: its work is rolled back before the success callback runs and before
    the task is settled, so the callback's commit cannot write it."""
    seen: list[tuple[int, int]] = []

    def check(data: t.Any) -> None:
        session = env.db.session()
        # Neither pending in the session nor visible through it.
        seen.append(
            (
                len(session.new),
                len(session.scalars(sa.select(contact_model)).all()),
            )
        )

    @env.queue.task(name="sloppy", success=check if callback else None, batch_size=2)
    def sloppy(data: str) -> None:
        env.db.session.add(contact_model(email=data))
        if flush:
            env.db.session.flush()

    env.queue.perform(sloppy, "one@x")
    assert env.queue.drain() == 1
    # A batch of two runs on the pool's threads.
    env.queue.perform_many(sloppy, ["two@x", "three@x"])
    assert env.queue.drain() == 2
    assert seen == ([(0, 0)] * 3 if callback else [])
    assert _rows(env) == []
    env.db.session.remove()
    with env.db.engine.connect() as conn:
        table = contact_model.__table__
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_raising_success_callback_rolls_back_and_is_logged(
    env: Env, contact_model: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    def half_done(data: t.Any) -> None:
        env.db.session.add(contact_model(email="written-then-rolled-back"))
        env.db.session.flush()
        raise RuntimeError("callback broke")

    @env.queue.task(success=half_done)
    def job(data: t.Any) -> None:
        pass

    task_id = env.queue.perform(job)
    with caplog.at_level(logging.ERROR, "flask_plainqueue"):
        assert env.queue.drain() == 1
    assert env.db.session.scalars(sa.select(contact_model)).all() == []
    # The task itself succeeded, so it is not run again.
    assert _rows(env) == []
    assert any(
        "success callback" in r.getMessage() and str(task_id) in r.getMessage()
        for r in caplog.records
    )


def test_raising_failure_callback_is_logged_and_the_worker_goes_on(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(data: t.Any, error: BaseException) -> None:
        raise RuntimeError("failure callback broke")

    @env.queue.task(failure=broken, max_retries=0)
    def job(data: t.Any) -> None:
        raise ValueError("task broke")

    @env.queue.task
    def fine(data: t.Any) -> None:
        pass

    env.queue.perform(job)
    env.queue.perform(fine)
    with caplog.at_level(logging.ERROR, "flask_plainqueue"):
        assert env.queue.drain() == 2
    assert [r.status for r in _rows(env)] == ["dead"]
    assert any("failure callback" in r.getMessage() for r in caplog.records)


def test_unknown_task_names_are_left_alone_and_reported_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    @env.queue.task(name="known")
    def known(data: t.Any) -> None:
        pass

    table = env.queue.Task.__table__
    now = datetime.datetime.now(UTC)
    env.db.session.execute(
        sa.insert(table),
        [
            {"name": "from.a.newer.deploy", "data": "1", "created": now, "run_at": now}
            for _ in range(3)
        ],
    )
    env.db.session.commit()
    env.queue.perform(known)
    assert env.queue.drain() == 1
    rows = _rows(env)
    assert [(r.name, r.status, r.attempts) for r in rows] == [
        ("from.a.newer.deploy", "queued", 0)
    ] * 3
    worker = env.queue.worker(env.app)
    with caplog.at_level(logging.WARNING, "flask_plainqueue"):
        for _ in range(3):
            assert worker.scheduler.report_unknown_names() == ["from.a.newer.deploy"]
    env.queue.forget_worker(worker)
    warnings = [r for r in caplog.records if "from.a.newer.deploy" in r.getMessage()]
    assert len(warnings) == 1


def test_undecodable_data_is_marked_dead(env: Env) -> None:
    @env.queue.task(name="reads")
    def reads(data: t.Any) -> None:
        raise AssertionError("must not run")

    # Data is text on every database, so a hand-written row may hold anything.
    now = datetime.datetime.now(UTC)
    env.db.session.execute(
        sa.insert(env.queue.Task.__table__),
        {"name": "reads", "data": "{not json", "created": now, "run_at": now},
    )
    env.db.session.commit()
    assert env.queue.drain() == 1
    (row,) = _rows(env)
    assert row.status == "dead"
    assert "not valid JSON" in row.failed_error


def test_drain_counts_every_attempt(env: Env) -> None:
    @env.queue.task(batch_size=2)
    def ok(data: t.Any) -> None:
        pass

    @env.queue.task(max_retries=1, retry_interval=0)
    def bad(data: t.Any) -> None:
        raise ValueError

    env.queue.perform_many(ok, [1, 2, 3])
    env.queue.perform(bad)
    assert env.queue.drain() == 5


def test_a_long_task_extends_its_lease(database_uri: str, tmp_path: t.Any) -> None:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "i", PLAINQUEUE_LEASE_SECONDS=0.6
    )
    release = threading.Event()

    @queue.task(name="long")
    def long(data: t.Any) -> None:
        assert release.wait(60)

    with app.app_context():
        db.create_all()
        queue.perform(long)
        table = queue.Task.__table__
        claimed = threading.Event()
        result: list[int] = []

        def run() -> None:
            with app.app_context():
                worker = queue.worker(app)
                try:
                    result.append(worker.run_once())
                finally:
                    worker.close()
                    queue.forget_worker(worker)

        thread = threading.Thread(target=run)
        thread.start()
        first_run_at = None
        deadline = datetime.datetime.now(UTC) + datetime.timedelta(seconds=60)
        try:
            while datetime.datetime.now(UTC) < deadline:
                with db.engine.connect() as conn:
                    row = conn.execute(sa.select(table)).one()
                if row.lease_owner is not None:
                    claimed.set()
                    if first_run_at is None:
                        first_run_at = row.run_at
                    elif row.run_at > first_run_at:
                        break  # extended while running
                release.wait(0.05)
            assert claimed.is_set()
            assert first_run_at is not None and row.run_at > first_run_at
        finally:
            release.set()
            thread.join(60)
        assert result == [1]
        with db.engine.connect() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                == 0
            )
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.mark.parametrize("ends", ["succeeds", "fails"])
def test_an_outcome_whose_row_was_taken_meanwhile_is_dropped_with_a_warning(
    database_uri: str, tmp_path: t.Any, caplog: pytest.LogCaptureFixture, ends: str
) -> None:
    """A worker paused past its lease finds, when it writes its late outcome,
    that another worker took the row: the outcome is dropped, the row left
    as the other worker has it, and a warning says so (before, a success or
    a failure written with the next claim was dropped without a word)."""
    app, db, queue = create_test_app(
        database_uri, tmp_path / "i", PLAINQUEUE_LEASE_SECONDS=0.6
    )
    table = queue.Task.__table__
    other = "other:1:worker"

    @queue.task(name="taken", max_retries=3)
    def taken() -> None:
        # As another worker does when this one's lease ends (a pause).
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.id == current_task.id)
                .values(lease_owner=other, attempts=table.c.attempts + 1)
            )
        # Past a third of the lease: the outcome is written on its own.
        time.sleep(0.3)
        if ends == "fails":
            raise ValueError("the late attempt fails")

    with app.app_context():
        db.create_all()
        try:
            task_id = queue.perform(taken)
            with caplog.at_level(logging.WARNING, "flask_plainqueue"):
                assert queue.drain() == 1
            with db.engine.connect() as conn:
                row = conn.execute(sa.select(table)).one()
            assert (row.id, row.lease_owner, row.attempts) == (task_id, other, 2)
            assert row.failed_nr == 0 and row.failed_error is None
            (warning,) = [
                r.getMessage()
                for r in caplog.records
                if "no longer this worker's" in r.getMessage()
            ]
            assert f"1 of 1 finished task(s) [{task_id}]" in warning
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_logging_one_line_per_start_and_finish_at_debug(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    @env.queue.task(name="logged")
    def logged(data: t.Any) -> None:
        pass

    quiet = env.queue.perform(logged)
    with caplog.at_level(logging.INFO, "flask_plainqueue"):
        env.queue.drain()
    # At INFO, the default level, a task that succeeds logs nothing.
    assert not [r for r in caplog.records if f"Task {quiet} " in r.getMessage()]
    task_id = env.queue.perform(logged)
    with caplog.at_level(logging.DEBUG, "flask_plainqueue"):
        env.queue.drain()
    lines = [
        r.getMessage() for r in caplog.records if r.name == "flask_plainqueue.worker"
    ]
    assert f"Task {task_id} (logged) started" in lines
    assert any(
        line.startswith(f"Task {task_id} (logged) succeeded in") for line in lines
    )
    record = next(r for r in caplog.records if "started" in r.getMessage())
    assert record.task_id == task_id  # type: ignore[attr-defined]


def test_signals_from_the_worker(env: Env) -> None:
    events: list[tuple[str, t.Any]] = []

    def receiver(name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, **kwargs: t.Any) -> None:
            events.append((name, kwargs["task"]))

        return receive

    @env.queue.task(name="sig", max_retries=0)
    def sig(data: bool) -> None:
        if data:
            raise ValueError

    receivers = {
        name: receiver(name)
        for name in [
            "task_enqueued",
            "task_started",
            "task_succeeded",
            "task_failed",
            "task_dead",
        ]
    }
    for name, fn in receivers.items():
        getattr(signals, name).connect(fn, env.app)
    try:
        env.queue.perform(sig, False)
        env.queue.drain()
        env.queue.perform(sig, True)
        env.queue.drain()
    finally:
        for name, fn in receivers.items():
            getattr(signals, name).disconnect(fn, env.app)
    assert [e for e, _ in events] == [
        "task_enqueued",
        "task_started",
        "task_succeeded",
        "task_enqueued",
        "task_started",
        "task_failed",
        "task_dead",
    ]


class TestEager:
    @pytest.fixture
    def eager(self, database_uri: str, tmp_path: t.Any) -> t.Iterator[Env]:
        app, db, queue = create_test_app(
            database_uri, tmp_path / "i", PLAINQUEUE_EAGER=True
        )
        with app.app_context():
            db.create_all()
            yield Env(app, db, queue)
            db.session.remove()
            db.drop_all()
            db.engine.dispose()

    def test_perform_runs_at_once_with_callbacks(self, eager: Env) -> None:
        seen: list[str] = []

        @eager.queue.task(success=lambda d: seen.append("success"))
        def job(data: str) -> None:
            seen.append(data)

        task_id = eager.queue.perform(job, "now")
        assert isinstance(task_id, int) and task_id > 0
        assert seen == ["now", "success"]
        assert _rows(eager) == []

    def test_commit_false_runs_after_commit_not_after_rollback(
        self, eager: Env
    ) -> None:
        seen: list[str] = []

        @eager.queue.task
        def job(data: str) -> None:
            seen.append(data)

        eager.queue.perform(job, "rolled back", commit=False)
        eager.db.session.rollback()
        eager.queue.perform(job, "committed", commit=False)
        assert seen == []
        eager.db.session.commit()
        assert seen == ["committed"]

    def test_failure_is_recorded_as_by_the_worker(self, eager: Env) -> None:
        @eager.queue.task(max_retries=0)
        def job(data: t.Any) -> None:
            raise ValueError("eager boom")

        eager.queue.perform(job)
        (row,) = _rows(eager)
        assert row.status == "dead"
        assert "eager boom" in row.failed_error
