"""The trust issue's runtime items: a failed tick enqueue is retried and a
skipped tick is logged (item 15); ``start_worker`` from many threads starts
one worker, and the per-app runtime never keeps an app alive (item 19). On
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import gc
import logging
import threading
import typing as t
import weakref
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import create_test_app
from conftest import Env
from helpers import refusing_trigger
from helpers import wait_for
from helpers import worker_thread

from flask_plainqueue import TaskState
from flask_plainqueue.claims import ClaimedTask
from flask_plainqueue.claims import ClaimRequest
from flask_plainqueue.claims import Outcomes
from flask_plainqueue.scheduler import RETRY_MIN

UTC = datetime.timezone.utc


def _at(hour: int, minute: int, second: int = 0) -> datetime.datetime:
    return datetime.datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


def _tick_rows(env: Env) -> int:
    env.db.session.rollback()
    return int(
        env.db.session.scalar(sa.select(sa.func.count()).select_from(env.queue.Task))
        or 0
    )


@pytest.mark.usefixtures("app_ctx")
def test_failed_tick_enqueue_is_retried_soon(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @env.queue.periodic(every=datetime.timedelta(minutes=1), name="minutely")
    def minutely() -> None:
        pass

    worker = env.queue.worker(env.app)
    store = worker.scheduler.store
    try:
        worker.scheduler.tick(_at(12, 0, 30))
        real = store.enqueue_tick
        failures = iter([True])

        def flaky(*args: t.Any, **kwargs: t.Any) -> bool:
            if next(failures, False):
                raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O"))
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "enqueue_tick", flaky)
        with caplog.at_level(logging.ERROR):
            wait = worker.scheduler.tick(_at(12, 1, 2))
        # Tried again within seconds, not at the next tick a minute later.
        assert wait == pytest.approx(RETRY_MIN)
        assert _tick_rows(env) == 0
        assert "will try again" in caplog.text
        worker.scheduler.tick(_at(12, 1, 3))
        assert _tick_rows(env) == 1
    finally:
        worker.close()
        env.queue.forget_worker(worker)


@pytest.mark.usefixtures("app_ctx")
def test_a_skipped_tick_is_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    @env.queue.periodic(cron="0 * * * *", name="hourly", catch_up=False)
    def hourly() -> None:
        pass

    worker = env.queue.worker(env.app)
    try:
        worker.scheduler.tick(_at(12, 30))
        with caplog.at_level(logging.WARNING):
            worker.scheduler.tick(_at(15, 30))
        assert _tick_rows(env) == 0
        assert "is skipped" in caplog.text
        assert "hourly" in caplog.text
    finally:
        worker.close()
        env.queue.forget_worker(worker)


def test_start_worker_from_many_threads_starts_one_worker(
    database_uri: str, tmp_path: Path
) -> None:
    app, db, queue = create_test_app(database_uri, tmp_path / "instance")
    with app.app_context():
        db.create_all()
    barrier = threading.Barrier(8)
    started: list[t.Any] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait()
        thread = queue.start_worker(app, force=True)
        with lock:
            started.append(thread)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert len(started) == 8
        assert len({id(thread) for thread in started}) == 1
        assert queue.embedded_worker(app) is started[0]
        names = [th.name for th in threading.enumerate()]
        assert sum(name.startswith("plainqueue-worker") for name in names) <= 1
    finally:
        assert queue.stop_worker(app, timeout=10)
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_the_queue_keeps_no_app_alive(sqlite_uri: str, tmp_path: Path) -> None:
    app, db, queue = create_test_app(sqlite_uri, tmp_path / "instance")

    @queue.task(name="t")
    def task() -> None:
        pass

    with app.app_context():
        db.create_all()
        queue.perform(task)
        assert queue.drain() == 1
        db.engine.dispose()
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None


@pytest.mark.usefixtures("app_ctx")
def test_batches_keep_running_while_timeouts_replace_the_pool(env: Env) -> None:
    """Item 19: a timed-out batch replaces the task pool; a batch another claim
    loop starts at that moment runs on a live pool instead of being stranded on
    the one being shut down (which left it waiting for its lease)."""
    queue = env.queue
    done: list[int] = []
    lock = threading.Lock()

    @queue.task(name="stuck", batch_size=2, timeout=0.05, max_retries=0)
    def stuck() -> None:
        threading.Event().wait(0.5)

    @queue.task(name="quick", batch_size=2)
    def quick(data: int) -> None:
        with lock:
            done.append(data)

    for _ in range(6):
        queue.perform(stuck)
    queue.perform_many(quick, list(range(60)))
    worker = queue.worker(env.app, concurrency=2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(burst=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "a batch was stranded on a pool being shut down"
    assert errors == []
    assert sorted(done) == list(range(60))
    assert queue.count(name="stuck", state=TaskState.DEAD) == 6


@pytest.mark.usefixtures("app_ctx")
def test_claims_failing_past_a_lease_run_no_finished_task_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims fail (a full disk, a database away) for longer than a lease
    while each of a worker's two claim loops holds a finished task: once they
    work again, no claim hands back expired leases until both loops have
    written what they finished, so no task runs twice. (The first claim that
    worked handed back the other loop's task, whose lease had ended, took it
    and ran it a second time.)"""
    queue = env.queue
    runs: list[int] = []
    gate = threading.Event()

    @queue.task(name="gated")
    def gated(data: int) -> None:
        runs.append(data)
        gate.wait(60)

    queue.perform_many(gated, [1, 2])
    store = queue.store()
    real_claim = store.claim
    broken = threading.Event()
    waiting: set[int] = set()

    def claim(
        request: ClaimRequest, outcomes: Outcomes | None = None
    ) -> list[ClaimedTask]:
        if broken.is_set():
            if outcomes:
                waiting.update(task_id for task_id, _ in outcomes.completed)
            raise sa.exc.OperationalError("claim", {}, Exception("disk is full"))
        return real_claim(request, outcomes)

    monkeypatch.setattr(store, "claim", claim)
    worker = queue.worker(env.app, concurrency=2)
    real_clock = worker.clock
    ahead = [datetime.timedelta(0)]
    worker.clock = lambda: real_clock() + ahead[0]
    with worker_thread(queue, worker):
        # One task on each loop.
        wait_for(lambda: len(runs) == 2)
        broken.set()
        gate.set()
        wait_for(lambda: len(waiting) == 2)
        # Both tasks' leases end while their outcomes wait.
        ahead[0] = datetime.timedelta(
            seconds=env.app.config["PLAINQUEUE_LEASE_SECONDS"] + 5
        )
        broken.clear()
        wait_for(lambda: queue.count() == 0)
    assert sorted(runs) == [1, 2]


@pytest.mark.usefixtures("app_ctx")
def test_a_batch_ending_while_claims_fail_reports_no_recovery(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One claim loop runs a batch it claimed before claims began to fail
    while the other loop's claims fail: the batch's end is no recovery. The
    failure is logged once with its traceback, and the recovery once, when a
    claim works again. (A loop reported its claim as working once its batch
    ended: "claiming works again after 0.0s", then the failure again.)"""
    queue = env.queue
    gate = threading.Event()

    @queue.task(name="gated")
    def gated(data: int) -> None:
        gate.wait(60)

    first = queue.perform(gated, 1)
    store = queue.store()
    real_claim = store.claim
    broken = threading.Event()
    tried_after_batch = threading.Event()

    def claim(
        request: ClaimRequest, outcomes: Outcomes | None = None
    ) -> list[ClaimedTask]:
        if broken.is_set():
            if outcomes and (first, 1) in outcomes.completed:
                tried_after_batch.set()
            raise sa.exc.OperationalError("claim", {}, Exception("disk is full"))
        return real_claim(request, outcomes)

    monkeypatch.setattr(store, "claim", claim)
    caplog.set_level(logging.WARNING, logger="flask_plainqueue.worker")
    worker = queue.worker(env.app, concurrency=2)
    with worker_thread(queue, worker):
        wait_for(lambda: queue.count(state=TaskState.RUNNING) == 1)
        broken.set()
        queue.perform(gated, 2)  # wakes the idle loop, whose claim fails
        wait_for(lambda: "claiming failed" in caplog.text)
        gate.set()
        # The batch has ended and its loop's claim failed too.
        wait_for(tried_after_batch.is_set)
        failing = [r.getMessage() for r in caplog.records]
        broken.clear()
        wait_for(lambda: queue.count() == 0)
    assert [m for m in failing if "claiming" in m] == [
        f"Worker {worker.id}: claiming failed; will retry"
    ]
    recovered = [
        m
        for m in map(logging.LogRecord.getMessage, caplog.records)
        if "works again" in m
    ]
    assert len(recovered) == 1, recovered


@pytest.mark.usefixtures("app_ctx")
def test_a_timeout_that_cannot_be_written_at_once_is_written_with_the_next_claim(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync task runs past its timeout while writes fail: the timed-out
    attempt still counts. Its failure is kept and written with the loop's next
    claim, so the task ends dead (no retries left) long before its lease would
    end, and its body ran once. (The failure was dropped: the row stayed
    leased until the lease ended, then ran again without counting it.)"""
    queue = env.queue
    gate = threading.Event()
    runs: list[int] = []

    @queue.task(name="stuck", timeout=0.3, max_retries=0)
    def stuck(data: int) -> None:
        runs.append(data)
        gate.wait(60)

    store = queue.store()
    real_settle = store.settle
    refused: list[int] = []

    def settle(owner: str, outcomes: Outcomes, now: datetime.datetime) -> None:
        if outcomes.failed and not refused:
            refused.extend(f.id for f in outcomes.failed)
            raise sa.exc.OperationalError("settle", {}, Exception("disk is full"))
        real_settle(owner, outcomes, now)

    monkeypatch.setattr(store, "settle", settle)
    task_id = queue.perform(stuck, 1)
    worker = queue.worker(env.app)
    try:
        with worker_thread(queue, worker):

            def dead() -> bool:
                env.db.session.rollback()
                info = queue.get(task_id)
                return info is not None and info.state is TaskState.DEAD

            wait_for(dead, timeout=60)
    finally:
        gate.set()
    assert refused == [task_id]
    info = queue.get(task_id)
    assert info is not None
    assert info.failed_nr == 1
    assert info.error is not None and "TimeoutError" in info.error
    assert runs == [1]


@pytest.mark.usefixtures("app_ctx")
def test_lease_extensions_failing_for_a_while_log_one_traceback_and_one_recovery(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watchdog extends running tasks' leases every third of a lease;
    while the database is away each extension fails. The first failure is
    logged with its traceback, the recovery once. (Each one logged a
    traceback.)"""
    queue = env.queue

    @queue.task(name="held")
    def held() -> None: ...

    task_id = queue.perform(held)
    worker = queue.worker(env.app)
    (task,) = queue.store().claim(
        ClaimRequest(
            owner=worker.id,
            names=["held"],
            batch_sizes={"held": 1},
            now=worker.clock(),
            until=worker.clock() + datetime.timedelta(seconds=30),
        )
    )
    store = queue.store()
    real_extend = store.extend

    def extend(*args: t.Any) -> int:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("database is away"))

    caplog.set_level(logging.INFO, logger="flask_plainqueue")
    monkeypatch.setattr(store, "extend", extend)
    for _ in range(5):
        worker.leases.extend([task])
    monkeypatch.setattr(store, "extend", real_extend)
    worker.leases.extend([task])
    worker.leases.extend([task])
    lines = [r for r in caplog.records if "leases" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in lines] == [
        (logging.ERROR, True),
        (logging.WARNING, False),
    ]
    assert "works again" in lines[1].getMessage()
    info = queue.get(task_id)
    assert info is not None and info.lease_owner == worker.id
    queue.forget_worker(worker)


@pytest.mark.usefixtures("app_ctx")
def test_an_outcome_the_database_refuses_is_given_up_and_the_worker_goes_on(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses to record one task's outcome (here a trigger that
    refuses its row's deletion) while it takes every other write. Each claim
    writes the loop's finished tasks first, so every claim failed and the
    loop ran nothing more, for good. After a few failed claims the loop writes
    each outcome on its own, gives up the refused one (logged) and goes on:
    the tasks after it run, and the refused task's row stays leased, to run
    again when its lease ends."""
    queue = env.queue
    ran: list[int] = []

    @queue.task(name="plain")
    def plain(data: int) -> None:
        ran.append(data)

    refused = queue.perform(plain, 0)
    drop = refusing_trigger(
        env.db.session, queue.store().table.name, "DELETE", when=f"OLD.id = {refused}"
    )
    try:
        # One claim loop: the one that holds the refused outcome.
        worker = queue.worker(env.app, concurrency=1)
        with worker_thread(queue, worker):
            wait_for(lambda: ran == [0])
            queue.perform_many(plain, [1, 2, 3])

            def rest_done() -> bool:
                env.db.session.rollback()
                return sorted(ran) == [0, 1, 2, 3] and queue.count() == 1

            wait_for(rest_done, timeout=60)
            info = queue.get(refused)
            assert info is not None and info.lease_owner == worker.id
    finally:
        drop()
    given_up = [
        r.getMessage()
        for r in caplog.records
        if "refuses to record the outcome" in r.getMessage()
    ]
    assert len(given_up) == 1, given_up
    assert f"task {refused}" in given_up[0]
